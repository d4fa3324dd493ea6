"""crust.reflection.SendBudget, sans-IO: credit is 3x what a source sent,
per IPv4 address or IPv6 /64, in a bounded table (design note 0046)."""

from __future__ import annotations

import pytest

from crust.reflection import SendBudget, syn_cost, udp_cost


def test_credit_is_three_times_what_was_received() -> None:
    b = SendBudget()
    assert not b.spend("192.0.2.1", 1, 0)  # nothing received: nothing sent
    b.received("192.0.2.1", 100, 0)
    assert b.spend("192.0.2.1", 250, 1)
    assert not b.spend("192.0.2.1", 51, 2)  # 50 left: refused whole, not charged
    assert b.spend("192.0.2.1", 50, 3)
    assert b.credit("192.0.2.1", 4) == 0
    assert b.stats["spent"] == 300 and b.stats["refusals"] == 2


def test_a_source_is_an_ipv4_address_or_an_ipv6_64() -> None:
    b = SendBudget()
    b.received("2001:db8:1:2::1", 10, 0)
    assert b.spend("2001:db8:1:2:ffff::9", 30, 0)  # same /64, any address in it
    b.received("2001:db8:1:3::1", 10, 0)
    assert not b.spend("2001:db8:1:2::1", 1, 0)  # another /64 paid, not this one
    b.received("192.0.2.1", 10, 0)
    assert not b.spend("192.0.2.2", 1, 0)
    b.received("::ffff:192.0.2.3", 10, 0)  # v4-mapped counts as its IPv4 address
    assert b.spend("192.0.2.3", 30, 0)


def test_table_and_credit_are_bounded() -> None:
    b = SendBudget(max_sources=4, max_credit=1000, idle_us=1_000)
    b.received("192.0.2.1", 10_000, 0)
    assert b.credit("192.0.2.1", 0) == 1000
    for i in range(2, 7):
        b.received(f"192.0.2.{i}", 1, 0)
    assert len(b) == 4 and b.stats["evicted"] == 2
    assert b.credit("192.0.2.1", 0) == 0  # dropped first: least recently used
    assert b.credit("192.0.2.6", 999) == 3
    assert b.credit("192.0.2.6", 1_000) == 0 and len(b) == 0  # idle: forgotten


def test_costs_count_headers() -> None:
    assert udp_cost("192.0.2.1", 39) == 67 and udp_cost("2001:db8::1", 39) == 87
    assert syn_cost("192.0.2.1", 2) == 120 and syn_cost("2001:db8::1") == 80


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        SendBudget(max_sources=0)
