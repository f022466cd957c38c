"""Message templates: a unit's broker commands built by Celery once, then reused per run.

Building a unit's canvas and its messages is most of a submit's CPU (Celery freezes and
clones every signature of the chain, chords included: about 1 ms for the order workflow's
first unit, where the rest of a submit is two round trips).  Yet for one workflow
version, unit, priority band and queue, every run's messages differ only in the run id
and in the ids Celery generates (task ids, group ids, delivery tags).

A :class:`Templates` builds a unit's messages with Celery itself, twice, for two
placeholder run ids, holding kombu's Redis commands (:func:`broker.capture`).  The ids
that differ between the two builds are the generated ones; everything else is fixed.
Rendering a run's commands replaces the placeholder run id, gives each generated id a
fresh UUID (the same id gets the same new one everywhere, so a chain's id stays its
last task's and a chord's group id its header's), and re-stamps the task-sent event
(its clock, time and UTC offset), as Celery would.

A unit that is one step's task alone (a branch of a wide fan-out: one unit per branch)
shares its template with every such unit of its version that calls the same function
the same way (queue, time limits): the two builds also use two placeholder step ids,
and the step id is a slot like the run id (:meth:`Templates.lone`).  A 2,000-wide
fan-out's first publish in a process then builds 2 messages with Celery, not 4,000
(about 1 ms each), and a fan-out wider than the cache no longer misses on every run.

A unit is only templated when the two builds have the same shape (one task message and
its event per id position); otherwise, and whenever a publish could differ by more than
ids (traces on, receivers of Celery's publish signals, a publish from inside a task that
sets parent and root ids), :meth:`Templates.commands` builds with Celery as before.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from celery import Celery, signals
from celery.utils.time import utcoffset

from orchestrator import forks
from orchestrator.core.plan import CanvasNode, ChainNode, TaskNode
from orchestrator.runtime import broker, tracing

Command = tuple[str, tuple[Any, ...]]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PLACEHOLDERS = ("tpl0run0a0a0a0a0a0a0a0a0a0a0a0a0", "tpl0run0b0b0b0b0b0b0b0b0b0b0b0b0")
"""Two run ids no real run has (ids are free text, so only their length is usual)."""
_STEP_PLACEHOLDERS = ("tpl0step0a0a0a0a", "tpl0step0b0b0b0b")
"""Two step ids no real step has (step ids are identifiers: no escaping in JSON or in a
repr)."""
LONE_STEP_ID_MAX = 64
"""A lone step's task shares a template only if its id is at most this long: Celery
shortens a long repr of a message's arguments, which a longer id could reach."""
_LIMIT = 8192
"""Templates kept per process (workflow versions x units x bands x queues), least recently
used out first, a few KiB each.  A fan-out compiled into one unit per branch
(``core/compiler.py``, ``MAX_CHORD_WIDTH``) needs one per kind of branch, not one per
branch (:meth:`Templates.lone`): before, a fan-out wider than this missed on every run
(a 10,000-wide submit took 14 s of Celery builds every time, now 0.7-0.8 s)."""


@dataclass(frozen=True)
class _Part:
    """One held command: its name and key, and its value's text with the generated ids
    (and the placeholder run id) left in, to replace."""

    name: str
    key: str
    envelope: str
    """The kombu envelope's JSON with ``"body"`` emptied (``lpush``/``publish``), or the
    value itself (``pexpire``)."""
    body: str | None
    """The decoded body's text (a task message's or an event's); None for ``pexpire``."""


Segment = str | int
"""A piece of a compiled text: fixed text, or a slot (:data:`_RUN`, :data:`_BODY`,
:data:`_STEP`, or the index of a generated id)."""
_RUN, _BODY, _STEP = -1, -2, -3
_BODY_MARK = "tpl0body0mark"
"""Stands for the envelope's body while it is compiled (no envelope holds it otherwise)."""


@dataclass(frozen=True)
class _Compiled:
    """A part compiled for rendering: its envelope's text with a slot for the body, and
    the body's text (None for ``pexpire``), as segments."""

    name: str
    key: str
    envelope: tuple[Segment, ...]
    body: tuple[Segment, ...] | None


@dataclass(frozen=True)
class _Template:
    """A unit's commands with their ids and run id as slots: a render joins strings, where
    a regular expression would scan every text again for every run."""

    parts: tuple[_Compiled, ...]
    ids: int
    """How many generated ids a render draws afresh."""


_SLOTS = re.compile("|".join([re.escape(_PLACEHOLDERS[0]), re.escape(_BODY_MARK),
                              re.escape(_STEP_PLACEHOLDERS[0]), UUID.pattern]))
