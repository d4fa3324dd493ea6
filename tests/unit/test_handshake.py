"""crust.handshake (and the identities it authenticates): XX and IK end to
end into real engine connections, peer-id binding, clear failures, and the
denial-of-service rules: silence for junk, no DH before mac1, at most 3x
amplification, cookies under load, bounded state, retransmits without new
work."""

from __future__ import annotations

import logging
import os
import random
import stat
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from crust import _core, noise
from crust.handshake import (
    INITIATION_SIZE,
    CookiePolicy,
    HandshakeResult,
    HandshakeTimeout,
    Initiator,
    InitiatorState,
    MalformedPacket,
    Payload,
    Responder,
    TransportParams,
    _labelled_key,
    _mac,
    decode_payload_untrusted,
    encode_payload,
    network_tag,
)
from crust.identity import Identity, IdentityError, InvalidPeerId, PeerId
from crust.wire import Address as Addr

ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)
CAROL = Identity.from_seed(b"\x03" * 32)
NET = "crust-test"
A_ADDR = ("192.0.2.1", 4000)
B_ADDR = ("198.51.100.2", 5000)
CID = b"\xaa" * 8

Drop = Callable[[bytes], bool]


def answer(resp: Responder, data: bytes, addr: Addr, now: int) -> list[tuple[bytes, Addr]]:
    """One datagram in, the replies out: receive, then drain (as the
    driver does after every datagram)."""
    resp.receive_datagram(data, addr, now)
    return resp.datagrams_to_send(now)


def initiator(remote: PeerId | None = None, network: str = NET, now: int = 0) -> Initiator:
    return Initiator(
        ALICE, network, remote=remote, local_cid=CID, now=now, addr=B_ADDR, timeout_us=10_000_000
    )


class Wire:
    """Carries datagrams between one Initiator and one Responder and counts
    the bytes each address sent and was sent."""

    def __init__(self, ini: Initiator, resp: Responder, drop: Drop | None = None) -> None:
        self.ini, self.resp, self.drop = ini, resp, drop
        self.from_a = 0  # bytes the responder received from A
        self.to_a = 0  # bytes the responder sent to A
        self.sent: list[bytes] = []  # by the initiator
        self.replies: list[bytes] = []

    def exchange(self, now: int) -> None:
        for _ in range(10):
            out = self.ini.datagrams_to_send(now)
            if not out:
                return
            for d in out:
                self.sent.append(d)
                if self.drop is not None and self.drop(d):
                    continue
                self.from_a += len(d)
                for reply, addr in answer(self.resp, d, A_ADDR, now):
                    assert addr == A_ADDR
                    assert len(reply) <= 3 * len(d)
                    self.to_a += len(reply)
                    self.replies.append(reply)
                    if self.drop is None or not self.drop(reply):
                        self.ini.receive_datagram(reply, B_ADDR, now)

    def run(self, now: int = 0) -> int:
        """Exchange and run the initiator's timers until it is done."""
        while True:
            self.exchange(now)
            timer = self.ini.get_timer()
            if timer is None:
                return now
            now = max(now, timer)
            self.ini.handle_timer(now)


