"""Tests of crust.testing, the seeded simulated network with a virtual clock."""

from __future__ import annotations

import dataclasses
import doctest
import time
from collections.abc import Iterable

import pytest

import crust.testing
from crust.testing import Addr, LinkConfig, Network, StopReason

A = "192.0.2.1"
B = "198.51.100.2"
C = "203.0.113.3"
SRC: Addr = (A, 1000)
DST: Addr = (B, 2000)
PAD = bytes(range(256)) * 8


class Sender:
    """Sends ``count`` numbered datagrams of ``size`` bytes to ``dst``, one
    every ``interval_us`` from ``start_us`` (all at once if the interval is
    0). The first 4 bytes of a payload are its sequence number."""

    def __init__(
        self,
        dst: Addr,
        count: int,
        *,
        size: int | Iterable[int] = 100,
        interval_us: int = 1000,
        start_us: int = 0,
    ) -> None:
        self.dst = dst
        self.count = count
        self.sizes = [size] * count if isinstance(size, int) else list(size)
        self.interval_us = interval_us
        self.next_at = start_us
        self.sent: list[bytes] = []
        self.outbox: list[tuple[bytes, Addr]] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        pass

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> int | None:
        return self.next_at if len(self.sent) < self.count else None

    def handle_timer(self, now: int) -> None:
        while len(self.sent) < self.count and self.next_at <= now:
            seq = len(self.sent)
            payload = (seq.to_bytes(4, "big") + PAD)[: self.sizes[seq]]
            self.sent.append(payload)
            self.outbox.append((payload, self.dst))
            self.next_at += self.interval_us


class Receiver:
    """Records every datagram it gets."""

    def __init__(self) -> None:
        self.got: list[tuple[int, int, bytes, Addr]] = []

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _, _, _ in self.got]

    @property
    def times(self) -> list[int]:
        return [t for _, t, _, _ in self.got]

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        self.got.append((int.from_bytes(data[:4], "big"), now, data, addr))

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr]]:
        return []

    def get_timer(self) -> int | None:
        return None

    def handle_timer(self, now: int) -> None:
        pass


def one_way(cfg: LinkConfig, sender: Sender, seed: int = 7) -> tuple[Network, Receiver]:
    net = Network(seed)
    net.set_link(A, B, cfg)
    rx = Receiver()
    net.add_node(SRC, sender)
    net.add_node(DST, rx)
    return net, rx


def burst_lengths(seqs: list[int], count: int) -> list[int]:
    """Lengths of the runs of consecutive sequence numbers missing."""
    got = set(seqs)
    runs, run = [], 0
    for seq in range(count):
        if seq in got:
            if run:
                runs.append(run)
            run = 0
        else:
            run += 1
    if run:
        runs.append(run)
    return runs


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(crust.testing)
    assert result.attempted > 5
    assert result.failed == 0


def test_delay_and_serialization_are_exact() -> None:
    # 8 Mbit/s is one byte per microsecond: 1000 bytes take 1000 us.
    cfg = LinkConfig(delay_us=10_000, bandwidth_bps=8_000_000)
    net, rx = one_way(cfg, Sender(DST, 5, size=1000, interval_us=0))
    assert net.run() is StopReason.IDLE
    assert rx.times == [11_000, 12_000, 13_000, 14_000, 15_000]
    assert rx.seqs == [0, 1, 2, 3, 4]
    assert net.stats(A, B).queue_delays_us == [0, 1000, 2000, 3000, 4000]
    assert net.now == 15_000
    assert rx.got[0][3] == SRC


def test_paced_sender_below_link_rate_never_queues() -> None:
    cfg = LinkConfig(delay_us=3_000, bandwidth_bps=8_000_000)
    net, rx = one_way(cfg, Sender(DST, 10, size=500, interval_us=2_000, start_us=100))
    net.run()
    assert rx.times == [100 + 2_000 * i + 500 + 3_000 for i in range(10)]
    assert set(net.stats(A, B).queue_delays_us) == {0}