_FIXED_SLOTS = {_PLACEHOLDERS[0]: _RUN, _BODY_MARK: _BODY, _STEP_PLACEHOLDERS[0]: _STEP}


def _segments(text: str, index: dict[str, int]) -> tuple[Segment, ...]:
    """``text`` cut at the placeholder run id, the body mark and the generated ids."""
    out: list[Segment] = []
    at = 0
    for m in _SLOTS.finditer(text):
        found = m.group()
        slot = _FIXED_SLOTS.get(found, index.get(found))
        if slot is None:  # a fixed id: text like any other
            continue
        out += [text[at:m.start()], slot]
        at = m.end()
    out.append(text[at:])
    return tuple(x for x in out if x != "")


def _compile(parts: list[_Part], generated: frozenset[str]) -> _Template:
    index = {g: i for i, g in enumerate(sorted(generated))}
    out = []
    for part in parts:
        if part.body is None:
            out.append(_Compiled(part.name, part.key, (part.envelope,), None))
            continue
        envelope = json.loads(part.envelope)
        envelope["body"] = _BODY_MARK
        out.append(_Compiled(part.name, part.key, _segments(json.dumps(envelope), index),
                             _segments(part.body, index)))
    return _Template(tuple(out), len(generated))


class Templates:
    """Per-process cache of message templates for one Celery app."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._cache: OrderedDict[tuple[Any, ...], _Template | None] = OrderedDict()
        self._lock = forks.lock()

    def usable(self) -> bool:
        """Whether a publish now would be Celery's plain one: this app's publishes can be
        held, no trace context, nobody hooked on Celery's publish signals, not inside a
        task (whose publishes carry its ids as parent and root)."""
        return (broker.captures(self.app) and not tracing.active()
                and not signals.before_task_publish.receivers
                and not signals.after_task_publish.receivers
                and not signals.task_sent.receivers
                and self.app.current_worker_task is None)

    def warm(self, keys: Iterable[tuple[Any, ...]]) -> bool:
        """Whether :meth:`commands` would render each of ``keys`` from a template it
        holds, with no Celery build (only a canvas that Celery publishes as one message
        has one)."""
        if not self.usable():
            return False
        pid = os.getpid()
        with self._lock:
            return all(self._cache.get((pid, *key)) is not None for key in keys)

    def commands(self, key: tuple[Any, ...], canvas: CanvasNode, run_id: str,
                 build: Callable[[str], list[Command]]) -> list[Command]:
        """The broker commands that publish a unit for ``run_id``.

        Args:
            key: what fixes the messages but the run id (version, unit, band, queue).
            canvas: the unit's canvas (only one that Celery publishes as a single message
                is templated: see :func:`single_message`).
            run_id: the run.
            build: builds them with Celery for a run id (under :func:`broker.capture`).
        """
        if not single_message(canvas) or not self.usable():
            return build(run_id)
        tpl = self._template(key, lambda: _template(build(_PLACEHOLDERS[0]),
                                                    build(_PLACEHOLDERS[1])))
        if tpl is None:
            return build(run_id)
        return self._render(tpl, run_id)

    def lone(self, key: tuple[Any, ...], run_id: str, step_id: str,
             build: Callable[[str, str], list[Command]]) -> list[Command] | None:
        """The broker commands that publish a unit that is one step's task alone, from a
        template shared by every such unit of ``key`` (what fixes the messages but the
        run and step ids: version, function, queue, time limits, band), or None if this
        one cannot be (a publish that could differ by more than ids, a long step id, two
        builds of another shape): the caller then uses :meth:`commands`.

        Args:
            build: builds the unit's messages with Celery for a run id and a step id
                (under :func:`broker.capture`).
        """
        if len(step_id) > LONE_STEP_ID_MAX or not self.usable():
            return None
        tpl = self._template(key, lambda: _template(
            build(_PLACEHOLDERS[0], _STEP_PLACEHOLDERS[0]),
            build(_PLACEHOLDERS[1], _STEP_PLACEHOLDERS[1])))
        return None if tpl is None else self._render(tpl, run_id, step_id)

    def _template(self, key: tuple[Any, ...], make: Callable[[], _Template | None]
                  ) -> _Template | None:
        """The cached template of ``key`` in this process, made (and kept, None too) the
        first time."""
        key = (os.getpid(), *key)  # a forked child stamps its own pid and hostname
        with self._lock:
            known = key in self._cache
            if known:
                self._cache.move_to_end(key)
            tpl = self._cache.get(key)
        if not known:
            tpl = make()
            with self._lock:
                self._cache[key] = tpl
                while len(self._cache) > _LIMIT:
                    self._cache.popitem(last=False)
        return tpl

    def _render(self, tpl: _Template, run_id: str, step_id: str = "") -> list[Command]:
        ids = uuid4_strings(tpl.ids)
        fixed = {_RUN: run_id, _STEP: step_id}

        def fill(segments: tuple[Segment, ...], body: str = "") -> str:
            return "".join([x if isinstance(x, str) else body if x == _BODY
                            else fixed[x] if x < 0 else ids[x] for x in segments])

        out: list[Command] = []
        for part in tpl.parts:
            if part.body is None:
                out.append((part.name, (part.key, fill(part.envelope))))
                continue
            body = fill(part.body)
            if part.name == "publish":  # the task-sent event: stamped now, as Celery does
                event = json.loads(body)
                event.update(clock=self.app.clock.forward(), timestamp=time.time(),
                             utcoffset=utcoffset())
                body = json.dumps(event)
            out.append((part.name, (part.key, fill(
                part.envelope, base64.b64encode(body.encode()).decode()))))
        return out


def uuid4_strings(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as Celery writes task ids, ``str(uuid.uuid4())``,
    from one ``os.urandom`` call: a templated message of a 32-step unit takes 32 ids, and
    one call for all of them is a quarter of the CPU of 32 calls of ``uuid4``."""
    raw = bytearray(os.urandom(16 * n))
    for i in range(0, 16 * n, 16):
        raw[i + 6] = raw[i + 6] & 0x0F | 0x40  # version 4
        raw[i + 8] = raw[i + 8] & 0x3F | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return [f"{h[j:j + 8]}-{h[j + 8:j + 12]}-{h[j + 12:j + 16]}-{h[j + 16:j + 20]}-"
            f"{h[j + 20:j + 32]}" for j in range(0, 32 * n, 32)]


