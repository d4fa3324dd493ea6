"""No framing (issue 15): a datagram's failure counts against a peer only
if it came from that peer's address. Against 57f4858, 120 datagrams of
junk carrying an honest peer's connection id, sent from another address
by anyone who saw the id, got the honest peer reported, blacklisted and
disconnected (with ``auto_blacklist``); and 25,000 junk datagrams from
one source were never reported at all.

Now failures from elsewhere are counted against the address they came
from (``crust_stats.rx_dropped_offpath`` on the connection, not its
decrypt/malformed counters), junk is counted per address, and both are
reported as ``PeerMisbehaving`` with that address and no peer id.
"""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from crust import LostPeer, PeerMisbehaving, handshake, wire

from .tools import connect_pair, figure, node, run

ATTACKER = "127.0.0.2"  # the peers live on 127.0.0.1
THRESHOLD = 50


def attacker_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ATTACKER, 0))
    return s


@pytest.mark.parametrize("auto_blacklist", [False, True])
def test_junk_with_a_sniffed_id_is_charged_to_its_sender(auto_blacklist: bool) -> None:
    async def main() -> None:
        kw = {"misbehaving_threshold": THRESHOLD, "auto_blacklist": auto_blacklist}
        async with node(**kw) as (a, ra), node() as (b, rb):
            pb, pa = await connect_pair(a, ra, b)
            cid = pa.extra.local_cid  # on the wire in every packet to a
            sock = attacker_socket()
            rng = random.Random(15)
            for _ in range(3 * THRESHOLD):
                junk = (
                    bytes([0x40 | rng.randrange(8)]) + cid + rng.randbytes(rng.randrange(24, 200))
                )
                sock.sendto(junk, a.endpoints[0])
            ev = await ra.wait(PeerMisbehaving, lambda ev: True, timeout=5)
            assert ev.address == sock.getsockname() and ev.peer_id is None
            assert ev.blacklisted is auto_blacklist
            assert a.is_blacklisted_address(sock.getsockname()) is auto_blacklist
            # The honest peer: not charged, not blacklisted, still talking.
            st = pa._link.conn.stats()
            assert st["rx_dropped_decrypt"] == st["rx_dropped_malformed"] == 0
            assert st["rx_dropped_offpath"] >= 3 * THRESHOLD * 0.9
            assert pa.is_connected and not a.is_blacklisted_id(b.id)
            await pa.send(b"still friends")
            await pb.send(b"indeed")
            await asyncio.sleep(0.3)
            assert not ra.of(LostPeer) and not rb.of(LostPeer)
            assert len(ra.of(PeerMisbehaving)) == 1
            figure(
                "junk with a sniffed connection id from another address"
                f" (auto_blacklist={auto_blacklist})",
                f"{3 * THRESHOLD} datagrams: the sender's address reported"
                f"{' and blacklisted' if auto_blacklist else ''};"
                " the honest peer kept, not charged",
            )
            sock.close()

    run(main())


def test_junk_is_counted_per_address_and_reported() -> None:
    async def main() -> None:
        async with node(misbehaving_threshold=THRESHOLD) as (a, ra):
            sock = attacker_socket()
            rng = random.Random(25)
            for i in range(2_000):
                # Short headers: unknown connection ids, or too short.
                sock.sendto(bytes([rng.randrange(0x80)]) + rng.randbytes(rng.randrange(0, 64)),
                            a.endpoints[0])  # fmt: skip
                if i % 200 == 0:
                    await asyncio.sleep(0)
            ev = await ra.wait(PeerMisbehaving, lambda ev: True, timeout=5)
            assert ev.address == sock.getsockname() and ev.peer_id is None
            figure(
                "junk datagrams from one source",
                f"reported as PeerMisbehaving after {ev.failures} (threshold {THRESHOLD})",
            )
            sock.close()

    run(main())


def _handshake_junk(rng: random.Random, tag: bytes) -> bytes:
    """An initiation of the right version, network tag and size whose mac1
    is wrong: what only someone who is not a peer sends."""
    first = bytes([wire.LONG_HEADER_FLAGS | handshake.TYPE_INITIATION, handshake.VERSION])
    body = rng.randbytes(handshake.INITIATION_SIZE - 6 - 8)
    return first + tag + bytes(8) + body


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_handshake_junk_is_counted_per_address_and_reported(transport: str) -> None:
    """Long-header junk (our version and network tag, a failing mac1) goes
    to the handshake responder, not to the endpoint's junk table: it too
    counts against its address. Against 498f1dd it was counted only in the
    responder's stats: 3x the threshold from one address, never reported."""

    async def main() -> None:
        kw = {"misbehaving_threshold": THRESHOLD, "tcp": transport == "tcp"}
        async with node(**kw) as (a, ra):
            tag = handshake.network_tag(a.config.network)
            rng = random.Random(35)
            if transport == "udp":
                sock = attacker_socket()
                for _ in range(3 * THRESHOLD):
                    sock.sendto(_handshake_junk(rng, tag), a.endpoints[0])
                source = sock.getsockname()
            else:
                host, port = a.endpoints[0]  # each serves TCP and UDP
                _, writer = await asyncio.open_connection(host, port, local_addr=(ATTACKER, 0))
                source = writer.get_extra_info("sockname")[:2]
                for _ in range(3 * THRESHOLD):
                    frame = _handshake_junk(rng, tag)
                    writer.write(len(frame).to_bytes(2, "big") + frame)
                await writer.drain()
            try:
                ev = await ra.wait(PeerMisbehaving, lambda ev: True, timeout=5)
                assert ev.address == source and ev.peer_id is None
                assert ev.failures >= THRESHOLD
            finally:
                if transport == "udp":
                    sock.close()
                else:
                    writer.close()
                    await writer.wait_closed()

    run(main())


def test_a_node_of_another_network_is_not_reported() -> None:
    """A misconfigured honest node (another network name) is dropped
    cheaply but is not junk: never reported, however often it tries."""

    async def main() -> None:
        async with node(misbehaving_threshold=THRESHOLD) as (a, ra):
            tag = handshake.network_tag("some-other-network")
            rng = random.Random(45)
            sock = attacker_socket()
            for _ in range(3 * THRESHOLD):
                sock.sendto(_handshake_junk(rng, tag), a.endpoints[0])
            await asyncio.sleep(0.5)
            assert not ra.of(PeerMisbehaving)
            sock.close()

    run(main())