class X25519Calls:
    """X25519 operations done by the C Noise core (csrc/noise.c) since the
    last ``clear()``: ``["dh"]`` DHs, ``["keygen"]`` ephemeral key pairs."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._base = _core.noise_x25519_counts()

    def __getitem__(self, kind: str) -> int:
        now = _core.noise_x25519_counts()
        i = ("dh", "keygen").index(kind)
        return now[i] - self._base[i]

    def values(self) -> list[int]:
        return [self["dh"], self["keygen"]]


@pytest.fixture
def dh_calls() -> X25519Calls:
    """Counts X25519 operations (DH and key generation) inside crust.noise."""
    return X25519Calls()


def pump(a: _core.Connection, b: _core.Connection, now: int) -> None:
    for _ in range(20):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for d in src.datagrams_to_send(now):
                dst.receive_datagram(d, now)
                moved = True
        if not moved:
            return


def messages(conn: _core.Connection) -> list[bytes]:
    return [ev[2] for ev in conn.poll_events() if ev[0] == _core.EV_MESSAGE and ev[2] is not None]


def connection(result: HandshakeResult) -> _core.Connection:
    conn = _core.Connection(result.local_cid, result.remote_cid, 0)
    k = result.keys
    conn.set_keys(k.phase, k.aead, k.tx_key, k.tx_iv, k.rx_key, k.rx_iv)
    return conn


# ---- complete handshakes ---------------------------------------------------------


@pytest.mark.parametrize("pattern", ["XX", "IK"])
def test_handshake_completes_and_keys_work_in_the_engine(pattern: str) -> None:
    resp = Responder(BOB, NET)
    ini = initiator(remote=BOB.peer_id if pattern == "IK" else None)
    Wire(ini, resp).exchange(0)
    ri = ini.result
    (rr,) = resp.take_completed()
    assert ri is not None and resp.take_completed() == []
    assert ini.state is (InitiatorState.FINISHING if pattern == "XX" else InitiatorState.DONE)
    ini.confirm()
    assert ini.state is InitiatorState.DONE and ini.get_timer() is None

    assert ri.peer_id == BOB.peer_id and rr.peer_id == ALICE.peer_id
    assert ri.pattern == rr.pattern == pattern
    assert (ri.local_cid, ri.remote_cid) == (rr.remote_cid, rr.local_cid) and ri.local_cid == CID
    assert ri.handshake_hash == rr.handshake_hash
    assert (ri.tx_key, ri.tx_iv) == (rr.rx_key, rr.rx_iv) != (rr.tx_key, rr.tx_iv)
    assert (ri.rx_key, ri.rx_iv) == (rr.tx_key, rr.tx_iv)
    assert ri.peer_addr == B_ADDR and rr.peer_addr == A_ADDR
    # Reflexive addresses: each side learns where the other saw it.
    assert ri.observed_addr == A_ADDR and rr.observed_addr == B_ADDR
    assert ri.peer_params == rr.peer_params == TransportParams()
    assert "tx_key" not in repr(ri) and ri.tx_key.hex() not in repr(ri)

    a, b = connection(ri), connection(rr)
    a.send(b"hello from alice", now=0)
    b.send(b"hello from bob", now=0)
    pump(a, b, 0)
    assert messages(b) == [b"hello from alice"] and messages(a) == [b"hello from bob"]

    # The key ratchet: both sides derive the same next generations.
    ki, kr = ri.rekey(), rr.rekey()
    assert ki.generation == 1 and ki.phase == 1
    assert (ki.tx_key, ki.tx_iv, ki.rx_key) == (kr.rx_key, kr.rx_iv, kr.tx_key)
    assert ki.tx_key != ri.tx_key and ki.next().tx_key == kr.next().rx_key
    assert ri.keys_for_generation(5) == ki.next().next().next().next()
    assert ri.keys_for_generation(2) == ki.next() and ri.keys_for_generation(0) == ri.keys
    assert rr.keys_for_generation(5).rx_key == ri.keys_for_generation(5).tx_key
    for conn, k in ((a, ki), (b, kr)):
        conn.set_keys(k.phase, k.aead, k.tx_key, k.tx_iv, k.rx_key, k.rx_iv)
    a.update_keys(1_000)
    a.send(b"under generation 1", now=1_000)
    pump(a, b, 1_000)
    assert messages(b) == [b"under generation 1"]
    assert a.stats()["key_phase"] == 1


def test_lost_finish_is_repeated_until_confirmed() -> None:
    resp = Responder(BOB, NET)
    ini = initiator()
    finishes = 0

    def drop_first_finish(d: bytes) -> bool:
        nonlocal finishes
        if d[0] == 0xC3:
            finishes += 1
            return finishes == 1
        return False

    wire = Wire(ini, resp, drop_first_finish)
    wire.exchange(0)
    assert ini.result is not None and resp.take_completed() == []
    now = ini.get_timer()
    assert now == 500_000
    ini.handle_timer(now)
    wire.exchange(now)
    assert len(resp.take_completed()) == 1 and finishes == 2
    assert resp.stats["completed"] == 1
    # A further copy (it crossed the confirmation) is recognised, not redone.
    ini.handle_timer(ini.get_timer() or 0)
    wire.exchange(2_000_000)
    assert resp.stats["duplicate_finish"] == 1 and resp.take_completed() == []
    ini.confirm()
    assert ini.get_timer() is None


def test_unanswered_initiation_backs_off_then_fails_clearly() -> None:
    ini = initiator()
    sent: list[int] = []
    now = 0
    while ini.get_timer() is not None:
        sent += [now] * len(ini.datagrams_to_send(now))
        now = ini.get_timer() or now
        ini.handle_timer(now)
    assert sent == [0, 500_000, 1_500_000, 3_500_000, 7_500_000]
    assert ini.state is InitiatorState.FAILED and isinstance(ini.error, HandshakeTimeout)
    assert isinstance(ini.error, TimeoutError)
    assert "5 initiations" in str(ini.error) and "10.0 s" in str(ini.error)


# ---- identities are bound ----------------------------------------------------------


def test_responder_claiming_another_identity_is_refused() -> None:
    resp = Responder(BOB, NET)
    resp._identity = CAROL  # says Carol, holds Bob's Noise key
    ini = initiator()
    Wire(ini, resp).exchange(0)
    assert ini.state is InitiatorState.FAILED and ini.result is None
    assert ini.error is not None and "does not belong to it" in str(ini.error)
    assert str(CAROL.peer_id) in str(ini.error)


def test_initiator_claiming_another_identity_is_refused() -> None:
    liar = Identity.from_seed(ALICE.seed)
    liar._peer_id = CAROL.peer_id  # says Carol, holds Alice's key
    for remote in (None, BOB.peer_id):
        resp = Responder(BOB, NET)
        ini = Initiator(liar, NET, remote=remote, local_cid=CID, now=0)
        Wire(ini, resp).exchange(0)
        assert resp.stats["identity"] == 1
        assert resp.take_completed() == [] and resp.stats["completed"] == 0


def test_ik_to_the_wrong_key_fails_with_a_clear_message() -> None:
    # Carol's id, Bob's address: Bob cannot even verify mac1 (keyed by the
    # responder's key in IK), so he stays silent, as to any stranger.
    resp = Responder(BOB, NET)
    ini = initiator(remote=CAROL.peer_id)
    Wire(ini, resp).run()
    assert resp.stats["mac1"] == 5 and resp.pending == 0
    assert isinstance(ini.error, HandshakeTimeout)
    assert f"not {CAROL.peer_id}" in str(ini.error)


# ---- foreign networks and versions --------------------------------------------------


def test_wrong_network_name_fails_on_both_sides(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="crust.handshake")
    resp = Responder(BOB, "beta")
    ini = initiator(network="alpha")
    Wire(ini, resp).run()
    assert resp.stats["foreign_network"] == 5 and resp.pending == 0
    logged = caplog.text
    assert network_tag("alpha").hex() in logged and network_tag("beta").hex() in logged
    assert "'beta'" in logged
    assert isinstance(ini.error, HandshakeTimeout)
    message = str(ini.error)
    assert "different network name (ours is 'alpha')" in message
    assert "protocol version (ours is 1)" in message and "offline" in message


def test_other_protocol_version_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="crust.handshake")
    resp = Responder(BOB, NET)
    packet = bytearray(initiator().datagrams_to_send(0)[0])
    packet[1] = 2
    assert answer(resp, bytes(packet), A_ADDR, 0) == []
    assert resp.stats["version"] == 1
    assert "protocol version 2, ours is 1" in caplog.text


# ---- denial of service ---------------------------------------------------------------


def valid_packets() -> list[bytes]:
    """Every packet of an XX and an IK handshake."""
    resp = Responder(BOB, NET)
    out: list[bytes] = []
    for remote in (None, BOB.peer_id):
        wire = Wire(initiator(remote), resp)
        wire.exchange(0)
        out += wire.sent + wire.replies
    return out


def junk(rng: random.Random, tag: bytes) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randrange(1500))
    size = rng.choice([rng.randrange(90), rng.randrange(90, 511), INITIATION_SIZE, 1200])
    head = bytes((rng.choice([0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC0, 0xFF]), 1)) + tag
    if kind == 1:
        head = head[:2] + rng.randbytes(4)
    return (head + rng.randbytes(max(0, size - len(head))))[:size]


def test_random_datagrams_get_silence_and_cost_no_dh(dh_calls: X25519Calls) -> None:
    resp = Responder(BOB, NET)
    rng = random.Random(1)
    tag = network_tag(NET)
    n = 100_000
    for i in range(n):
        addr = (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1000 + i % 50000)
        assert answer(resp, junk(rng, tag), addr, i * 10) == []
    assert sum(dh_calls.values()) == 0
    assert resp.pending == 0 and resp.take_completed() == [] and not resp._sources
    st = resp.stats
    dropped = sum(v for k, v in st.items() if k != "datagrams")
    assert st["datagrams"] == dropped == n
    assert min(st["malformed"], st["foreign_network"], st["mac1"], st["short_initiation"]) > 0


def mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    kind = rng.randrange(5)
    if kind == 0:  # flip bits anywhere mac1 covers, or mac1 itself
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data) - 16)] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del data[rng.randrange(1, len(data)) :]
    elif kind == 2:
        data += rng.randbytes(rng.randint(1, 64))
    elif kind == 3:  # overwrite a header field
        at = rng.choice([0, 1, 2, 6, 14, 21])
        data[at] = (data[at] + rng.randint(1, 255)) % 256
    else:  # overwrite a stretch that starts before mac2 (mac2 alone is
        # not authenticated by mac1: changing only it is a new, valid packet)
        a = rng.randrange(len(data) - 16)
        b = rng.randint(a + 1, len(data))
        data[a:b] = bytes(x ^ 0xFF for x in data[a:b])
    return bytes(data)


def remac(packet: bytes, key: bytes) -> bytes:
    body = packet[:-32]
    return body + _mac(key, body) + packet[-16:]


def test_mutated_handshake_packets_get_silence(dh_calls: X25519Calls) -> None:
    packets = valid_packets()
    # A handshake in progress, whose finish the mutants will target. One
    # source sends every mutant at once: it may use the whole unverified
    # budget, so that each mutant with a valid mac1 reaches Noise.
    resp = Responder(BOB, NET, cookie_policy=CookiePolicy(source_share=1.0))
    ini = initiator()
    held: list[bytes] = []
    Wire(ini, resp, drop=lambda d: d[0] == 0xC3 and held.append(d) is None).exchange(0)
    finish = held[0]
    packets.append(finish)
    before = dict(resp.stats)
    dh_calls.clear()
    rng = random.Random(2)
    for i in range(10_000):
        mutant = mutate(rng, rng.choice(packets))
        assert answer(resp, mutant, A_ADDR, 1 + i) == [], mutant.hex()
    assert sum(dh_calls.values()) == 0
    assert resp.pending == 1 and resp.take_completed() == []
    assert resp.stats["datagrams"] - before["datagrams"] == 10_000

    # With a correct mac1 (someone who knows the network name), mutants of
    # the Noise part fail Noise; the real finish still completes after.
    xx_key = _labelled_key(b"crust mac1", NET.encode(), None)
    ik_key = _labelled_key(b"crust mac1", NET.encode(), BOB.peer_id)
    ik_initiation = next(p for p in packets if p[0] == 0xC5)
    for i in range(300):
        base, key = (finish, xx_key) if i % 2 else (ik_initiation, ik_key)
        data = bytearray(base)
        data[rng.randrange(22, len(data) - 32)] ^= 1 << rng.randrange(8)
        assert answer(resp, remac(bytes(data), key), A_ADDR, 20_000) == []
    assert resp.stats["noise"] == 300 and resp.pending == 1
    answer(resp, finish, A_ADDR, 30_000)
    assert len(resp.take_completed()) == 1


def test_amplification_stays_under_3x_with_cookies_loss_and_retransmits() -> None:
    resp = Responder(BOB, NET, cookie_policy=CookiePolicy(rate=1.0))
    # Use up the one initiation per second the policy allows.
    Wire(Initiator(CAROL, NET, remote=None, local_cid=b"c" * 8, now=0), resp).exchange(0)
    seen: Counter[int] = Counter()

    def lose_first_of_each(d: bytes) -> bool:
        seen[d[0]] += 1
        return d[0] in (0xC2, 0xC3) and seen[d[0]] == 1

    ini = initiator()
    wire = Wire(ini, resp, lose_first_of_each)
    wire.run()
    carol, alice = resp.take_completed()
    assert carol.peer_id == CAROL.peer_id
    assert ini.result is not None and alice.peer_id == ALICE.peer_id
    assert resp.stats["cookie_replies"] == 1 and resp.stats["retransmits"] >= 1
    assert seen[0xC4] == 1 and seen[0xC2] == 2 and seen[0xC3] >= 2
    assert wire.to_a <= 3 * wire.from_a

    # A spoofed victim gets at most 3x what the attacker spent, per packet.
    victim = ("203.0.113.9", 53)
    for packet in valid_packets():
        for reply, _ in answer(resp, packet, victim, 10):
            assert len(reply) <= 3 * len(packet)
    # Initiations below the padded size are not answered at all.
    short = initiator().datagrams_to_send(0)[0][: INITIATION_SIZE - 1]
    assert answer(resp, short, A_ADDR, 10) == []
    assert resp.stats["short_initiation"] == 1


def flood_initiation(template: bytes, i: int) -> bytes:
    """A valid-looking XX initiation with its own ephemeral key, as an
    attacker who knows the network name would make."""
    body = bytearray(template[:-32])
    body[14:22] = i.to_bytes(8, "big")
    body[22:54] = os.urandom(32)
    key = _labelled_key(b"crust mac1", NET.encode(), None)
    return bytes(body) + _mac(key, bytes(body)) + bytes(16)


def test_flood_gets_cookie_replies_without_dh(dh_calls: X25519Calls) -> None:
    rate = 100
    resp = Responder(BOB, NET, cookie_policy=CookiePolicy(rate=rate))
    template = initiator().datagrams_to_send(0)[0]
    dh_calls.clear()
    now = 0
    cookie_replies = 0
    for i in range(5_000):
        now = i * 100  # 10,000 initiations/s for 0.5 s
        addr = (f"10.9.{i >> 8 & 255}.{i & 255}", 1024 + i)
        for reply, _ in answer(resp, flood_initiation(template, i), addr, now):
            if reply[0] == 0xC4:
                cookie_replies += 1
                assert len(reply) == 78
    processed = resp.stats["completed"] + resp.pending
    assert rate <= processed <= rate * 1.5 + 1  # the burst, then the refill
    assert cookie_replies == resp.stats["cookie_replies"] == 5_000 - processed
    assert dh_calls["dh"] == 2 * processed  # XX message 2: ee, es; cookies: none
    assert dh_calls["keygen"] == processed

    # A legitimate initiator, arriving in the flood, still gets through.
    ini = Initiator(ALICE, NET, remote=None, local_cid=CID, now=now, addr=B_ADDR)
    for _ in range(rate * 2):  # keep the responder under load
        answer(resp, flood_initiation(template, 9_999), ("10.8.0.1", 1), now)
    wire = Wire(ini, resp)
    wire.exchange(now)
    assert ini.stats["cookie_replies"] == 1
    assert ini.result is not None and ini.result.peer_id == BOB.peer_id
    assert len(resp.take_completed()) == 1


def test_completed_handshakes_do_not_put_the_responder_under_load() -> None:
    """Records of completed handshakes are kept (15 s) to answer repeats; they
    are not state an attacker made us hold, so a busy honest listener must
    not start demanding cookies because of them. Unfinished ones count."""
    resp = Responder(BOB, NET, max_pending=64, cookie_policy=CookiePolicy(rate=1e6))
    for i in range(60):  # above 3/4 of the table
        ini = Initiator(
            ALICE, NET, remote=None, local_cid=bytes([i + 1]) * 8, now=0, addr=B_ADDR
        )
        Wire(ini, resp).exchange(0)
        assert ini.result is not None and ini.stats["cookie_replies"] == 0
    assert resp.pending == 60 and resp.unfinished == 0
    assert resp.stats["cookie_replies"] == 0 and len(resp.take_completed()) == 60
    template = initiator().datagrams_to_send(0)[0]
    for i in range(48):  # initiations never finished: 3/4 of the table
        answer(resp, flood_initiation(template, i), (f"10.7.0.{i}", 1), 0)
    assert resp.unfinished == 48
    ini = Initiator(ALICE, NET, remote=None, local_cid=CID, now=0, addr=B_ADDR)
    Wire(ini, resp).exchange(0)
    assert ini.stats["cookie_replies"] == 1 and ini.result is not None


def test_cookie_replies_cannot_make_the_initiator_chatty() -> None:
    busy = Responder(BOB, NET, cookie_policy=CookiePolicy(rate=1e-3))
    ini = initiator()
    initiation = ini.datagrams_to_send(0)[0]
    replies = [answer(busy, initiation, (f"10.6.0.{n}", n), 0)[0][0] for n in range(5)]
    for reply in replies:  # five different cookies (one per address)
        ini.receive_datagram(reply, B_ADDR, 0)
    assert ini.stats["cookie_replies"] == 5
    assert len(ini.datagrams_to_send(0)) == 1  # one immediate retry, not five
    forged = bytearray(replies[0])
    forged[-1] ^= 1
    ini.receive_datagram(bytes(forged), B_ADDR, 0)
    assert ini.stats["cookie_replies"] == 5 and ini.stats["ignored"] == 1


def test_retransmitted_initiation_gets_the_same_response(dh_calls: X25519Calls) -> None:
    for remote, dh_per_handshake in ((None, 2), (BOB.peer_id, 4)):
        resp = Responder(BOB, NET)
        initiation = initiator(remote).datagrams_to_send(0)[0]
        dh_calls.clear()
        first = answer(resp, initiation, A_ADDR, 0)
        again = answer(resp, initiation, A_ADDR, 400_000)
        # A copy from another address is a replay: no answer there.
        moved = answer(resp, initiation, ("192.0.2.77", 4001), 800_000)
        assert first[0][0] == again[0][0] and again[0][1] == A_ADDR and moved == []
        assert dh_calls["dh"] == dh_per_handshake and dh_calls["keygen"] == 1
        assert resp.stats["retransmits"] == 1 and resp.stats["replayed"] == 1
        assert resp.pending == 1
        assert resp.stats["completed"] == (1 if remote else 0)


def test_pending_table_is_bounded_and_expires() -> None:
    resp = Responder(BOB, NET, max_pending=64, pending_timeout_us=1_000_000)
    template = initiator().datagrams_to_send(0)[0]
    for i in range(500):
        answer(resp, flood_initiation(template, i), (f"10.7.0.{i % 250}", i), i)
    # Past three quarters full, new initiations must bring a cookie.
    assert resp.pending == 48 and resp.stats["cookie_replies"] == 500 - 48
    answer(resp, b"", A_ADDR, 2_000_000)
    assert resp.pending == 0 and not resp._by_cid


def test_responder_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="255"):
        Responder(BOB, "x" * 256)
    with pytest.raises(ValueError, match="rates"):
        CookiePolicy(rate=0)
    with pytest.raises(ValueError, match="local_cid"):
        Initiator(ALICE, NET, remote=None, local_cid=b"short", now=0)


# ---- payloads ----------------------------------------------------------------------


def tlv(ptype: int, value: bytes) -> bytes:
    return bytes((ptype,)) + len(value).to_bytes(2, "big") + value


def test_payload_round_trip_and_strictness() -> None:
    p = Payload(ALICE.peer_id, CID, TransportParams(1000, 5000), ("2001:db8::1", 443))
    raw = encode_payload(p, pad_to=300)
    assert len(raw) == 300 and decode_payload_untrusted(raw) == p
    v4 = Payload(ALICE.peer_id, CID, TransportParams(), ("203.0.113.5", 1))
    assert decode_payload_untrusted(encode_payload(v4)) == v4
    no_addr = Payload(ALICE.peer_id, CID, TransportParams(), ("not-an-ip", 1))
    assert decode_payload_untrusted(encode_payload(no_addr)).observed_addr is None
    # Unknown entries are skipped, so later versions can add some.
    assert decode_payload_untrusted(tlv(0x42, b"hi") + raw) == p

    ident, cid = tlv(1, ALICE.peer_id.key), tlv(2, CID)
    mms, window = tlv(3, (1000).to_bytes(8, "big")), tlv(4, (5000).to_bytes(8, "big"))
    assert decode_payload_untrusted(ident + cid + mms + window).observed_addr is None
    bad = {
        "entry 1 repeated": ident + ident + cid + mms + window,
        "lacks required entry 1": cid + mms + window,
        "claims 9 bytes, 8 left": ident + cid + mms + b"\x04\x00\x09" + bytes(8),
        "cut short": ident + cid + mms + window + b"\x07\x00",
        "entry 3 is 7 bytes, expected 8": ident + cid + tlv(3, bytes(7)) + window,
        "identity: not a valid Ed25519": tlv(1, bytes(32)) + cid + mms + window,
        "out of range": ident + cid + tlv(3, bytes(8)) + window,
        "expected 6 or 18": ident + cid + mms + window + tlv(5, b"abc"),
    }
    for why, data in bad.items():
        with pytest.raises(MalformedPacket, match=why):
            decode_payload_untrusted(data)


# ---- identities and peer ids -------------------------------------------------------


def test_peer_id_text_form() -> None:
    pid = ALICE.peer_id
    text = str(pid)
    assert len(text) == 56 and text == text.lower() and "=" not in text
    assert PeerId.parse(f"  {text.upper()}\n") == pid and pid.short == text[:8]
    assert bytes(pid) == pid.key and len(pid.key) == 32
    assert {pid: 1}[PeerId(bytes(pid))] == 1 and repr(pid) == f"PeerId('{text}')"
    with pytest.raises(InvalidPeerId, match="56 characters; this one has 55"):
        PeerId.parse(text[:-1])
    with pytest.raises(InvalidPeerId, match="invalid character '1' at position 4"):
        PeerId.parse(text[:3] + "1" + text[4:])
    typo = text[:10] + ("a" if text[10] != "a" else "b") + text[11:]
    with pytest.raises(InvalidPeerId, match=r"checksum mismatch \(a typo\?\)"):
        PeerId.parse(typo)
    with pytest.raises(InvalidPeerId, match="not a valid Ed25519"):
        PeerId(bytes(32))
    assert isinstance(InvalidPeerId("x"), ValueError)


def test_identity_keys_and_signatures() -> None:
    assert Identity.from_seed(b"\x01" * 32).peer_id == ALICE.peer_id
    assert Identity.generate().peer_id != Identity.generate().peer_id
    sig = ALICE.sign(b"data")
    assert ALICE.peer_id.verify(b"data", sig) and not BOB.peer_id.verify(b"data", sig)
    assert not ALICE.peer_id.verify(b"other", sig)
    # The Noise static key is the X25519 form of the Ed25519 identity.
    assert noise.public_key(ALICE.x25519_private()) == ALICE.peer_id.x25519_public()
    assert ALICE.seed.hex() not in repr(ALICE)


def test_identity_file_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "identity.key"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert Identity.load_or_create(path).peer_id == first.peer_id
    assert str(first.peer_id) in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["identity.key"]


def test_identity_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    identity = Identity.load_or_create()
    assert (tmp_path / "crust" / "identity.key").exists()
    assert Identity.load_or_create().peer_id == identity.peer_id


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage\n", b"crust identity v1\nseed zz\npeer-id x\n", b"\xff\xfe"],
)
def test_damaged_identity_file_raises_and_is_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    with pytest.raises(IdentityError, match="damaged") as info:
        Identity.load_or_create(path)
    assert str(path) in str(info.value) and info.value.path == path
    assert path.read_bytes() == content


def test_identity_file_with_mismatched_peer_id(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    Identity.load_or_create(path)
    lines = path.read_text().splitlines()
    lines[1] = "seed " + "00" * 32
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(IdentityError, match="does not match the seed"):
        Identity.load_or_create(path)


def test_unreadable_identity_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.mkdir()  # unreadable as a file, even for root
    with pytest.raises(IdentityError, match="cannot read identity file") as info:
        Identity.load_or_create(path)
    assert str(path) in str(info.value)
