"""Soak: hours of mixed traffic to a frozen-and-thawed peer, every message
checked.

A sender in a child process connects to a receiving ``Service`` here and
sends messages of priorities 0-3 and sizes from 64 B to 1 MiB (log-uniform)
at ``rate`` bytes per second (20 MB/s by default). Every ``freeze_every`` seconds the
parent stops the sender's process (SIGSTOP) for ``freeze_for`` seconds, as
a laptop lid or a debugger would, then resumes it (SIGCONT). Each message
carries its priority, its sequence number in that priority and a body
derived from both, so the receiver checks every byte and that each
priority's messages arrive exactly once, in order: no loss, no duplicate,
no reordering. At the end the sender says how many it sent per priority
and the receiver must have had them all.

``tests/service/test_soak.py`` runs 60 s in CI; ``crust bench --soak SECONDS``
runs it for as long as wanted (figures in docs/testing.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from crust.bench.procs import BenchError, child
from crust.bench.service_path import service_config
from crust.config import ServiceConfig
from crust.events import LostPeer, NewMessage
from crust.service import Service

__all__ = ["SoakResult", "soak"]

_HEADER = struct.Struct(">BQ")  # priority, sequence number
PRIORITIES = 4
MIN_SIZE = 64
MAX_SIZE = 1 << 20


def body(prio: int, seq: int, size: int) -> bytes:
    """The message ``(prio, seq)`` of ``size`` bytes (header included)."""
    head = _HEADER.pack(prio, seq)
    seed = hashlib.sha256(head).digest()
    n = size - len(head)
    return head + (seed * (n // len(seed) + 1))[:n]


def _config(transport: str) -> ServiceConfig:
    # A frozen peer must not be given up for dead.
    return service_config(transport, idle_timeout=120.0, keepalive=5.0)


def _sender(
    pipe: Any, address: Any, transport: str, seconds: float, rate: float, seed: int
) -> None:
    async def main() -> None:
        rng = random.Random(seed)
        sent = [0] * PRIORITIES
        sent_bytes = 0
        async with Service(_config(transport)) as svc:
            peer = await svc.connect(address)
            pipe.send(("connected", os.getpid()))
            start = time.monotonic()
            end = start + seconds
            while (now := time.monotonic()) < end:
                # Paced to ``rate`` on average (a freeze is not made up for).
                ahead = sent_bytes / rate - (now - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
                prio = rng.randrange(PRIORITIES)
                size = int(MIN_SIZE * (MAX_SIZE / MIN_SIZE) ** rng.random())
                await peer.send(body(prio, sent[prio], size), priority=prio)
                sent[prio] += 1
                sent_bytes += size
            # Everything queued is delivered before a graceful close ends.
            await svc.disconnect(peer, timeout=60.0)
        pipe.send(("sent", sent, sent_bytes))

    asyncio.run(main())


@dataclass
class SoakResult:
    seconds: float
    messages: int = 0
    bytes: int = 0
    sent: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=lambda: [0] * PRIORITIES)
    freezes: int = 0
    #: Longest wait for the first message after each thaw, in seconds.
    resume_max: float = 0.0
    errors: list[str] = field(default_factory=list)


async def soak(
    seconds: float,
    *,
    transport: str = "udp",
    freeze_every: float = 20.0,
    freeze_for: float = 5.0,
    rate: float = 20e6,
    seed: int = 1,
) -> SoakResult:
    """Run the soak for ``seconds`` of sending; see the module's doc."""
    result = SoakResult(seconds)
    async with Service(_config(transport)) as rx:
        address = rx.endpoints[0]
        loop = asyncio.get_running_loop()
        last_message = time.monotonic()
        done = asyncio.Event()

        async def receive() -> None:
            nonlocal last_message
            async for ev in rx.events():
                if isinstance(ev, NewMessage):
                    last_message = time.monotonic()
                    _check(result, ev.data, ev.priority)
                elif isinstance(ev, LostPeer):
                    done.set()

        task = asyncio.create_task(receive())
        with child(_sender, address, transport, seconds, rate, seed, timeout=seconds + 180) as pipe:
            what, pid = await loop.run_in_executor(None, pipe.recv)
            if what != "connected":
                raise BenchError(f"the sender did not connect: {what}")
            started = time.monotonic()
            while time.monotonic() - started < seconds - freeze_for:
                await asyncio.sleep(freeze_every - freeze_for)
                if time.monotonic() - started >= seconds - freeze_for:
                    break
                os.kill(pid, signal.SIGSTOP)
                await asyncio.sleep(freeze_for)
                thawed = time.monotonic()
                os.kill(pid, signal.SIGCONT)
                result.freezes += 1
                while last_message < thawed and time.monotonic() - thawed < 30:
                    await asyncio.sleep(0.01)
                result.resume_max = max(result.resume_max, last_message - thawed)
            what, sent, _ = await loop.run_in_executor(None, pipe.recv)
            result.sent = sent
        await asyncio.wait_for(done.wait(), 60)
        task.cancel()
    if result.received != result.sent:
        result.errors.append(f"sent {result.sent} per priority, received {result.received}")
    return result


def _check(result: SoakResult, data: bytes, prio: int) -> None:
    if len(data) < _HEADER.size:
        result.errors.append(f"a {len(data)}-byte message")
        return
    p, seq = _HEADER.unpack_from(data)
    want = result.received[p] if p < PRIORITIES else -1
    if p != prio or seq != want:
        result.errors.append(f"priority {prio}: message ({p}, {seq}) where {want} was due")
    elif data != body(p, seq, len(data)):
        result.errors.append(f"priority {prio}: message {seq} corrupted")
    else:
        result.received[p] += 1
        result.messages += 1
        result.bytes += len(data)
