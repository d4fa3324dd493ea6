"""STUN codec and sans-IO client: RFC 5769 test vectors, crafted and
malformed packets, the RFC 8489 retransmission schedule, a brief fuzz, and
NAT classification from probe results."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crust.nat import stun
from crust.nat.classify import Behaviour, Probe, classify
from crust.nat.stun import (
    Attr,
    BindingFailed,
    BindingSucceeded,
    StunClient,
    StunParseError,
    decode,
    encode_binding_request,
    encode_binding_response,
)

# RFC 5769 §2.2: IPv4 response (XOR-MAPPED-ADDRESS 192.0.2.1:32853, with
# SOFTWARE, MESSAGE-INTEGRITY and FINGERPRINT).
RFC5769_V4 = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
# RFC 5769 §2.3: the IPv6 response (2001:db8:1234:5678:11:2233:4455:6677 port 32853).
RFC5769_V6 = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)


def test_rfc5769_vectors_decode() -> None:
    m = decode(RFC5769_V4)
    assert m.msg_type == stun.BINDING_SUCCESS
    assert m.address(Attr.XOR_MAPPED_ADDRESS) == ("192.0.2.1", 32853)
    assert m.get(Attr.SOFTWARE) == b"test vector"
    m6 = decode(RFC5769_V6)
    assert m6.address(Attr.XOR_MAPPED_ADDRESS) == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


def test_bad_fingerprint_is_rejected() -> None:
    bad = bytearray(RFC5769_V4)
    bad[-1] ^= 1
    with pytest.raises(StunParseError, match="FINGERPRINT"):
        decode(bytes(bad))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter than the 20-byte"),
        (RFC5769_V4[:19], "shorter than the 20-byte"),
        (b"\xc0" + RFC5769_V4[1:], "top two bits"),
        (RFC5769_V4[:4] + b"\0\0\0\0" + RFC5769_V4[8:], "magic cookie"),
        (RFC5769_V4[:2] + b"\x00\x3d" + RFC5769_V4[4:], "multiple of 4"),
        (RFC5769_V4[:2] + b"\x00\x40" + RFC5769_V4[4:], "header says 64"),
        (RFC5769_V4 + b"\0" * 4, "header says 60"),
        (b"\0" * 3000, "limit"),
    ],
)
def test_malformed_headers(data: bytes, why: str) -> None:
    with pytest.raises(StunParseError, match=why):
        decode(data)


def _msg(attrs: bytes, txid: bytes = b"t" * 12, msg_type: int = stun.BINDING_SUCCESS) -> bytes:
    return struct.pack("!HHI12s", msg_type, len(attrs), stun.MAGIC_COOKIE, txid) + attrs


def test_attribute_overrunning_the_message() -> None:
    with pytest.raises(StunParseError, match="claims 200 bytes"):
        decode(_msg(struct.pack("!HH", 0x0020, 200) + b"\0" * 4))


def test_fingerprint_not_last() -> None:
    attrs = struct.pack("!HH", Attr.FINGERPRINT, 4) + b"\0" * 4 + struct.pack("!HH", 0x8022, 0)
    with pytest.raises(StunParseError, match="last attribute"):
        decode(_msg(attrs))


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"\0\x01\0", "malformed"),
        (b"\x01\x01\0\x50\1\2\3\4", "malformed"),
        (b"\0\x03\0\x50\1\2\3\4", "family"),
        (b"\0\x01\0\x50\1\2\3", "address bytes"),
        (b"\0\x02\0\x50" + b"\1" * 4, "address bytes"),
    ],
)
def test_malformed_address_attributes(value: bytes, why: str) -> None:
    pad = b"\0" * (-len(value) % 4)
    m = decode(_msg(struct.pack("!HH", Attr.MAPPED_ADDRESS, len(value)) + value + pad))
    with pytest.raises(StunParseError, match=why):
        m.address(Attr.MAPPED_ADDRESS)


@pytest.mark.parametrize("addr", [("203.0.113.7", 1), ("2001:db8::1", 65535)])
@pytest.mark.parametrize("fingerprint", [False, True])
def test_response_roundtrip(addr: tuple[str, int], fingerprint: bool) -> None:
    txid = os.urandom(12)
    other = ("198.51.100.2", 3479)
    m = decode(
        encode_binding_response(txid, addr, plain=True, other=other, fingerprint=fingerprint)
    )
    assert m.txid == txid
    assert m.address(Attr.XOR_MAPPED_ADDRESS) == addr
    assert m.address(Attr.MAPPED_ADDRESS) == addr
    assert m.address(Attr.OTHER_ADDRESS) == other
    # The XOR form really is XORed: the raw bytes do not contain the port.
    raw = m.get(Attr.XOR_MAPPED_ADDRESS)
    assert raw is not None and raw[2:4] != addr[1].to_bytes(2, "big")


def test_request_carries_change_request_and_fingerprint() -> None:
    txid = b"x" * 12
    m = decode(encode_binding_request(txid, change_ip=True, change_port=True))
    assert m.msg_type == stun.BINDING_REQUEST
    assert m.get(Attr.CHANGE_REQUEST) == b"\0\0\0\x06"
    assert m.attrs[-1][0] == Attr.FINGERPRINT
    assert decode(encode_binding_request(txid, fingerprint=False)).attrs == ()


SERVER = ("198.51.100.1", 3478)


def test_retransmission_schedule_follows_rfc8489() -> None:
    """RTO 500 ms, Rc 7, Rm 16: sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5,
    and the transaction fails at 39.5 s."""
    c = StunClient()
    txid = c.binding(SERVER, 100.0)
    sends = []
    now = 100.0
    while c.active:
        if c.datagrams_to_send(now):
            sends.append(round(now - 100.0, 6))
        c.handle_timer(now)
        timer = c.get_timer()
        if timer is None:
            break
        now = timer
    assert sends == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    ev = c.next_event()
    assert isinstance(ev, BindingFailed) and ev.txid == txid and ev.reason == "timeout"
    assert ev.sent == 7 and round(now - 100.0, 6) == 39.5


def test_answer_matched_by_txid_from_any_source() -> None:
    c = StunClient(rto=0.1)
    txid = c.binding(SERVER, 0.0)
    [(req, to)] = c.datagrams_to_send(0.0)
    assert to == SERVER and decode(req).txid == txid
    # A stranger's answer to another transaction and junk are ignored.
    assert not c.receive_datagram(encode_binding_response(os.urandom(12), ("1.2.3.4", 5)), to, 0.01)
    assert not c.receive_datagram(b"\x80junk" * 10, to, 0.01)
    assert c.ignored == 2
    alt = ("198.51.100.2", 3479)
    assert c.receive_datagram(encode_binding_response(txid, ("203.0.113.9", 4000)), alt, 0.03)
    ev = c.next_event()
    assert isinstance(ev, BindingSucceeded)
    assert ev.mapped == ("203.0.113.9", 4000) and ev.source == alt
    assert ev.rtt == pytest.approx(0.03) and c.active == 0
    # A duplicate answer after completion counts as unrelated.
    assert not c.receive_datagram(encode_binding_response(txid, ("203.0.113.9", 4000)), alt, 0.04)


def test_rtt_unknown_after_retransmission_and_error_response() -> None:
    c = StunClient(rto=0.1)
    txid = c.binding(SERVER, 0.0)
    c.datagrams_to_send(0.0)
    c.datagrams_to_send(0.1)
    c.receive_datagram(
        encode_binding_response(txid, ("203.0.113.9", 4000), xor=False, plain=True), SERVER, 0.15
    )
    ev = c.next_event()
    assert isinstance(ev, BindingSucceeded) and ev.rtt is None and ev.sent == 2
    txid = c.binding(SERVER, 1.0)
    err = stun.encode_message(
        stun.BINDING_ERROR, txid, [(Attr.ERROR_CODE, b"\0\0\x04\x00Bad Request")]
    )
    assert c.receive_datagram(err, SERVER, 1.1)
    ev2 = c.next_event()
    assert isinstance(ev2, BindingFailed) and ev2.reason == "error 400 Bad Request"


def test_response_without_mapped_address_is_not_an_answer() -> None:
    c = StunClient()
    txid = c.binding(SERVER, 0.0)
    assert not c.receive_datagram(stun.encode_message(stun.BINDING_SUCCESS, txid, []), SERVER, 0)
    assert c.active == 1 and c.next_event() is None


@pytest.mark.parametrize(
    ("kw", "bad"), [({"rto": 0}, "rto"), ({"rc": 0}, "rc"), ({"rm": 99}, "rm")]
)
def test_client_parameters_validated(kw: dict[str, float], bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        StunClient(**kw)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_decode_never_crashes(data: bytes) -> None:
    c = StunClient()
    c.binding(SERVER, 0.0, txid=b"t" * 12)
    for blob in (data, _msg(data), _msg(data + b"\0" * (-len(data) % 4))):
        try:
            m = decode(blob)
            for attr in (Attr.XOR_MAPPED_ADDRESS, Attr.MAPPED_ADDRESS, Attr.OTHER_ADDRESS):
                m.address(attr)
        except StunParseError:
            pass
        c.receive_datagram(blob, SERVER, 0.0)


def test_fuzz_mutated_responses() -> None:
    rng = random.Random(7)
    txid = b"t" * 12
    base = encode_binding_response(
        txid, ("203.0.113.9", 4000), plain=True, other=("198.51.100.2", 3479), fingerprint=True
    )
    for _ in range(3000):
        b = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        c = StunClient()
        c.binding(SERVER, 0.0, txid=txid)
        c.receive_datagram(bytes(b[: rng.randint(0, len(b))]), SERVER, 0.0)


# -- classification ------------------------------------------------------------

LOCAL = ("10.0.0.2", 5000)
PRI = ("11.255.0.1", 3478)
ALT = ("11.255.0.2", 3479)


def probe(test: str, mapped: tuple[str, int] | None, server: tuple[str, int] = PRI) -> Probe:
    return Probe(test, server, mapped, server if mapped else None, ALT, 0.01)


def test_classify_cone() -> None:
    m = ("11.0.1.2", 5000)
    b = classify(
        LOCAL,
        [
            probe("I", m),
            probe("II", m),
            probe("III", m),
            probe("filter-base", ("11.0.1.2", 5001)),
            probe("filter-ip-port", None),
            probe("filter-port", None),
        ],
    )
    assert (b.behind_nat, b.mapping, b.filtering, b.port_preserving, b.kind) == (
        True,
        Behaviour.ENDPOINT_INDEPENDENT,
        Behaviour.ADDRESS_AND_PORT_DEPENDENT,
        True,
        "cone",
    )
    assert b.reflexive == (m,)


def test_classify_symmetric_and_address_dependent() -> None:
    b = classify(
        LOCAL,
        [
            probe("I", ("11.0.1.2", 30001)),
            probe("II", ("11.0.1.2", 30002)),
            probe("III", ("11.0.1.2", 30003)),
        ],
    )
    assert b.mapping is Behaviour.ADDRESS_AND_PORT_DEPENDENT and b.kind == "symmetric"
    assert b.port_preserving is False and b.filtering is Behaviour.UNKNOWN
    b = classify(
        LOCAL,
        [
            probe("I", ("11.0.1.2", 30001)),
            probe("II", ("11.0.1.2", 30002)),
            probe("III", ("11.0.1.2", 30002)),
        ],
    )
    assert b.mapping is Behaviour.ADDRESS_DEPENDENT


def test_classify_open_blocked_and_two_plain_servers() -> None:
    b = classify(
        LOCAL,
        [
            probe("I", LOCAL),
            probe("II", LOCAL),
            probe("III", LOCAL),
            probe("filter-base", LOCAL),
            probe("filter-ip-port", LOCAL),
        ],
    )
    assert (b.behind_nat, b.filtering, b.kind) == (False, Behaviour.ENDPOINT_INDEPENDENT, "open")
    # No translation, filtering not tested (the service's own probe): open.
    b = classify(LOCAL, [probe("I", LOCAL), probe("II", LOCAL), probe("III", LOCAL)])
    assert (b.kind, b.filtering) == ("open", Behaviour.UNKNOWN)
    # No translation but a filtering firewall: punchable like a cone.
    b = classify(
        LOCAL,
        [probe("I", LOCAL), probe("filter-base", LOCAL), probe("filter-ip-port", None),
         probe("filter-port", None)],
    )  # fmt: skip
    assert (b.behind_nat, b.kind) == (False, "cone")
    b = classify(LOCAL, [probe("I", None)])
    assert b.kind == "blocked" and b.udp_blocked and b.mapping is Behaviour.UNKNOWN
    b = classify(LOCAL, [probe("I", ("11.0.1.2", 1)), probe("II-server", ("11.0.1.2", 2), ALT)])
    assert b.mapping is Behaviour.DEPENDENT and b.kind == "symmetric"
    b = classify(
        LOCAL,
        [
            probe("I", ("11.0.1.2", 1)),
            probe("filter-base", ("11.0.1.2", 1)),
            probe("filter-ip-port", None),
            probe("filter-port", ("11.0.1.2", 1)),
        ],
    )
    assert b.mapping is Behaviour.UNKNOWN and b.filtering is Behaviour.ADDRESS_DEPENDENT


def test_stun_socket_against_a_loopback_responder() -> None:
    """The asyncio glue end to end against a tiny responder that ignores the
    first request (so the client has to retransmit)."""
    from crust.asyncio.stun import StunSocket
    from crust.nat.stun import StunFailed

    async def main() -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind(("127.0.0.1", 0))
        srv.setblocking(False)
        loop = asyncio.get_running_loop()
        seen = 0

        def on_read() -> None:
            nonlocal seen
            data, addr = srv.recvfrom(2048)
            seen += 1
            if seen > 1:
                srv.sendto(encode_binding_response(decode(data).txid, addr), addr)

        loop.add_reader(srv.fileno(), on_read)
        try:
            async with await StunSocket.open(("127.0.0.1", 0), rto=0.05, rc=4, rm=2) as s:
                ok = await s.binding(srv.getsockname())
                assert ok.mapped == s.local_address and ok.sent == 2 and ok.rtt is None
            async with await StunSocket.open(("127.0.0.1", 0), rto=0.02, rc=2, rm=2) as s:
                dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                dead.bind(("127.0.0.1", 0))
                with dead, pytest.raises(StunFailed, match="timeout"):
                    await s.binding(dead.getsockname())
        finally:
            loop.remove_reader(srv.fileno())
            srv.close()

    asyncio.run(asyncio.wait_for(main(), 10))