def test_fractional_serialization_does_not_drift() -> None:
    # 100 bytes at 3 Mbit/s take 266.67 us: arrivals round up per datagram,
    # but the link keeps exact time, so the 3000th ends at exactly 800 ms.
    cfg = LinkConfig(bandwidth_bps=3_000_000)
    net, rx = one_way(cfg, Sender(DST, 3000, size=100, interval_us=0))
    net.run()
    assert rx.times[:3] == [267, 534, 800]
    assert rx.times[-1] == 800_000


def test_tail_drop_at_queue_limit() -> None:
    # Queue of 3000 bytes at 1 byte/us: of a burst of ten 1000-byte
    # datagrams, three fit (counting the one being serialized).
    cfg = LinkConfig(delay_us=0, bandwidth_bps=8_000_000, queue_bytes=3000)
    sender = Sender(DST, 10, size=1000, interval_us=0)
    net, rx = one_way(cfg, sender)
    net.run()
    st = net.stats(A, B)
    assert rx.seqs == [0, 1, 2]
    assert (st.sent, st.delivered, st.dropped_queue) == (10, 3, 7)


def test_queue_drains_and_admits_again() -> None:
    # Half of datagram 0 is serialized after 500 us, so 500 + 1000 + 1000
    # bytes fit in a 2500-byte queue: datagrams 1 and 2, not 3.
    cfg = LinkConfig(bandwidth_bps=8_000_000, queue_bytes=2500)
    net = Network(1)
    net.set_link(A, B, cfg)
    rx = Receiver()
    net.add_node(DST, rx)
    net.add_node(SRC, Sender(DST, 1, size=1000, interval_us=0))
    net.add_node((A, 1001), Sender(DST, 3, size=1000, interval_us=0, start_us=500))
    net.run()
    assert rx.times == [1000, 2000, 3000]
    assert net.stats(A, B).dropped_queue == 1


def test_loss_rate_within_bounds() -> None:
    n = 20_000
    net, rx = one_way(LinkConfig(loss=0.1), Sender(DST, n, interval_us=10))
    net.run()
    st = net.stats(A, B)
    assert 0.09 * n <= st.dropped_loss <= 0.11 * n
    assert st.delivered + st.dropped_loss == n
    assert len(rx.got) == st.delivered


def test_gilbert_elliott_makes_bursts() -> None:
    n = 50_000
    cfg = LinkConfig(ge_p=0.01, ge_r=0.25)
    net, rx = one_way(cfg, Sender(DST, n, interval_us=10))
    net.run()
    bursts = burst_lengths(rx.seqs, n)
    mean_burst = sum(bursts) / len(bursts)
    assert 3.4 <= mean_burst <= 4.6  # 1 / ge_r = 4
    # Stationary share of the bad state: p / (p + r).
    assert 0.03 <= net.stats(A, B).dropped_loss / n <= 0.047

    # Independent loss of the same average rate barely makes bursts.
    net, rx = one_way(LinkConfig(loss=0.038), Sender(DST, n, interval_us=10))
    net.run()
    bursts = burst_lengths(rx.seqs, n)
    assert sum(bursts) / len(bursts) < 1.1


def test_duplication() -> None:
    n = 4000
    net, rx = one_way(LinkConfig(duplicate=0.25, delay_us=50), Sender(DST, n))
    net.run()
    st = net.stats(A, B)
    assert 0.22 * n <= st.duplicated <= 0.28 * n
    assert st.delivered == n + st.duplicated == len(rx.got)
    # A copy arrives right behind its original, and nothing else changes.
    assert sorted(set(rx.seqs)) == list(range(n))
    assert rx.seqs == sorted(rx.seqs)


def test_jitter_alone_never_reorders() -> None:
    cfg = LinkConfig(delay_us=1000, jitter_us=5000)
    net, rx = one_way(cfg, Sender(DST, 5000, interval_us=100))
    net.run()
    assert rx.seqs == list(range(5000))
    assert net.stats(A, B).reordered == 0
    # The jitter did spread the delays.
    delays = {t - 100 * seq for seq, t, _, _ in rx.got}
    assert min(delays) >= 1000
    assert max(delays) > 5000


