"""TCP hole punching: simultaneous open from the listening port.

Both peers connect from their listening TCP port to the other's candidate
addresses at about the same time. Each side's SYN opens its own NAT's
mapping (MASQUERADE keeps the port when it can), so the other side's SYN
then passes, and the kernel turns the two half-open connections into one
(TCP simultaneous open, RFC 793). A SYN that arrives before the far side's
own SYN left is answered with RST ("connection refused"): retry within the
deadline, after a *random* pause: two sides retrying in lockstep can keep
missing each other for seconds (lab notes).

No low-TTL trick here, unlike UDP: a SYN that dies on the way returns an
ICMP time-exceeded that aborts the connecting socket, and a second socket's
SYN carries a new initial sequence number, which the far NAT's conntrack
(window tracking) then finds out of window once the peer's SYN has passed
it. So a NAT that answers unsolicited SYNs with RST (no firewall) can
defeat TCP punching where the path is too short for the SYNs to cross;
behind firewalls that drop unsolicited packets it works (measured in
tests/netlab/test_netlab_traversal.py). Between such NATs the two first
SYNs must leave less than the NAT-to-NAT one-way time apart: the target
(which hears of the session one introducer hop earlier) starts after
half the two peers' RTTs to the introducer, so that both send at about
the same time (tests/netlab/test_netlab_tcp_punch.py). Those RTTs come
from the kernel (:func:`kernel_rtt_us`) when the introducer is reached
over TCP.

Binding a second socket to a port with a listener needs SO_REUSEPORT on
both; the service's listening TCP sockets set it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import struct
from collections.abc import Callable
from typing import Any

from crust.peer import Address

__all__ = ["AlreadyConnected", "kernel_rtt_us", "simultaneous_open"]

logger = logging.getLogger(__name__)


class AlreadyConnected(Exception):
    """A connection between ``local`` and ``target`` exists already: the
    peer's SYN reached our listener before ours left (it was accepted there).
    The caller finds that connection among the accepted ones."""

    def __init__(self, local: Address, target: Address) -> None:
        super().__init__(f"{local[0]}:{local[1]} is already connected to {target[0]}:{target[1]}")
        self.local = local
        self.target = target


# struct tcp_info (linux/tcp.h): eight one-byte fields, then u32s; tcpi_rtt
# (smoothed, microseconds) is the 16th u32.
_TCPI_RTT_OFFSET = 68


def kernel_rtt_us(sock: Any) -> int | None:
    """The kernel's smoothed RTT of a connected TCP socket in microseconds
    (``TCP_INFO``), or None where that is not available. The engine's RTT
    estimate of a stream-mode connection says little (the kernel's TCP
    acknowledges, not crust), and the rendezvous timing needs a real one."""
    opt = getattr(socket, "TCP_INFO", None)
    if opt is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, opt, 104)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_RTT_OFFSET + 4:
        return None
    rtt: int = struct.unpack_from("=I", info, _TCPI_RTT_OFFSET)[0]
    return rtt or None


# One connect attempt waits at most this long for the SYN-ACK.
_ATTEMPT = 1.0
_PAUSE = (0.01, 0.15)


def _bound_socket(local: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind(local)
    except BaseException:
        sock.close()
        raise
    return sock


async def _one_target(
    local: Address,
    target: Address,
    deadline: float,
    rng: random.Random,
    errors: list[str],
    may_send: Callable[[Address], bool] | None,
) -> socket.socket:
    loop = asyncio.get_running_loop()
    tries = 0
    last = "no attempt"
    while True:
        left = deadline - loop.time()
        if left <= 0:
            errors.append(f"{target[0]}:{target[1]}: {last} ({tries} tries)")
            raise ConnectionError(last)
        if may_send is not None and not may_send(target):
            last = "the requester's reflection budget is spent"
            errors.append(f"{target[0]}:{target[1]}: {last} ({tries} tries)")
            raise ConnectionError(last)
        tries += 1
        sock = _bound_socket(local)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, target), min(_ATTEMPT, left))
        except (OSError, asyncio.TimeoutError) as e:
            sock.close()
            if isinstance(e, OSError) and e.errno == errno.EADDRNOTAVAIL:
                raise AlreadyConnected(local, target) from None
            last = type(e).__name__ if not str(e) else str(e)
            logger.debug("TCP punch %s -> %s, try %d: %s", local, target, tries, last)
            await asyncio.sleep(min(rng.uniform(*_PAUSE), max(0.0, deadline - loop.time())))
            continue
        except BaseException:
            sock.close()
            raise
        logger.debug("TCP simultaneous open %s -> %s after %d tries", local, target, tries)
        return sock


async def simultaneous_open(
    local: Address,
    targets: list[Address],
    timeout: float,
    rng: random.Random | None = None,
    *,
    may_send: Callable[[Address], bool] | None = None,
) -> socket.socket:
    """A connected, non-blocking TCP socket bound to ``local``, to the first
    of ``targets`` that answers within ``timeout`` seconds. Raises
    ``ConnectionError`` naming each target's last failure, and
    :class:`AlreadyConnected` when the peer's connection was accepted.
    ``may_send(target)`` is asked before every SYN to a target (False: stop
    trying it): the budget of sends to unverified addresses."""
    if not targets:
        raise ConnectionError("no candidate addresses for TCP")
    rng = rng or random.Random()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    errors: list[str] = []
    tasks = [
        asyncio.create_task(_one_target(local, t, deadline, rng, errors, may_send)) for t in targets
    ]
    winner: socket.socket | None = None
    try:
        for fut in asyncio.as_completed(tasks):
            with contextlib.suppress(ConnectionError):
                winner = await fut
                return winner
        raise ConnectionError("TCP simultaneous open failed: " + "; ".join(errors))
    finally:
        for t in tasks:
            t.cancel()
        for r in await asyncio.gather(*tasks, return_exceptions=True):
            # Another target that connected too is not needed.
            if isinstance(r, socket.socket) and r is not winner:
                r.close()
