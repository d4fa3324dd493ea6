"""Classifying our NAT from the contacts we joined (no STUN server needed):
the asyncio side of :mod:`crust.nat.mapping` (design note 0062).

After :meth:`Service.join` (and each rejoin) the live UDP listener of the
contact's family sends a padded STUN Binding request to the contact's
port, learns from the answer (OTHER-ADDRESS) the contact's other port, and
asks that one too. Both requests leave from the listening socket, whose
mapping is the one peers must punch to. The result goes to
``Service.nat`` unless a STUN server classified the mapping already, and
traversal then uses it as it uses STUN's (birthday punching when exactly
one side is symmetric).

Each probe is two transactions (RTO 0.2 s, 4 requests each): at most a
few hundred bytes to a contact we chose, per join.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from crust.asyncio.stun import StunSocket, route_source
from crust.errors import StunFailed
from crust.nat.binding import canonical_ip
from crust.nat.classify import NatBehaviour
from crust.nat.mapping import PAD_TO, ContactProbes
from crust.nat.stun import BindingSucceeded
from crust.peer import Address

if TYPE_CHECKING:
    from crust.asyncio.udp import UdpListener
    from crust.node import Node

__all__ = ["ContactNat", "probe_contacts"]

logger = logging.getLogger(__name__)


async def _ask_contact(
    binding: Callable[[Address], Awaitable[BindingSucceeded]],
    contact: Address,
    probes: ContactProbes,
    now: Callable[[], float],
) -> None:
    """Ask ``contact``'s port, then the other port its answer names (at
    the address we reach it by: its own view of its address may be a
    private one), recording each answer in ``probes``."""
    servers = [contact]
    while servers:
        server = servers.pop(0)
        try:
            ans = await binding(server)
        except StunFailed as e:
            logger.info("contact %s:%d did not answer our mapping probe: %s", *server, e)
            return
        # Matched by its transaction id (96 random bits: only who saw the
        # request can answer). Not by source: a contact bound to a wildcard
        # address on a multi-homed host answers from the address its route
        # picks, which need not be the one we asked.
        if (canonical_ip(ans.source[0]), ans.source[1]) != (canonical_ip(server[0]), server[1]):
            logger.debug("mapping probe to %s answered from %s", server, ans.source)
        probes.add(server, ans.mapped, now(), ans.rtt)
        if ans.other is not None and server == contact and ans.other[1] != contact[1]:
            servers.append((contact[0], ans.other[1]))


async def probe_contacts(contacts: Sequence[Address], host: str = "0.0.0.0") -> NatBehaviour | None:
    """``crust nat --via``: the contacts' view of one fresh socket on
    ``host`` (each contact's two ports, one contact after the other);
    None when none answered."""
    loop = asyncio.get_running_loop()
    sock = await StunSocket.open((host, 0), rto=0.2, rc=4, rm=4)
    try:
        local = sock.local_address
        if local[0] in ("0.0.0.0", "::") and contacts:
            local = (route_source(contacts[0]), local[1])
        probes = ContactProbes(local)

        async def binding(server: Address) -> BindingSucceeded:
            return await sock.driver.binding(server, pad_to=PAD_TO)

        for contact in contacts:
            await _ask_contact(binding, contact, probes, loop.time)
        return probes.behaviour()
    finally:
        sock.close()


def _family(addr: Address) -> int:
    return socket.AF_INET6 if ":" in addr[0] else socket.AF_INET


class ContactNat:
    """The contact probes of one service, and what they showed
    (:attr:`behaviour`, also ``Service.nat`` when STUN had no say)."""

    def __init__(self, service: Node, udp: list[UdpListener]) -> None:
        self.svc = service
        # The service's UDP listeners (it opens and closes them).
        self._udp = udp
        self._probes: dict[Address, ContactProbes] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: The latest classification (None: no contact answered yet).
        self.behaviour: NatBehaviour | None = None
        self._closed = False

    def probe(self, contact: Address) -> None:
        """Probe ``contact`` (an address we joined) in the background."""
        if self._closed:
            return
        task = asyncio.create_task(self._probe(contact))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("contact probe failed: %r", task.exception())

    async def wait(self, timeout: float) -> None:
        """Until the probes running now are done, at most ``timeout`` s."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def _listener(self, contact: Address) -> UdpListener | None:
        for listener in self._udp:
            if listener.role == "live" and _family(listener.address) == _family(contact):
                return listener
        return None

    async def _probe(self, contact: Address) -> None:
        listener = self._listener(contact)
        if listener is None:
            return
        loop = asyncio.get_running_loop()
        probes = self._probes.get(listener.address)
        if probes is None:
            probes = self._probes[listener.address] = ContactProbes(
                listener.address, listener._local_ips()
            )
        stun = listener.stun

        async def binding(server: Address) -> BindingSucceeded:
            return await stun.binding(server, pad_to=PAD_TO)

        await _ask_contact(binding, contact, probes, loop.time)
        result = probes.behaviour()
        if result is None:
            return
        logger.info(
            "contacts see %s:%d at %s (mapping %s: %s)",
            *listener.address, list(result.reflexive), result.mapping.value, result.kind,
        )  # fmt: skip
        self.behaviour = result
        self.svc.on_contact_nat(result)

    def close(self) -> None:
        self._closed = True
        for t in self._tasks:
            t.cancel()
