"""Child processes for the benchmarks: the far end of every measurement
runs in its own process (its own core and GIL), started by ``fork`` from a
process with no event loop running (or spawned afresh), and is always
reaped."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection as Pipe
from typing import Any

from crust.errors import BenchError

__all__ = ["BenchError", "ChildPipe", "Pinning", "child", "pin_child", "pinned", "pinning"]

_CTX = mp.get_context("fork")
_SPAWN = mp.get_context("spawn")


class Pinning:
    """Which core the measuring process and which its far end run on.

    With two cores or more the measuring side (the parent, and the sender
    of the raw baselines) runs on ``near`` and every child process on
    ``far``: the scheduler then cannot put both ends on one core for part
    of a round and on two for the rest, which made rounds differ by tens
    of percent. With one core (or ``CRUST_BENCH_PIN=0``) nothing is
    pinned and ``why_not`` says so."""

    def __init__(self) -> None:
        self.cpus = sorted(os.sched_getaffinity(0))
        wanted = os.environ.get("CRUST_BENCH_PIN", "1") != "0"
        self.why_not: str | None = None
        if not wanted:
            self.why_not = "CRUST_BENCH_PIN=0"
        elif len(self.cpus) < 2:
            self.why_not = f"only {len(self.cpus)} CPU available"
        self.near: int | None = None if self.why_not else self.cpus[0]
        self.far: int | None = None if self.why_not else self.cpus[1]

    def describe(self) -> str:
        if self.why_not:
            return f"not pinned ({self.why_not})"
        return f"measuring side on CPU {self.near}, far end on CPU {self.far}"


_PINNING: Pinning | None = None


def pinning() -> Pinning:
    """This process's pinning plan (decided once, from the CPUs it may use
    when first asked)."""
    global _PINNING
    if _PINNING is None:
        _PINNING = Pinning()
    return _PINNING


def pin_child(pid: int = 0) -> None:
    """Put process ``pid`` (0: this one) on the far end's core, if pinning."""
    plan = pinning()
    if plan.far is not None:
        os.sched_setaffinity(pid, {plan.far})


@contextlib.contextmanager
def pinned() -> Iterator[None]:
    """This process on the measuring side's core for the ``with`` body;
    its former CPU set is restored after."""
    plan = pinning()
    if plan.near is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {plan.near})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _pinned_target(pipe: Pipe, far: int | None, target: Callable[..., None], *args: Any) -> None:
    if far is not None:
        os.sched_setaffinity(0, {far})
    target(pipe, *args)


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
    # The far end pins itself before it does anything (the plan is passed
    # in: a spawned child has not inherited the parent's).
    proc = ctx.Process(
        target=_pinned_target, args=(theirs, pinning().far, target, *args), daemon=True
    )
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