def single_message(canvas: CanvasNode) -> bool:
    """Whether Celery publishes ``canvas`` as one task message and writes nothing else: a
    task, or a chain that starts with one (a chord later in the chain is only frozen
    here, and applied by the worker that reaches it).  A canvas that starts with a chord
    also writes the chord's size to the result backend as it is applied: never
    templated."""
    if isinstance(canvas, TaskNode):
        return True
    return (isinstance(canvas, ChainNode) and bool(canvas.items)
            and isinstance(canvas.items[0], TaskNode))


def _split(cmd: Command) -> _Part | None:
    name, args = cmd
    if len(args) != 2:
        return None
    key, value = str(args[0]), args[1]
    if name == "pexpire":
        return _Part(name, key, str(value), None)
    envelope = json.loads(value)
    if envelope.get("properties", {}).get("body_encoding") != "base64":
        return None
    body = base64.b64decode(envelope["body"]).decode()
    envelope["body"] = ""
    return _Part(name, key, json.dumps(envelope), body)


def _template(a: list[Command], b: list[Command]) -> _Template | None:
    """The template of two builds of one unit for the two placeholder run ids, or None
    if they differ by more than the run id and generated ids."""
    if len(a) != len(b) or [n for n, _ in a].count("lpush") != 1:
        return None
    parts: list[_Part] = []
    pairs: list[tuple[str, str]] = []
    for ca, cb in zip(a, b, strict=True):
        pa, pb = _split(ca), _split(cb)
        if pa is None or pb is None or (pa.name, pa.key) != (pb.name, pb.key):
            return None
        texts = [(pa.envelope, pb.envelope)]
        if pa.body is not None and pb.body is not None:
            if pa.name == "publish":  # the event's stamps differ by build: not compared
                ea, eb = json.loads(pa.body), json.loads(pb.body)
                for k in ("clock", "timestamp", "utcoffset"):
                    ea.pop(k, None)
                    eb.pop(k, None)
                texts.append((json.dumps(ea), json.dumps(eb)))
            else:
                texts.append((pa.body, pb.body))
        for ta, tb in texts:
            tb = tb.replace(_PLACEHOLDERS[1], _PLACEHOLDERS[0]).replace(
                _STEP_PLACEHOLDERS[1], _STEP_PLACEHOLDERS[0])
            if UUID.sub("", ta) != UUID.sub("", tb):
                return None
            pairs += zip(UUID.findall(ta), UUID.findall(tb), strict=True)
        parts.append(pa)
    # each id of the first build must stand for one id of the second everywhere: either
    # always itself (fixed, such as the app's reply-to) or always the same other one
    # (generated); an id that is both would make runs share it
    seen: dict[str, str] = {}
    for x, y in pairs:
        if seen.setdefault(x, y) != y:
            return None
    generated = frozenset(x for x, y in seen.items() if x != y)
    if len(set(seen[x] for x in generated)) != len(generated):
        return None
    return _compile(parts, generated)
