"""crust/wire.py: the long header defined once, read by the same accessors
the handshake, the punch and the UDP listener use."""

from __future__ import annotations

import pytest

from crust import _core, wire
from crust.handshake import Initiator, Responder, long_header_prefix
from crust.identity import Identity
from crust.nat.punch import PunchSession, is_punch, punch_session_id

NET = "crust-test"
ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)


def test_layout_matches_the_engine() -> None:
    # The C engine's connection ids and the header they sit in.
    assert wire.CID_LEN == _core.CID_LEN
    assert (wire.TAG, wire.DST_CID, wire.SRC_CID) == (slice(2, 6), slice(6, 14), slice(14, 22))
    assert wire.HEADER_LEN == 22


def test_handshake_packets_are_read_by_the_accessors() -> None:
    ini = Initiator(ALICE, NET, remote=None, local_cid=b"\xaa" * 8, now=0)
    [initiation] = ini.datagrams_to_send(0)
    assert wire.is_long_header(initiation) and not wire.is_stun_shaped(initiation)
    assert initiation[1:6] == long_header_prefix(NET)
    assert wire.dst_cid(initiation) == bytes(8)  # not yet known
    assert wire.src_cid(initiation) == b"\xaa" * 8
    resp = Responder(BOB, NET)
    resp.receive_datagram(initiation, ("192.0.2.1", 1), 0)
    [(response, _)] = resp.datagrams_to_send(0)
    # The response is addressed to the initiator's id: what udp.py routes on.
    assert wire.dst_cid(response) == b"\xaa" * 8
    assert wire.packet_type(response) == 2
    assert (
        wire.long_header(2, 1, response[wire.TAG], b"\xaa" * 8, wire.src_cid(response))
        == (response[: wire.HEADER_LEN])
    )


def test_punch_session_id_is_the_destination_id() -> None:
    s = PunchSession(
        key=bytes(32),
        session=b"\x07" * 8,
        responder=False,
        candidates=[("192.0.2.9", 9)],
        prefix=long_header_prefix(NET),
        now=0,
    )
    data = s.datagrams_to_send(0)[0][0]
    assert is_punch(data) and wire.is_long_header(data)
    assert punch_session_id(data) == wire.dst_cid(data) == b"\x07" * 8


@pytest.mark.parametrize("data", [b"", b"\xc1", bytes(13), b"\xc1" + bytes(20)])
def test_short_or_empty_datagrams_yield_no_id(data: bytes) -> None:
    # Untrusted input: a too-short datagram has no id rather than a partial one.
    assert wire.dst_cid(data) == b"" if len(data) < 14 else len(wire.dst_cid(data)) == 8
    assert wire.src_cid(data) == b""


def test_stun_is_told_apart_by_its_top_bits() -> None:
    binding_request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)
    assert wire.is_stun_shaped(binding_request) and not wire.is_long_header(binding_request)
    assert not wire.is_stun_shaped(b"\x40") and not wire.is_long_header(b"\x40")  # short header
    assert not wire.is_stun_shaped(b"") and not wire.is_long_header(b"")


def test_long_header_refuses_bad_fields() -> None:
    with pytest.raises(ValueError):
        wire.long_header(64, 1, bytes(4), bytes(8), bytes(8))
    with pytest.raises(ValueError):
        wire.long_header(1, 1, bytes(4), bytes(7), bytes(8))