def test_reorder_lets_later_datagrams_overtake() -> None:
    n = 5000
    cfg = LinkConfig(delay_us=1000, jitter_us=500, reorder=0.1, reorder_delay_us=1000)
    net, rx = one_way(cfg, Sender(DST, n, interval_us=100))
    net.run()
    st = net.stats(A, B)
    assert 0.08 * n <= st.reordered <= 0.12 * n
    assert sorted(rx.seqs) == list(range(n))
    overtaken = sum(1 for x, y in zip(rx.seqs, rx.seqs[1:], strict=False) if x > y)
    assert overtaken > 0.05 * n


def test_corruption_flips_exactly_one_bit() -> None:
    n = 500
    sender = Sender(DST, n, size=[1 + i % 300 for i in range(n)])
    net, rx = one_way(LinkConfig(corrupt=1.0), sender)
    net.run()
    assert net.stats(A, B).corrupted == n
    for sent, (_, _, got, _) in zip(sender.sent, rx.got, strict=True):
        assert len(got) == len(sent)
        diff = int.from_bytes(sent, "big") ^ int.from_bytes(got, "big")
        assert diff.bit_count() == 1


def test_no_corruption_by_default() -> None:
    sender = Sender(DST, 100, size=200)
    net, rx = one_way(LinkConfig(loss=0.1, jitter_us=10), sender)
    net.run()
    by_seq = {seq: data for seq, _, data, _ in rx.got}
    assert all(by_seq[seq] == sender.sent[seq] for seq in by_seq)


def test_mtu_drops_larger_datagrams() -> None:
    sender = Sender(DST, 100, size=[400, 600] * 50)
    net, rx = one_way(LinkConfig(mtu=500), sender)
    net.run()
    st = net.stats(A, B)
    assert st.dropped_mtu == 50
    assert rx.seqs == list(range(0, 100, 2))


def impaired_trace(seed: int, extra_pair: bool = False) -> list[tuple[int, int, bytes, Addr]]:
    cfg = LinkConfig(
        delay_us=2_000,
        jitter_us=700,
        bandwidth_bps=5_000_000,
        queue_bytes=20_000,
        loss=0.02,
        ge_p=0.01,
        ge_r=0.3,
        duplicate=0.02,
        reorder=0.05,
        reorder_delay_us=900,
        corrupt=0.01,
    )
    net = Network(seed)
    net.connect(A, B, cfg)
    rx = Receiver()
    net.add_node(DST, rx)
    if extra_pair:
        # Another link and more nodes must not change what A->B draws.
        net.set_link(C, B, cfg)
        net.add_node((C, 1), Sender((B, 9), 500, interval_us=300))
        net.add_node((B, 9), Receiver())
    net.add_node(SRC, Sender(DST, 3000, size=700, interval_us=900))
    net.run()
    return rx.got


def test_same_seed_same_trace_and_links_independent() -> None:
    first = impaired_trace(42)
    assert first == impaired_trace(42)
    assert first == impaired_trace(42, extra_pair=True)
    assert first != impaired_trace(43)


def test_timer_fires_and_node_sends() -> None:
    net, rx = one_way(LinkConfig(delay_us=250), Sender(DST, 1, start_us=5_000))
    net.run()
    assert rx.times == [5_250]


class Rescheduler:
    """Asks for a timer at 10 ms, then (once polled at 1 ms) moves it to 3 ms;
    every firing is recorded. A timer in the past fires at once."""

    def __init__(self) -> None:
        self.timer: int | None = 10_000
        self.fired: list[int] = []
        self.outbox: list[tuple[bytes, Addr]] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        self.timer = 3_000

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr]]:
        out, self.outbox = self.outbox, []
        return out

    def get_timer(self) -> int | None:
        return self.timer

    def handle_timer(self, now: int) -> None:
        self.fired.append(now)
        self.timer = 1 if len(self.fired) == 1 else None


