"""A Python client of the HTTP API (httpx), typed with the API's own wire models.

    from orchestrator.client import Client

    with Client("http://127.0.0.1:8000", token="...") as api:
        run = api.submit("customer_order", {"order_id": "o-1", ...},
                         idempotency_key="order-o-1")
        for event in api.events(run.run_id):
            print(event.kind, event.step, event.status)
        print(api.run(run.run_id).status)

Every refusal of the API raises :class:`~orchestrator.errors.ApiError` with the status,
the machine-readable code, the message and the fix from the API's error body.  The client
imports no server code (FastAPI, Celery): only :mod:`orchestrator.api.models`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from orchestrator.api.models import (
    API_PREFIX,
    IDEMPOTENCY_HEADER,
    ErrorBody,
    RunEvent,
    RunOut,
    RunPage,
    WireModel,
    WorkflowDetail,
    WorkflowList,
)
from orchestrator.core.states import RunStatus
from orchestrator.errors import ApiError

MAX_SERVER_WAIT_S = 60.0

M = TypeVar("M", bound=WireModel)


class Client:
    """A synchronous client of one API server, authenticated with one bearer token."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        """Args:
            base_url: the server, e.g. ``http://127.0.0.1:8000``.
            token: a bearer token from the server's ``ORCH_API_TOKENS``.
            timeout_s: timeout of one call (a ``wait`` on submit is added to it).
            transport: an httpx transport (tests, custom TLS); default httpx's.
        """
        self.timeout_s = timeout_s
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s,
                                  headers={"Authorization": f"Bearer {token}"},
                                  transport=transport)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- runs ------------------------------------------------------------------------------

    def submit(self, workflow: str, run_input: Any = None, *,
               idempotency_key: str | None = None, callback_url: str | None = None,
               wait_s: float | None = None, priority: str | None = None) -> RunOut:
        """Start a run of ``workflow``.

        Args:
            workflow: the workflow's name.
            run_input: the run input (JSON data); None sends an empty body (``{}``).
            idempotency_key: makes the call safe to repeat: the same key and request give
                the same run within the server's idempotency window.
            callback_url: an http(s) URL the server POSTs the run to when it ends.
            wait_s: let the server wait up to this long (at most 60 s) for the run to end.
            priority: ``high``, ``normal`` (the server's default) or ``low``: the band of
                queues its steps go to.

        Returns:
            The run as the server answered: ended if it ended within ``wait_s``.

        Raises:
            ApiError: e.g. 404 ``workflow_not_found``, 422 ``input_invalid``, 409
                ``idempotency_conflict``.
        """
        params: dict[str, str] = {}
        if wait_s:
            params["wait"] = f"{min(wait_s, MAX_SERVER_WAIT_S):g}"
        if callback_url is not None:
            params["callback_url"] = callback_url
        if priority is not None:
            params["priority"] = priority
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        content = b"" if run_input is None else json.dumps(run_input).encode()
        timeout = self.timeout_s + (float(params["wait"]) if "wait" in params else 0.0)
        resp = self._call("POST", f"{API_PREFIX}/workflows/{_seg(workflow)}/runs",
                          params=params, headers=headers, content=content, timeout=timeout)
        return _parse(RunOut, resp)

    def submit_and_wait(self, workflow: str, run_input: Any = None, *,
                        timeout_s: float = 300.0, idempotency_key: str | None = None,
                        callback_url: str | None = None) -> RunOut:
        """Start a run and return it once it has ended.

        The server waits first (up to 60 s); a longer run is then followed through its
        event stream.

        Raises:
            ApiError: as :meth:`submit`.
            TimeoutError: the run did not end within ``timeout_s``.
        """
        start = time.monotonic()
        run = self.submit(workflow, run_input, idempotency_key=idempotency_key,
                          callback_url=callback_url, wait_s=min(timeout_s, MAX_SERVER_WAIT_S))
        if run.ended:
            return run
        return self.wait(run.run_id, timeout_s - (time.monotonic() - start))

    def wait(self, run_id: str, timeout_s: float = 300.0) -> RunOut:
        """Follow the run's events until it ends; return the ended run.

        Args:
            run_id: the run.
            timeout_s: how long to follow (checked between events, so it may be exceeded
                by up to one silence of ``timeout_s``, and at most 15 s past a heartbeat).

        Raises:
            ApiError: e.g. 404 ``run_not_found``.
            TimeoutError: the run did not end in time.
        """
        if timeout_s > 0:
            deadline = time.monotonic() + timeout_s
            try:
                for _ in self.events(run_id, timeout_s=timeout_s):
                    if time.monotonic() > deadline:
                        break
            except httpx.TimeoutException:
                pass
        run = self.run(run_id)
        if not run.ended:
            raise TimeoutError(f"run {run_id} did not end within {timeout_s:g} s "
                               f"(status {run.status.value})")
        return run

    def run(self, run_id: str) -> RunOut:
        """The run: status, steps (status, attempts, durations, errors) and outputs.

        Raises:
            ApiError: 404 ``run_not_found``.
        """
        return _parse(RunOut, self._call("GET", f"{API_PREFIX}/runs/{_seg(run_id)}"))

    status = run

    def runs(self, workflow: str | None = None, status: RunStatus | str | None = None,
             limit: int = 50, offset: int = 0) -> RunPage:
        """One page of runs, newest first; ``next_offset`` reads the next one."""
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        if workflow is not None:
            params["workflow"] = workflow
        if status is not None:
            params["status"] = RunStatus(status).value
        return _parse(RunPage, self._call("GET", f"{API_PREFIX}/runs", params=params))

    def cancel(self, run_id: str) -> RunOut:
        """Cancel a run; return it as it is after the cancellation.

        Raises:
            ApiError: 409 ``run_ended`` if it had already ended; 404 ``run_not_found``.
        """
        return _parse(RunOut, self._call("POST", f"{API_PREFIX}/runs/{_seg(run_id)}/cancel"))

    def events(self, run_id: str, *, last_event_id: str | None = None,
               timeout_s: float | None = None) -> Iterator[RunEvent]:
        """The run's events as they happen (earlier ones first), until it ends.

        Args:
            run_id: the run.
            last_event_id: resume after this event (a :attr:`RunEvent.id`).
            timeout_s: longest silence between two reads (the server sends a heartbeat
                every 15 s); default no limit.

        Raises:
            ApiError: 404 ``run_not_found``; ``unreachable`` (status 0).
            httpx.TimeoutException: a silence longer than ``timeout_s``.
        """
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(self.timeout_s, read=timeout_s)
        path = f"{API_PREFIX}/runs/{_seg(run_id)}/events"
        try:
            with self._http.stream("GET", path, headers=headers, timeout=timeout) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise _error(resp)
                for name, data in _sse(resp.iter_lines()):
                    if name in ("run", "step"):
                        yield RunEvent.model_validate_json(data)
                    elif name == "end":
                        return
        except httpx.ConnectError as exc:
            raise ApiError(0, "unreachable", f"GET {path}: {exc}",
                           "Check the server's address and that it runs.") from exc

    # --- workflows ---------------------------------------------------------------------

    def workflows(self) -> WorkflowList:
        """Every workflow the server can run."""
        return _parse(WorkflowList, self._call("GET", f"{API_PREFIX}/workflows"))

    def workflow(self, name: str) -> WorkflowDetail:
        """One workflow: version, input schema, steps, Mermaid graph.

        Raises:
            ApiError: 404 ``workflow_not_found``.
        """
        return _parse(WorkflowDetail, self._call("GET", f"{API_PREFIX}/workflows/{_seg(name)}"))

    # --- plumbing ------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"{method} {path}: {exc}",
                           "Check the server's address and that it runs.") from exc
        if resp.status_code >= 400:
            raise _error(resp)
        return resp


def _seg(value: str) -> str:
    return quote(value, safe="")


def _parse(model: type[M], resp: httpx.Response) -> M:
    try:
        return model.model_validate_json(resp.content)
    except ValidationError as exc:
        raise ApiError(resp.status_code, "bad_response",
                       f"the server's answer is not a {model.__name__}: {exc}",
                       "Check that the server's API version matches this client.") from None


def _error(resp: httpx.Response) -> ApiError:
    try:
        info = ErrorBody.model_validate_json(resp.content).error
        return ApiError(resp.status_code, info.code, info.message, info.fix)
    except ValidationError:
        return ApiError(resp.status_code, "http_error",
                        resp.text[:500] or resp.reason_phrase, "")


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """Parse server-sent events into (event name, data) pairs."""
    name, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    if data:
        yield name, "\n".join(data)
