"""crust.nat.mapping: classifying our NAT from contacts' answers (sans-IO),
and the budgets of the answering side (no amplification, bounded work)."""

from __future__ import annotations

import os
import random

import pytest

from crust.nat import mapping
from crust.nat.classify import Behaviour, Probe
from crust.nat.mapping import (
    PAD_TO,
    ContactProbes,
    ProbeAnswerer,
    classify_contacts,
    is_binding_request,
)
from crust.nat.stun import (
    Attr,
    StunParseError,
    decode,
    encode_binding_request,
    encode_binding_response,
)

LOCAL = ("10.0.0.2", 5000)
C1 = "198.51.100.1"
C2 = "203.0.113.9"


def _p(server: tuple[str, int], mapped: tuple[str, int] | None) -> Probe:
    return Probe("contact", server, mapped, server, None, 0.0)


# -- the classifier ------------------------------------------------------------


def test_two_ports_of_one_contact_that_disagree_show_a_symmetric_nat() -> None:
    nat = classify_contacts(
        LOCAL, [_p((C1, 7000), ("192.0.2.1", 40001)), _p((C1, 7001), ("192.0.2.1", 51377))]
    )
    assert nat is not None and nat.source == "contacts"
    assert nat.mapping is Behaviour.ADDRESS_AND_PORT_DEPENDENT
    assert nat.kind == "symmetric" and nat.behind_nat is True
    assert nat.mapped == ("192.0.2.1", 40001)
    assert nat.reflexive == (("192.0.2.1", 40001), ("192.0.2.1", 51377))
    assert nat.filtering is Behaviour.UNKNOWN and nat.port_preserving is False


def test_ports_of_one_contact_that_agree_cannot_tell_cone_from_address_dependent() -> None:
    nat = classify_contacts(
        LOCAL, [_p((C1, 7000), ("192.0.2.1", 5000)), _p((C1, 7001), ("192.0.2.1", 5000))]
    )
    assert nat is not None
    assert nat.mapping is Behaviour.UNKNOWN and nat.kind == "unknown"
    assert nat.port_preserving is True


def test_contacts_at_two_addresses_that_agree_show_a_cone() -> None:
    nat = classify_contacts(
        LOCAL, [_p((C1, 7000), ("192.0.2.1", 6000)), _p((C2, 9000), ("192.0.2.1", 6000))]
    )
    assert nat is not None and nat.mapping is Behaviour.ENDPOINT_INDEPENDENT
    assert nat.kind == "cone"


def test_address_dependent_when_ports_agree_but_addresses_do_not() -> None:
    probes = [
        _p((C1, 7000), ("192.0.2.1", 6000)),
        _p((C1, 7001), ("192.0.2.1", 6000)),
        _p((C2, 9000), ("192.0.2.1", 6001)),
    ]
    nat = classify_contacts(LOCAL, probes)
    assert nat is not None and nat.mapping is Behaviour.ADDRESS_DEPENDENT
    assert nat.kind == "symmetric"
    # Without the same-address pair, only "dependent".
    nat = classify_contacts(LOCAL, [probes[0], probes[2]])
    assert nat is not None and nat.mapping is Behaviour.DEPENDENT and nat.kind == "symmetric"


def test_no_translation_is_open_even_with_one_contact() -> None:
    nat = classify_contacts(LOCAL, [_p((C1, 7000), LOCAL)])
    assert nat is not None and nat.behind_nat is False and nat.kind == "open"
    # A wildcard-bound socket: the machine's own addresses count as ours.
    nat = classify_contacts(("0.0.0.0", 5000), [_p((C1, 7000), LOCAL)], local_ips={LOCAL[0]})
    assert nat is not None and nat.kind == "open"
    nat = classify_contacts(("0.0.0.0", 5000), [_p((C1, 7000), LOCAL)])
    assert nat is not None and nat.behind_nat is True and nat.kind == "unknown"


def test_no_answer_is_no_classification() -> None:
    assert classify_contacts(LOCAL, []) is None
    assert classify_contacts(LOCAL, [_p((C1, 7000), None)]) is None


def test_contact_probes_compare_only_recent_answers_and_stay_bounded() -> None:
    probes = ContactProbes(LOCAL)
    probes.add((C1, 7000), ("192.0.2.1", 40001), now=0.0)
    # The NAT restarted meanwhile: a new port, much later, is no evidence
    # of a mapping per destination.
    probes.add((C1, 7001), ("192.0.2.1", 51377), now=mapping.WINDOW + 5)
    nat = probes.behaviour()
    assert nat is not None and nat.mapping is Behaviour.UNKNOWN
    probes.add((C1, 7000), ("192.0.2.1", 40001), now=mapping.WINDOW + 6)
    nat = probes.behaviour()
    assert nat is not None and nat.mapping is Behaviour.ADDRESS_AND_PORT_DEPENDENT
    for i in range(3 * mapping.MAX_SERVERS):
        probes.add((C2, 1000 + i), ("192.0.2.1", 40001), now=100.0)
    assert len(probes) == mapping.MAX_SERVERS


# -- requests and answers ------------------------------------------------------


def test_padded_request_is_at_least_as_large_as_any_answer() -> None:
    txid = os.urandom(12)
    req = encode_binding_request(txid, pad_to=PAD_TO)
    assert len(req) >= PAD_TO and is_binding_request(req)
    msg = decode(req)
    assert msg.get(Attr.PADDING) is not None
    biggest = encode_binding_response(txid, ("2001:db8::1", 1), other=("2001:db8::1", 2))
    assert len(biggest) <= PAD_TO
    assert not is_binding_request(encode_binding_response(txid, ("192.0.2.1", 1)))