def test_timer_rescheduling_and_past_timers() -> None:
    net = Network(3)
    node = Rescheduler()
    net.add_node(DST, node)
    # A datagram at 1 ms moves the timer from 10 ms to 3 ms; after firing the
    # node asks for time 1, already past, which fires at 3 ms too. The stale
    # 10 ms entry must not fire.
    net.add_node(SRC, Sender(DST, 1, start_us=1_000))
    assert net.run() is StopReason.IDLE
    assert node.fired == [3_000, 3_000]
    assert net.now == 3_000


def test_wake_sends_data_queued_from_outside() -> None:
    net = Network(5)
    net.set_link(A, B, LinkConfig(delay_us=100))
    rx = Receiver()
    sender = Sender(DST, 0)
    net.add_node(SRC, sender)
    net.add_node(DST, rx)
    net.run(until=1_000)
    sender.outbox.append((b"\x00\x00\x00\x07late", DST))
    net.wake(SRC)
    net.run()
    assert rx.got == [(7, 1_100, b"\x00\x00\x00\x07late", SRC)]


def test_run_polls_every_node_at_start() -> None:
    net = Network(5)
    rx = Receiver()
    sender = Sender(DST, 0)
    sender.outbox.append((b"\x00\x00\x00\x01", DST))
    net.add_node(SRC, sender)
    net.add_node(DST, rx)
    net.run()
    assert rx.seqs == [1]
    assert rx.times == [0]  # the default link is ideal


def test_until_stop_and_max_events() -> None:
    net, rx = one_way(LinkConfig(delay_us=500), Sender(DST, 100, interval_us=1_000))
    assert net.run(until=10_500) is StopReason.UNTIL
    assert net.now == 10_500
    assert rx.times[-1] == 10_500
    assert len(rx.got) == 11

    assert net.run(stop=lambda: len(rx.got) >= 20) is StopReason.STOP
    assert len(rx.got) == 20

    before = net.events_processed
    assert net.run(max_events=7) is StopReason.MAX_EVENTS
    assert net.events_processed - before == 7

    assert net.run() is StopReason.IDLE
    assert len(rx.got) == 100
    assert net.run(until=500_000) is StopReason.IDLE
    assert net.now == 500_000
    with pytest.raises(ValueError, match="until"):
        net.run(until=1)


def test_step_processes_one_event() -> None:
    net, rx = one_way(LinkConfig(delay_us=10), Sender(DST, 2, interval_us=100))
    steps = 0
    while net.step():
        steps += 1
    # Two sends (timers) and two deliveries.
    assert steps == 4 == net.events_processed
    assert rx.times == [10, 110]
    assert net.step() is False


class Spinner:
    """A broken node: its timer is always due, and firing it changes nothing."""

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        pass

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr]]:
        return []

    def get_timer(self) -> int | None:
        return 0

    def handle_timer(self, now: int) -> None:
        pass

    def __repr__(self) -> str:
        return "<Spinner the-culprit>"


def test_runaway_timer_raises_naming_the_node() -> None:
    net = Network(1)
    net.add_node(SRC, Spinner())
    with pytest.raises(RuntimeError, match="the-culprit") as info:
        net.run()
    assert "192.0.2.1" in str(info.value)


