"""Endpoints on real loopback sockets: connections with keys set directly
(no handshake), driven the way an event loop would: drive() when a socket
is readable or a deadline has come, then ready(), then flush() after the
application used its connections."""

from __future__ import annotations

import hashlib
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable

import pytest
from capability import missing

from crust import _core
from crust.errors import InvalidArgument, WouldBlock

AEAD = (
    _core.AEAD_AES256_GCM
    if _core.aead_available(_core.AEAD_AES256_GCM)
    else _core.AEAD_CHACHA20_POLY1305
)
# Linux's SO_NO_CHECK (not exported by the socket module): a socket without
# UDP checksums, on which the kernel refuses GSO sends (EINVAL).
SO_NO_CHECK = 11
FAMILIES = {"ipv4": (socket.AF_INET, "127.0.0.1"), "ipv6": (socket.AF_INET6, "::1")}


def now_us() -> int:
    return time.monotonic_ns() // 1000


def udp(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    # Room for bursts while Python is busy elsewhere (rmem_max permitting).
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    try:
        s.bind((host, 0))
    except OSError as exc:
        s.close()
        missing(f"cannot bind {host}: {exc}")
    s.setblocking(False)
    return s


def pair(
    i: int = 0, config: _core.Config | None = None
) -> tuple[_core.Connection, _core.Connection]:
    """Two ends with keys already agreed (as after a handshake)."""
    cid_a = b"A" + i.to_bytes(7, "big")
    cid_b = b"B" + i.to_bytes(7, "big")
    now = now_us()
    a = _core.Connection(cid_a, cid_b, now, config)
    b = _core.Connection(cid_b, cid_a, now, config)
    k1, k2 = hashlib.sha256(b"k1%d" % i).digest(), hashlib.sha256(b"k2%d" % i).digest()
    iv1, iv2 = k1[:12], k2[:12]
    a.set_keys(0, AEAD, k1, iv1, k2, iv2)
    b.set_keys(0, AEAD, k2, iv2, k1, iv1)
    return a, b


def run(
    endpoints: Callable[[], Iterable[_core.Endpoint]],
    step: Callable[[int], bool],
    timeout: float = 20.0,
) -> None:
    """The event loop: drive every endpoint, let ``step`` use the
    connections (it returns True when done), flush, then sleep in poll()
    until a socket is ready or the earliest deadline."""
    give_up = time.monotonic() + timeout
    while True:
        eps = list(endpoints())
        now = now_us()
        deadlines = [ep.drive(now) for ep in eps]
        if step(now):
            return
        eps = list(endpoints())  # step may have replaced one
        now = now_us()
        deadlines += [ep.flush(now) for ep in eps]
        assert time.monotonic() < give_up, "timed out"
        poller = select.poll()
        for ep in eps:
            poller.register(ep.fileno(), select.POLLIN | (select.POLLOUT if ep.want_write else 0))
        due = [t for t in deadlines if t is not None]
        wait_ms = 20 if not due else max(0, min(20, (min(due) - now_us()) // 1000))
        poller.poll(wait_ms)


def messages(ep: _core.Endpoint) -> list[tuple[_core.Connection, bytes]]:
    out = []
    for conn in ep.ready():
        for ev in conn.poll_events():
            if ev[0] == _core.EV_MESSAGE and ev[2] is not None:
                out.append((conn, ev[2]))
    return out


class Bulk:
    """Streams ``total`` bytes of 1 MiB messages from a to b, hashing both
    sides; b's endpoint is ``eb``, a's is whatever ``ea()`` returns now."""

    MSG = 1 << 20

    def __init__(
        self, a: _core.Connection, b: _core.Connection, eb: _core.Endpoint, total: int
    ) -> None:
        self.a, self.b, self.eb, self.total = a, b, eb, total
        rng = random.Random(total)
        self.blocks = [rng.randbytes(self.MSG) for _ in range(8)]
        self.sent = self.received = 0
        self.tx_hash, self.rx_hash = hashlib.sha256(), hashlib.sha256()
        self.events: list[int] = []

    def message(self, i: int) -> bytes:
        return i.to_bytes(8, "big") + self.blocks[i % len(self.blocks)][8:]

    def step(self, now: int) -> bool:
        while self.sent < self.total:
            msg = self.message(self.sent // self.MSG)
            try:
                self.a.send(msg, now=now)
            except WouldBlock:
                break
            self.tx_hash.update(msg)
            self.sent += len(msg)
        for conn in self.eb.ready():
            assert conn is self.b
            for ev in conn.poll_events():
                self.events.append(ev[0])
                if ev[0] == _core.EV_MESSAGE and ev[2] is not None:
                    self.rx_hash.update(ev[2])
                    self.received += len(ev[2])
        return self.received >= self.total


def connect(
    family: int = socket.AF_INET,
    host: str = "127.0.0.1",
    config: _core.Config | None = None,
    **kw: bool,
) -> tuple[
    socket.socket, socket.socket, _core.Endpoint, _core.Endpoint, _core.Connection, _core.Connection
]:
    sa, sb = udp(family, host), udp(family, host)
    ea, eb = _core.Endpoint(sa, **kw), _core.Endpoint(sb, **kw)
    a, b = pair(config=config)
    ea.add(a, sb.getsockname())
    eb.add(b, sa.getsockname())
    return sa, sb, ea, eb, a, b


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hello_both_ways(family: str) -> None:
    sa, sb, ea, eb, a, b = connect(*FAMILIES[family])
    a.send(b"hello from a", now=now_us())
    b.send(b"hello from b", 2, now=now_us())
    got: dict[str, list[bytes]] = {"a": [], "b": []}

    def step(now: int) -> bool:
        got["a"] += [m for c, m in messages(ea) if c is a]
        got["b"] += [m for c, m in messages(eb) if c is b]
        return bool(got["a"] and got["b"])

    run(lambda: (ea, eb), step, timeout=5)
    assert got == {"a": [b"hello from b"], "b": [b"hello from a"]}
    assert eb.peer(b) == sa.getsockname()
    assert ea.stats()["rx_dropped_conn"] == eb.stats()["rx_dropped_conn"] == 0
    for s in (sa, sb):
        s.close()


def test_bulk_200mb_hash_verified() -> None:
    sa, sb, ea, eb, a, b = connect()
    t = Bulk(a, b, eb, 200 << 20)
    start = time.monotonic()
    run(lambda: (ea, eb), t.step, timeout=40)
    elapsed = time.monotonic() - start
    assert t.rx_hash.digest() == t.tx_hash.digest()
    sa_st, sb_st = ea.stats(), eb.stats()
    print(
        f"\n200 MB over loopback (AEAD {AEAD}): {elapsed:.2f} s, "
        f"{t.total / elapsed / 1e6:.0f} MB/s; sender {sa_st['tx_datagrams']} datagrams in "
        f"{sa_st['tx_batches']} sendmmsg ({sa_st['gso_segments']} in GSO runs), receiver "
        f"{sb_st['rx_datagrams']} in {sb_st['rx_batches']} recvmmsg "
        f"({sb_st['gro_segments']} GRO), lost {a.stats()['lost_packets']}"
    )
    assert sb_st["rx_dropped_conn"] == 0
    assert sb_st["rx_datagrams"] >= (200 << 20) // 1500
    for s in (sa, sb):
        s.close()


def test_many_connections() -> None:
    n = 1000
    sa, sb = udp(), udp()
    ea, eb = _core.Endpoint(sa), _core.Endpoint(sb)
    conns = [pair(i) for i in range(n)]
    now = now_us()
    for i, (a, b) in enumerate(conns):
        ea.add(a, sb.getsockname())
        eb.add(b, sa.getsockname())
        a.send(b"a%d" % i, now=now)
        b.send(b"b%d" % i, 1, now=now)
    index = {id(c): i for i, ab in enumerate(conns) for c in ab}
    got_a: dict[int, bytes] = {}
    got_b: dict[int, bytes] = {}

    def step(now: int) -> bool:
        for c, m in messages(ea):
            got_a[index[id(c)]] = m
        for c, m in messages(eb):
            got_b[index[id(c)]] = m
        return len(got_a) == len(got_b) == n

    run(lambda: (ea, eb), step, timeout=20)
    assert got_a == {i: b"b%d" % i for i in range(n)}
    assert got_b == {i: b"a%d" % i for i in range(n)}
    assert len(ea) == len(eb) == n
    # With nothing due, a drive runs no connection's timers: idle
    # connections cost nothing (they wait in the heap).
    now = now_us()
    ea.drive(now)
    timers = ea.stats()["timers"]
    deadline = ea.drive(now)
    assert ea.stats()["timers"] == timers
    assert deadline is not None and deadline > now
    for s in (sa, sb):
        s.close()


def test_nat_rebinding_mid_transfer() -> None:
    sa, sb, ea, eb, a, b = connect()
    t = Bulk(a, b, eb, 48 << 20)
    current = {"ea": ea, "sa": sa}
    moved = False

    def step(now: int) -> bool:
        nonlocal moved
        if not moved and t.received >= 16 << 20:
            # The client's NAT mapping changes: its packets now come from a
            # new port. Same Connection, new socket and Endpoint.
            old_ep, old_sock = current["ea"], current["sa"]
            old_ep.remove(a)
            old_ep.close()
            old_sock.close()
            new_sock = udp()
            new_ep = _core.Endpoint(new_sock)
            new_ep.add(a, sb.getsockname())
            current.update(ea=new_ep, sa=new_sock)
            moved = True
        current["ea"].ready()
        return t.step(now)

    run(lambda: (current["ea"], eb), step, timeout=30)
    assert moved and t.rx_hash.digest() == t.tx_hash.digest()
    new_addr = current["sa"].getsockname()
    changes = eb.path_changes()
    assert changes == [(b, new_addr)]
    assert eb.peer(b) == new_addr
    assert eb.stats()["path_changes"] == 1

    # The path validation started on the switch completes.
    def validated(now: int) -> bool:
        current["ea"].ready()
        return any(ev[0] == _core.EV_PATH_VALIDATED for c in eb.ready() for ev in c.poll_events())

    if _core.EV_PATH_VALIDATED not in t.events:
        run(lambda: (current["ea"], eb), validated, timeout=5)
    sb.close()
    current["sa"].close()



def test_nat_rebinding_of_a_receiver() -> None:
    """The receiver of a transfer moves (its NAT gave it a new port): it
    only acknowledges, so nothing it sends would tell the sender, whose
    packets and growing timeouts go to the old address. Waiting for the
    rest of a message it pings within 200 ms (``rx_stall_pings``); the
    sender follows, restarts its backoff on the new path and resumes.
    Against cf29178 the transfer stalled ~27 s (until the receiver's 20 s
    keepalive, then the sender's backed-off timeout)."""
    sa, sb, ea, eb, a, b = connect()
    t = Bulk(b, a, ea, 24 << 20)
    cur = {"ea": ea, "sa": sa}
    mark: dict[str, float] = {}

    def step(now: int) -> bool:
        if "moved" not in mark and t.received >= 8 << 20:
            mark["moved"], mark["at"] = time.monotonic(), t.received
            cur["ea"].remove(a)
            cur["ea"].close()
            cur["sa"].close()
            cur["sa"] = udp()
            cur["ea"] = _core.Endpoint(cur["sa"])
            cur["ea"].add(a, sb.getsockname())
            t.eb = cur["ea"]
        for conn in eb.ready():
            conn.poll_events()
        done = t.step(now)
        if "moved" in mark and "resumed" not in mark and t.received > mark["at"]:
            mark["resumed"] = time.monotonic()
        return done

    run(lambda: (cur["ea"], eb), step, timeout=60)
    assert t.rx_hash.digest() == t.tx_hash.digest()
    gap = mark["resumed"] - mark["moved"]
    assert gap < 1.0, f"the transfer stalled {gap:.2f} s after the receiver moved"
    assert a.stats()["rx_stall_pings"] >= 1
    assert eb.peer(b) == cur["sa"].getsockname()
    sb.close()
    cur["sa"].close()


def test_no_stall_pings_without_a_message_under_way_or_credit() -> None:
    """The stall ping is for a message the peer started and may go on with:
    not for an idle connection, nor for a sender our window holds back (an
    application that does not read)."""
    sa, sb, ea, eb, a, b = connect()
    b.set_manual_credit(True)  # b's application never reads: no credit back
    big = bytes(1 << 20)
    sent = 0

    def fill(now: int) -> bool:
        nonlocal sent
        for conn in eb.ready():
            conn.poll_events()
        ea.ready()
        try:
            a.send(big, now=now)
            sent += 1
        except WouldBlock:
            pass
        return sent >= 40

    run(lambda: (ea, eb), fill, timeout=30)
    until = time.monotonic() + 1.0

    def wait(now: int) -> bool:
        for conn in eb.ready():
            conn.poll_events()
        ea.ready()
        return time.monotonic() > until

    run(lambda: (ea, eb), wait, timeout=5)
    # a is blocked by b's window (34 MiB of 40 MiB), mid-message.
    assert b.stats()["rx_stall_pings"] == 0
    assert a.stats()["rx_stall_pings"] == 0  # a receives nothing at all
    sa.close()
    sb.close()

def test_unrouted_datagrams_go_to_the_caller() -> None:
    sa, sb, ea, eb, _, _ = connect(route_unknown_cids=True)
    raw = udp()
    long_header = bytes([0xC0]) + b"handshake hello" * 4
    unknown_cid = bytes([0x41]) + b"ZZZZZZZZ" + bytes(40)
    raw.sendto(long_header, sb.getsockname())
    raw.sendto(unknown_cid, sb.getsockname())
    got: list[tuple[bytes, object]] = []

    def step(now: int) -> bool:
        got.extend(eb.unrouted())
        return len(got) == 2

    run(lambda: (ea, eb), step, timeout=5)
    assert got == [(long_header, raw.getsockname()), (unknown_cid, raw.getsockname())]
    # The reply path for a handshake: raw datagrams leave as they are.
    eb.send_raw(b"\xc1reply", raw.getsockname())
    select.select([raw], [], [], 2)
    assert raw.recvfrom(2048) == (b"\xc1reply", sb.getsockname())
    assert eb.stats()["unrouted"] == 2
    for s in (sa, sb, raw):
        s.close()


def test_unknown_connection_ids_are_dropped_in_c_by_default() -> None:
    sa, sb, ea, eb, _, _ = connect()
    raw = udp()
    long_header = bytes([0xC0]) + b"handshake hello" * 4
    for i in range(100):
        raw.sendto(bytes([0x41]) + i.to_bytes(8, "big") + bytes(40), sb.getsockname())
    raw.sendto(long_header, sb.getsockname())
    got: list[tuple[bytes, object]] = []

    def step(now: int) -> bool:
        got.extend(eb.unrouted())
        return bool(got) and eb.stats()["rx_dropped_unknown_cid"] == 100

    run(lambda: (ea, eb), step, timeout=5)
    # Only the handshake packet comes up to Python.
    assert got == [(long_header, raw.getsockname())]
    assert eb.stats()["unrouted"] == 1
    # With a prefix, only long headers carrying it after the first byte do.
    sc = udp()
    ec = _core.Endpoint(sc, long_header_prefix=b"handsh")
    raw.sendto(bytes([0xC0]) + b"handshake", sc.getsockname())
    raw.sendto(bytes([0xC0]) + b"handsome", sc.getsockname())
    raw.sendto(bytes([0xC0]) + b"hand", sc.getsockname())
    got.clear()

    def step_c(now: int) -> bool:
        got.extend(ec.unrouted())
        return bool(got) and ec.stats()["rx_dropped_foreign"] == 2

    run(lambda: (ec,), step_c, timeout=5)
    assert got == [(bytes([0xC0]) + b"handshake", raw.getsockname())]
    with pytest.raises(ValueError, match="8"):
        _core.Endpoint(sc, long_header_prefix=bytes(9))
    for s in (sa, sb, sc, raw):
        s.close()


def test_junk_flood_is_counted_and_never_answered() -> None:
    sa, sb, ea, eb, a, _ = connect()
    junk = udp()
    rng = random.Random(7)
    pool = rng.randbytes(1 << 20)
    target = sb.getsockname()
    sent = 0
    for _ in range(100):
        for _ in range(1000):
            n = rng.randrange(0, 1400)
            at = rng.randrange(0, len(pool) - n)
            try:
                junk.sendto(pool[at : at + n], target)
                sent += 1
            except BlockingIOError:
                pass
        eb.drive(now_us())
        eb.unrouted()
    time.sleep(0.05)
    eb.drive(now_us())
    st = eb.stats()
    assert sent > 90_000
    # Everything that arrived was dropped or queued as unrouted, and counted.
    assert st["rx_datagrams"] > 0.5 * sent
    assert st["rx_datagrams"] == (
        st["unrouted"]
        + st["rx_dropped_unrouted_full"]
        + st["rx_dropped_unrouted_long"]
        + st["rx_dropped_malformed"]
        + st["rx_dropped_conn"]
        + st["rx_dropped_truncated"]
        + st["rx_dropped_unknown_cid"]
        + st["rx_held"]  # kept a moment in case their connection comes
    )
    with pytest.raises(BlockingIOError):
        junk.recv(2048)
    # The real connection still works.
    a.send(b"still here", now=now_us())
    got: list[bytes] = []
    run(lambda: (ea, eb), lambda now: bool(got.extend(m for _, m in messages(eb)) or got), 5)
    assert got == [b"still here"]
    for s in (sa, sb, junk):
        s.close()


def transfer_digest(
    gso: bool, gro: bool, no_check: bool = False, ipv6: bool = False
) -> tuple[bytes, dict[str, int], dict[str, int], bool]:
    sa, sb, ea, eb, a, b = connect(*FAMILIES["ipv6" if ipv6 else "ipv4"], gso=gso, gro=gro)
    if no_check:
        sa.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    t = Bulk(a, b, eb, 24 << 20)
    run(lambda: (ea, eb), t.step, timeout=20)
    assert t.rx_hash.digest() == t.tx_hash.digest()
    result = t.rx_hash.digest(), ea.stats(), eb.stats(), ea.gso_enabled
    for s in (sa, sb):
        s.close()
    return result


def test_gso_gro_on_and_off_give_the_same_bytes() -> None:
    digests = set()
    for gso, gro in [(True, True), (False, False), (True, False), (False, True)]:
        digest, tx, rx, gso_on = transfer_digest(gso, gro)
        digests.add(digest)
        assert gso_on == gso
        if gso:
            assert tx["gso_segments"] > 0
        else:
            assert tx["gso_segments"] == 0
        if not gro:
            assert rx["gro_segments"] == 0
        if gso and gro:
            # Loopback keeps GSO super-datagrams whole up to a GRO socket.
            assert rx["gro_segments"] > 0
    # GSO and GRO over IPv6 too.
    digest, tx, rx, gso_on = transfer_digest(True, True, ipv6=True)
    digests.add(digest)
    assert gso_on and tx["gso_segments"] > 0 and rx["gro_segments"] > 0
    assert len(digests) == 1


def test_gso_refused_by_the_kernel_falls_back() -> None:
    _, tx, _, gso_on = transfer_digest(True, True, no_check=True)
    assert tx["gso_refused"] == 1
    assert not gso_on
    assert tx["tx_dropped"] == 0


def test_connections_in_an_endpoint() -> None:
    sa, sb, ea, eb, a, b = connect()
    with pytest.raises(ValueError, match="already in an Endpoint"):
        eb.add(a, sa.getsockname())
    other, _ = pair()
    with pytest.raises(InvalidArgument, match="local_cid"):
        ea.add(other, sb.getsockname())  # same local cid as a
    with pytest.raises(ValueError, match="not in this Endpoint"):
        eb.remove(a)
    with pytest.raises(ValueError, match="numeric"):
        ea.send_raw(b"x", ("localhost", 1))
    with pytest.raises(TypeError):
        ea.send_raw(b"x", "127.0.0.1:1")  # type: ignore[arg-type]
    blocking = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(ValueError, match="non-blocking"):
        _core.Endpoint(blocking)
    blocking.close()

    # A drive in another thread: the connection refuses direct calls while
    # it runs (RuntimeError), and nothing breaks either way.
    stop = time.monotonic() + 0.3
    errors: list[BaseException] = []

    def driver() -> None:
        while time.monotonic() < stop:
            ea.drive(now_us())

    th = threading.Thread(target=driver)
    th.start()
    while time.monotonic() < stop:
        try:
            a.send(b"x" * 100, now=now_us())
            a.stats()
        except RuntimeError as exc:
            errors.append(exc)
    th.join()
    assert all(
        "in use by its Endpoint" in str(e) or "in use by another thread" in str(e) for e in errors
    )

    # Closing through the endpoint: CLOSE reaches the peer.
    a.close(now_us(), code=7, graceful=False)
    closed: list[tuple[int, int]] = []

    def step(now: int) -> bool:
        ea.ready()
        for c in eb.ready():
            closed.extend((ev[4], ev[5]) for ev in c.poll_events() if ev[0] == _core.EV_CLOSED)
        return bool(closed)

    run(lambda: (ea, eb), step, timeout=5)
    assert closed == [(_core.CLOSE_REMOTE, 7)]
    # Removed, the connection is the caller's alone again.
    ea.remove(a)
    assert len(ea) == 0
    a.stats()
    # Closing an endpoint releases its connections; it refuses work after.
    eb.close()
    b.stats()
    with pytest.raises(RuntimeError, match="closed"):
        eb.drive(now_us())
    eb.close()
    sb.close()
    # A closed socket's fd number may be reused: the endpoint notices.
    sa.close()
    with pytest.raises(OSError, match="closed"):
        ea.drive(now_us())


def test_ipv4_peer_on_an_ipv6_socket() -> None:
    sa = udp(socket.AF_INET6, "::")
    sb = udp()
    ea = _core.Endpoint(sa)
    port = sb.getsockname()[1]
    ea.send_raw(b"\xc0mapped", ("127.0.0.1", port))
    select.select([sb], [], [], 2)
    data, _ = sb.recvfrom(100)
    assert data == b"\xc0mapped"
    a, _ = pair()
    ea.add(a, ("127.0.0.1", port))
    assert ea.peer(a) == ("::ffff:127.0.0.1", port, 0, 0)
    sa.close()
    sb.close()


# Linux's values (the socket module lacks some of them).
_IP_MTU_DISCOVER, _IPV6_MTU_DISCOVER, _PMTUDISC_PROBE = 10, 23, 3


@pytest.mark.parametrize("family", list(FAMILIES))
def test_datagrams_are_sent_with_dont_fragment(family: str) -> None:
    """Path MTU discovery (design note 0005) needs a too-large probe to be
    dropped, not fragmented by an IPv4 router: every datagram goes with DF,
    and the kernel's own path-MTU cache does not shrink them."""
    fam, host = FAMILIES[family]
    sock = udp(fam, host)
    _core.Endpoint(sock)
    if fam == socket.AF_INET:
        assert sock.getsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER) == _PMTUDISC_PROBE
    else:
        assert sock.getsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER) == _PMTUDISC_PROBE
    sock.close()


def early_packets(
    i: int, handshake: bool
) -> tuple[_core.Endpoint, _core.Connection, list[socket.socket]]:
    """a sends a message to an endpoint that has no connection for it yet,
    after a handshake datagram from the same socket or without one."""
    sa, sb = udp(), udp()
    ea, eb = _core.Endpoint(sa), _core.Endpoint(sb)
    a, b = pair(i)
    ea.add(a, sb.getsockname())
    a.send(b"early", now=now_us())
    if handshake:
        sa.sendto(bytes([0xC0]) + b"finish", sb.getsockname())
    ea.flush(now_us())
    select.select([sb], [], [], 2)
    time.sleep(0.02)
    eb.drive(now_us())
    return eb, b, [sa, sb]


def test_packets_before_their_connection_are_held_after_a_handshake() -> None:
    # The dialler's final handshake message and its first data packets can
    # arrive in one batch, before the connection they belong to is added.
    eb, b, socks = early_packets(41, handshake=True)
    assert [d for d, _ in eb.unrouted()] == [bytes([0xC0]) + b"finish"]
    st = eb.stats()
    assert st["rx_held"] >= 1 and st["rx_dropped_unknown_cid"] == 0
    eb.add(b, socks[0].getsockname())
    eb.flush(now_us())
    assert messages(eb) == [(b, b"early")]
    assert eb.stats()["rx_held_delivered"] == st["rx_held"]
    for s in socks:
        s.close()


def test_unknown_ids_without_a_handshake_nearby_are_not_held() -> None:
    eb, _, socks = early_packets(42, handshake=False)
    st = eb.stats()
    # Junk, or a packet of a connection long gone: dropped at once.
    assert st["rx_held"] == 0 and st["rx_dropped_unknown_cid"] >= 1
    for s in socks:
        s.close()


@pytest.mark.parametrize(
    "family, host, peer_host",
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET6, "::1", "::1"),
        (socket.AF_INET6, "::", "127.0.0.1"),  # IPv4-mapped: ICMPv4 on an IPv6 socket
    ],
    ids=["ipv4", "ipv6", "ipv4-mapped"],
)
def test_a_peer_whose_port_is_closed_is_lost_within_seconds(
    family: int, host: str, peer_host: str
) -> None:
    """Issue 15: the peer's process is gone, so its host answers each datagram
    with a port unreachable. The endpoint reads it from the error queue
    (IP_RECVERR / IPV6_RECVERR), the connection probes, and with no answer
    it closes as CLOSE_UNREACHABLE after max(3 PTO, 1 s), not the idle
    timeout."""
    sa = udp(family, host)
    sb = udp(socket.AF_INET6 if ":" in peer_host else socket.AF_INET, peer_host)
    ea, eb = _core.Endpoint(sa), _core.Endpoint(sb)
    a, b = pair()
    ea.add(a, sb.getsockname())
    eb.add(b, (peer_host, sa.getsockname()[1]))
    a.send(b"hello", now=now_us())
    got: list[bytes] = []

    def hello(now: int) -> bool:
        got.extend(m for _, m in messages(eb))
        return bool(got) and a.stats()["min_rtt_us"] > 0

    run(lambda: (ea, eb), hello, timeout=5)  # an RTT sample: PTO ~ 30 ms
    sb.close()  # the peer's process dies
    a.send(b"anyone there?", now=now_us())
    t0 = time.monotonic()
    closed: list[int] = []

    def step(now: int) -> bool:
        for conn in ea.ready():
            closed.extend(ev[4] for ev in conn.poll_events() if ev[0] == _core.EV_CLOSED)
        return bool(closed)

    run(lambda: (ea,), step, timeout=10)
    took = time.monotonic() - t0
    st = ea.stats()
    assert closed == [_core.CLOSE_UNREACHABLE]
    assert 0.9 <= took <= 1.5, took
    assert st["icmp_unreachable"] >= 1 and a.stats()["unreachable_reports"] == 1
    # The pending socket errors were consumed as such, not counted as failures.
    assert st["rx_errors"] == 0 and st["tx_dropped"] == 0
    sa.close()


def test_icmp_for_another_address_is_ignored() -> None:
    """A port unreachable about an address no connection talks to changes
    nothing: a live connection on the same endpoint carries on."""
    sa, sb, ea, eb, a, _b = connect()
    gone = udp()
    dead = gone.getsockname()
    gone.close()
    ea.send_raw(b"\xc0to a closed port", dead)  # earns an ICMP error
    a.send(b"hello", now=now_us())
    got: list[bytes] = []

    def step(now: int) -> bool:
        got.extend(m for _, m in messages(eb))
        return bool(got) and ea.stats()["icmp_errors"] >= 1

    run(lambda: (ea, eb), step, timeout=5)
    st = ea.stats()
    assert st["icmp_ignored"] >= 1 and st["icmp_unreachable"] == 0
    assert a.stats()["unreachable_reports"] == 0 and not a.is_closed
    for s in (sa, sb):
        s.close()
