"""The context-manager half of a fixture made of processes (tests, benchmarks): ``with
X(...) as x`` starts it, and closes it on the way out, or when the start itself fails
part-way."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Started:
    """Mix-in: :meth:`start` (returning self) and :meth:`close` make a context manager."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