def test_runaway_guard_is_tunable_and_max_events_bounds_a_spinner() -> None:
    net = Network(1, max_events_per_instant=10)
    net.add_node(SRC, Spinner())
    assert net.run(max_events=5) is StopReason.MAX_EVENTS
    with pytest.raises(RuntimeError, match="more than 10 events"):
        net.run()


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("delay_us", {"delay_us": -1}),
        ("jitter_us", {"jitter_us": 1.5}),
        ("reorder_delay_us", {"reorder_delay_us": -5}),
        ("loss", {"loss": 1.5}),
        ("ge_p", {"ge_p": -0.1}),
        ("ge_r", {"ge_p": 0.1, "ge_r": 0.0}),
        ("ge_loss_bad", {"ge_loss_bad": 2.0}),
        ("ge_loss_good", {"ge_loss_good": -1.0}),
        ("duplicate", {"duplicate": 1.01}),
        ("reorder", {"reorder": -0.5}),
        ("reorder_delay_us", {"reorder": 0.1}),
        ("corrupt", {"corrupt": 7.0}),
        ("bandwidth_bps", {"bandwidth_bps": 0}),
        ("queue_bytes", {"bandwidth_bps": 1000, "queue_bytes": -1}),
        ("queue_bytes", {"queue_bytes": 1000}),
        ("mtu", {"mtu": 0}),
    ],
)
def test_config_validation_names_the_field(field: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        LinkConfig(**kwargs)  # type: ignore[arg-type]


def test_bottleneck_helper_sizes_queue_in_bdps() -> None:
    cfg = LinkConfig.bottleneck(10_000_000, 40_000, queue_bdps=2.0)
    assert cfg.delay_us == 20_000
    assert cfg.queue_bytes == 2 * 50_000
    lossy = dataclasses.replace(cfg, loss=0.01)
    assert lossy.loss == 0.01 and lossy.queue_bytes == cfg.queue_bytes


def test_greedy_sender_gets_exactly_the_link_rate() -> None:
    # 12.5 Mbit/s offered into a 10 Mbit/s bottleneck for 10 s.
    cfg = LinkConfig(delay_us=5_000, bandwidth_bps=10_000_000, queue_bytes=50_000)
    size, n = 1250, 12_500
    net, rx = one_way(cfg, Sender(DST, n, size=size, interval_us=800))
    net.run()
    st = net.stats(A, B)
    assert st.dropped_queue > 0
    span_us = rx.times[-1] - rx.times[0]
    rate = (len(rx.got) - 1) * size * 8 / (span_us / 1e6)
    assert abs(rate - 10_000_000) <= 0.01 * 10_000_000
    # The standing queue shows as bufferbloat: up to 50 kB / 10 Mbit/s = 40 ms.
    assert 38_000 <= max(st.queue_delays_us) <= 40_000


def test_set_link_mid_run_partitions_and_heals() -> None:
    net, rx = one_way(LinkConfig(delay_us=10), Sender(DST, 30, interval_us=1_000))
    net.run(until=9_999)
    net.set_link(A, B, LinkConfig(loss=1.0))
    net.run(until=19_999)
    net.set_link(A, B, LinkConfig(delay_us=10))
    net.run()
    assert rx.seqs == list(range(10)) + list(range(20, 30))
    assert net.stats(A, B).dropped_loss == 10


def test_removed_node_cancels_timer_and_counts_undeliverable() -> None:
    net, rx = one_way(LinkConfig(delay_us=5_000), Sender(DST, 10, interval_us=1_000))
    net.run(until=6_000)
    net.remove_node(DST)
    net.run()
    st = net.stats(A, B)
    assert len(rx.got) == 2
    assert st.delivered == 2 and st.undeliverable == 8


def test_default_link_none_demands_explicit_links() -> None:
    net = Network(1, default_link=None)
    net.add_node(SRC, Sender((C, 1), 1))
    with pytest.raises(LookupError, match=f"{A}->{C}"):
        net.run()


def test_duplicate_address_rejected() -> None:
    net = Network(1)
    net.add_node(SRC, Receiver())
    with pytest.raises(ValueError, match="already has a node"):
        net.add_node(SRC, Receiver())


def test_simulator_overhead_is_small() -> None:
    # 100k datagrams: 100k timer events plus 100k deliveries over a link
    # with a bottleneck, jitter and loss, so the full send path runs.
    cfg = LinkConfig(delay_us=1000, jitter_us=100, bandwidth_bps=100_000_000, loss=0.001)
    net, rx = one_way(cfg, Sender(DST, 100_000, size=1200, interval_us=100))
    assert not rx.got
    t0 = time.perf_counter()
    net.run()
    elapsed = time.perf_counter() - t0
    assert net.events_processed >= 199_000
    assert elapsed < 4.0, f"{net.events_processed} events took {elapsed:.2f} s"
    assert len(rx.got) == net.stats(A, B).delivered >= 99_000
