"""Classifying our NAT from a joined contact, no STUN server (design note
0062): on loopback, a node that joins a contact asks both of the contact's
ports where they see it; the contact answers within its budgets; the result
is ``Service.nat`` (source "contacts") and drives ``traversal.is_hard``."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from pathlib import Path

from crust import Identity, NatDetected, Service, ServiceConfig
from crust.nat import mapping
from crust.nat.classify import Behaviour, NatBehaviour
from crust.nat.mapping import PAD_TO
from crust.nat.stun import Attr, decode, encode_binding_request, encode_binding_response


def _cfg(**kw: object) -> ServiceConfig:
    return ServiceConfig(
        identity=Identity.generate(),
        hosts=("127.0.0.1",),
        beacon=False,
        gossip=False,
        cache_path=Path(tempfile.mkdtemp()) / "cache",
        **kw,  # type: ignore[arg-type]
    )


def test_joining_a_contact_classifies_our_nat_without_stun() -> None:
    async def main() -> None:
        async with Service(_cfg()) as contact, Service(_cfg()) as node:
            events = node.events()
            assert node.nat is None
            await node.join(contact.endpoints[0])
            nat = await node.nat_known(5.0)
            assert nat is not None and nat.source == "contacts"
            live = node.endpoints[0]
            # Both of the contact's ports answered, and saw our live socket.
            servers = {p.server[1] for p in nat.probes}
            assert servers == {e[1] for e in contact.endpoints} and len(servers) == 2
            assert nat.reflexive == (live,)
            assert nat.behind_nat is False and nat.kind == "open"
            assert nat.mapping is Behaviour.ENDPOINT_INDEPENDENT
            assert not node.traversal.is_hard()
            assert node.stun_addresses == []  # not STUN's view
            assert contact.probe_answers.stats["answered"] == 2
            async for ev in events:
                if isinstance(ev, NatDetected):
                    assert ev == NatDetected((live,), "open", "endpoint-independent", "contacts")
                    break

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_symmetric_classification_from_contacts_makes_us_the_hard_side() -> None:
    """Traversal reads the contacts' classification as it reads STUN's;
    a STUN classification, when there is one, wins."""

    async def main() -> None:
        async with Service(_cfg()) as svc:
            local = svc.endpoints[0]
            sym = NatBehaviour(
                local, ("192.0.2.1", 4000), True, Behaviour.ADDRESS_AND_PORT_DEPENDENT,
                Behaviour.UNKNOWN, False, (), source="contacts",
            )  # fmt: skip
            svc.on_contact_nat(sym)
            assert svc.nat is sym and svc.traversal.is_hard()
            stun = NatBehaviour(
                local, ("192.0.2.1", 4000), True, Behaviour.ENDPOINT_INDEPENDENT,
                Behaviour.UNKNOWN, True, (),
            )  # fmt: skip
            svc.nat = stun
            svc.on_contact_nat(sym)
            assert svc.nat is stun and not svc.traversal.is_hard()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_flood_of_probes_gets_no_amplification_and_counts_as_no_junk() -> None:
    """Adversarial: one source floods a node's port with Binding requests,
    small and padded. The node answers at most its per-source burst, never
    more bytes than it was sent, holds no junk against the source (an
    honest prober may share it), and still answers another source."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with Service(_cfg()) as svc:
            port = svc.endpoints[0]
            attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            attacker.bind(("127.0.0.1", 0))
            attacker.setblocking(False)
            sent = got = answers = 0
            me = attacker.getsockname()
            with attacker:
                for i in range(400):
                    req = encode_binding_request(os.urandom(12), pad_to=PAD_TO if i % 2 else 0)
                    attacker.sendto(req, port)
                    sent += len(req)
                    # Unsolicited answers too: not even parsed (no probe of
                    # ours is open), and no junk.
                    fake = encode_binding_response(os.urandom(12), ("192.0.2.1", 1))
                    attacker.sendto(fake, port)
                    if i % 50 == 0:
                        await asyncio.sleep(0.01)
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    try:
                        data = attacker.recv(2048)
                    except BlockingIOError:
                        await asyncio.sleep(0.02)
                        continue
                    got += len(data)
                    answers += 1
                    assert decode(data).address(Attr.XOR_MAPPED_ADDRESS) == me
            # The burst, and maybe a token or two earned while the flood ran.
            assert 1 <= answers <= mapping.SOURCE_BURST + 2, answers
            assert got <= sent // 10
            st = svc.probe_answers.stats
            assert st["over_budget"] + st["too_small"] + st["answered"] >= 390
            assert me not in svc._failures
            assert svc._udp[0].stun.client.ignored == 0
            assert svc._udp[0].endpoint.stats()["rx_dropped_malformed"] == 0
            # Another source (a different IP, as loopback has many) is answered.
            honest = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            honest.bind(("127.0.0.2", 0))
            with honest:
                honest.setblocking(False)
                honest.sendto(encode_binding_request(os.urandom(12), pad_to=PAD_TO), port)
                data = await asyncio.wait_for(loop.sock_recv(honest, 2048), 2.0)
                assert decode(data).address(Attr.OTHER_ADDRESS) is not None

    asyncio.run(asyncio.wait_for(main(), 20))


def test_crust_nat_via_reports_the_contacts_view() -> None:
    """The doctor (`crust nat --via`) asks a node's two ports from a fresh
    socket and reports it where STUN's result goes."""
    from crust.asyncio.doctor import diagnose, render

    async def main() -> None:
        async with Service(_cfg()) as contact:
            report = await diagnose(
                [], contacts=[contact.endpoints[0]], upnp=False, natpmp=False, host="127.0.0.1"
            )
            assert report.nat is not None and report.nat.source == "contacts"
            assert report.nat.kind == "open" and len(report.nat.probes) == 2
            j = report.to_json()
            assert j["nat"]["source"] == "contacts" and j["contacts"] == [
                list(contact.endpoints[0])
            ]
            assert "crust contacts: 127.0.0.1:" in render(report)
            # Nobody there: no classification, and the report says so.
            dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            dead.bind(("127.0.0.1", 0))
            with dead:
                report = await diagnose(
                    [], contacts=[dead.getsockname()], upnp=False, natpmp=False, host="127.0.0.1"
                )
            assert report.nat is None and "no answer" in render(report)

    asyncio.run(asyncio.wait_for(main(), 30))
