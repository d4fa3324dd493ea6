"""Child processes for the benchmarks: the far end of every measurement
runs in its own process (its own core and GIL), started by ``fork`` from a
process with no event loop running (or spawned afresh), and is always
reaped."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection as Pipe
from typing import Any

from crust.errors import BenchError

__all__ = ["BenchError", "ChildPipe", "child"]

_CTX = mp.get_context("fork")
_SPAWN = mp.get_context("spawn")


class ChildPipe:
    """The parent's end of the pipe to a child, with a deadline on reads."""

    def __init__(self, pipe: Pipe, proc: Any, timeout: float) -> None:
        self._pipe = pipe
        self._proc = proc
        self.timeout = timeout

    def send(self, obj: Any) -> None:
        self._pipe.send(obj)

    def recv(self, timeout: float | None = None) -> Any:
        """The child's next message; BenchError when it died or stalled."""
        wait = self.timeout if timeout is None else timeout
        if not self._pipe.poll(wait):
            raise BenchError(f"benchmark child sent nothing for {wait:.0f} s")
        try:
            return self._pipe.recv()
        except EOFError:
            self._proc.join(1.0)
            raise BenchError(
                f"benchmark child exited early (exit code {self._proc.exitcode})"
            ) from None

    def poll(self) -> bool:
        return self._pipe.poll()


@contextlib.contextmanager
def child(
    target: Callable[..., None], *args: Any, timeout: float = 120.0, fresh: bool = False
) -> Iterator[ChildPipe]:
    """Run ``target(pipe, *args)`` in a forked child for the ``with`` body;
    the child is joined (killed when it outstays the body by 10 s).
    ``fresh``: a new interpreter instead of a fork (``spawn``; ``target``
    must be importable), whose memory is its own: a forked child reuses
    the free heap it inherited, which hides its growth from RSS."""
    ctx = _SPAWN if fresh else _CTX
    parent, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, args=(theirs, *args), daemon=True)
    proc.start()
    theirs.close()
    try:
        yield ChildPipe(parent, proc, timeout)
    finally:
        parent.close()
        proc.join(10.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
        proc.close()