def test_answer_says_where_the_request_came_from_and_our_other_port() -> None:
    ans = ProbeAnswerer()
    txid = os.urandom(12)
    reply = ans.answer(
        encode_binding_request(txid, pad_to=PAD_TO), ("192.0.2.7", 4242), 0.0, ("10.1.1.1", 7001)
    )
    assert reply is not None
    msg = decode(reply)
    assert msg.txid == txid
    assert msg.address(Attr.XOR_MAPPED_ADDRESS) == ("192.0.2.7", 4242)
    assert msg.address(Attr.OTHER_ADDRESS) == ("10.1.1.1", 7001)
    assert ans.stats["answered"] == 1


@pytest.mark.parametrize("host", ["192.0.2.7", "2001:db8::7"])
def test_an_answer_is_never_larger_than_its_request(host: str) -> None:
    """No amplification: every size of request, from a plain 20-byte one
    up, gets an answer no larger than itself, or none."""
    ans = ProbeAnswerer(burst=1e9, global_burst=1e9)
    other = ("2001:db8::1", 7001) if ":" in host else ("10.1.1.1", 7001)
    sizes = set()
    for pad in range(0, 160, 4):
        for fp in (False, True):
            req = encode_binding_request(os.urandom(12), fingerprint=fp, pad_to=pad)
            reply = ans.answer(req, (host, 1), 0.0, other)
            sizes.add(len(req))
            if reply is not None:
                assert len(reply) <= len(req)
    assert ans.stats["too_small"] > 0 and ans.stats["answered"] > 0
    # A plain client's request (no padding) is smaller than any answer.
    assert ans.answer(encode_binding_request(os.urandom(12)), (host, 1), 0.0, None) is None


def test_change_request_and_non_requests_are_not_answered() -> None:
    ans = ProbeAnswerer()
    req = encode_binding_request(os.urandom(12), change_port=True, pad_to=PAD_TO)
    assert ans.answer(req, ("192.0.2.7", 1), 0.0, None) is None
    assert ans.stats["unsupported"] == 1
    with pytest.raises(StunParseError):
        ans.answer(b"\x00\x01" + os.urandom(40), ("192.0.2.7", 1), 0.0, None)
    with pytest.raises(StunParseError):
        resp = encode_binding_response(os.urandom(12), ("192.0.2.1", 1))
        ans.answer(resp + bytes(64), ("192.0.2.7", 1), 0.0, None)
    with pytest.raises(StunParseError):  # well-formed, but not a request
        resp = encode_binding_response(os.urandom(12), ("192.0.2.1", 1), other=("192.0.2.1", 2))
        ans.answer(resp, ("192.0.2.7", 1), 0.0, None)
    assert ans.stats["malformed"] == 3 and ans.stats["answered"] == 0


def test_one_source_gets_its_burst_then_its_rate_and_others_still_get_answers() -> None:
    ans = ProbeAnswerer()
    req = encode_binding_request(os.urandom(12), pad_to=PAD_TO)
    flood = [ans.answer(req, ("192.0.2.66", p), 0.0, None) for p in range(1000)]
    # Ports and the low 64 bits of IPv6 buy no second share.
    flood += [ans.answer(req, (f"2001:db8::{i:x}", 1), 0.0, None) for i in range(1, 500)]
    answered = sum(r is not None for r in flood)
    assert answered == 2 * int(mapping.SOURCE_BURST)
    assert ans.stats["over_budget"] == len(flood) - answered
    # An honest contact elsewhere is still answered.
    assert ans.answer(req, ("203.0.113.5", 1), 0.0, None) is not None
    # The flooder earns SOURCE_RATE answers a second, no more.
    later = [ans.answer(req, ("192.0.2.66", 1), 3.0, None) for _ in range(100)]
    assert sum(r is not None for r in later) == int(3 * mapping.SOURCE_RATE)


def test_the_whole_node_answers_at_most_its_global_budget() -> None:
    """Spoofed sources, each with a fresh burst, still cannot make the node
    answer more than GLOBAL_BURST at once and GLOBAL_RATE a second; the
    source table stays bounded."""
    ans = ProbeAnswerer(max_sources=256)
    req = encode_binding_request(os.urandom(12), pad_to=PAD_TO)
    rng = random.Random(1)
    sent_bytes = answered_bytes = 0
    for t in range(20):  # 20 s of 2000 sources a second
        for _ in range(2000):
            src = (f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}", 1)
            reply = ans.answer(req, src, float(t), None)
            sent_bytes += len(req)
            answered_bytes += len(reply) if reply is not None else 0
        assert len(ans) <= 256
    answered = ans.stats["answered"]
    assert answered <= mapping.GLOBAL_BURST + 19 * mapping.GLOBAL_RATE + 1
    assert answered >= 19 * mapping.GLOBAL_RATE  # it kept answering at its rate
    assert answered_bytes <= sent_bytes
    assert ans.stats["evicted"] > 0


def test_random_and_mutated_requests_raise_only_parse_errors_and_never_amplify() -> None:
    ans = ProbeAnswerer(burst=1e9, global_burst=1e9)
    rng = random.Random(7)
    base = encode_binding_request(os.urandom(12), pad_to=PAD_TO)
    for _ in range(3000):
        data = bytearray(base if rng.random() < 0.7 else os.urandom(rng.randrange(20, 200)))
        for _ in range(rng.randrange(4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data[0:2] = b"\x00\x01"  # what the listener routes here
        try:
            reply = ans.answer(bytes(data), ("192.0.2.7", 9), 0.0, ("10.1.1.1", 7001))
        except StunParseError:
            continue
        assert reply is None or len(reply) <= len(data)
    assert ans.stats["answered"] > 0 and ans.stats["malformed"] > 0
