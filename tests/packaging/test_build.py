"""The package builds, installs and binds csrc/crust.h as documented."""

from __future__ import annotations

import os
import pickle
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from capability import missing

import crust
from crust import _core, errors
from crust._version import __version__

MIB = 1 << 20
MS = 1000
S = 1000 * MS

# The defaults documented in csrc/crust_config_fields.h (crust_config).
DOCUMENTED_DEFAULTS = {
    "max_message_size": 8 * MIB,
    "send_buffer": 16 * MIB,
    "recv_window": 34 * MIB,
    "initial_mtu": 1200,
    "max_mtu": 1472,
    "ack_frequency": 2,
    "max_ack_delay_us": 25 * MS,
    "initial_rtt_us": 333 * MS,
    "idle_timeout_us": 60 * S,
    "keepalive_us": 30 * S,
    "lost_timeout_us": 8 * S,
    "drop_deadline_us": 60 * S,
    "drop_min_prio": 2,
    "cc": _core.CC_BBR,
    "pacing": 1,
    "initial_cwnd_pkts": 10,
    "rekey_interval_us": 120 * S,
    "rekey_packets": 1 << 30,
    "stream_transport": 0,
}

CID_A = bytes(range(1, 9))
CID_B = bytes(range(11, 19))


def test_compiled_module_imports() -> None:
    assert Path(_core.__file__).suffix in {".so", ".pyd"}


@pytest.mark.skipif(not os.environ.get("CRUST_TEST_INSTALLED"), reason="only under scripts/test.sh")
def test_tests_import_the_installed_package() -> None:
    sources = Path(__file__).resolve().parents[2] / "crust"
    assert Path(crust.__file__).resolve().parent != sources, crust.__file__


def test_version_has_one_source() -> None:
    assert crust.__version__ == __version__ == metadata.version("crust")


def test_config_defaults_match_header() -> None:
    assert _core.Config().as_dict() == DOCUMENTED_DEFAULTS


def test_config_keywords_and_properties() -> None:
    cfg = _core.Config(initial_mtu=1300, cc="cubic", pacing=False)
    assert (cfg.initial_mtu, cfg.cc, cfg.pacing) == (1300, _core.CC_CUBIC, 0)
    cfg.cc = "BBR"
    assert cfg.cc == _core.CC_BBR
    cfg.keepalive_us = np.uint64(5 * S)
    assert cfg.keepalive_us == 5 * S
    assert cfg.replace(max_mtu=1400).max_mtu == 1400
    assert cfg == pickle.loads(pickle.dumps(cfg))
    assert repr(_core.Config(initial_mtu=1300)) == "Config(initial_mtu=1300)"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initial_mtu", 100),
        ("recv_window", 1 * MIB),
        ("cc", 7),
        ("cc", "reno"),
        ("send_buffer", -1),
        ("initial_mtu", 1 << 32),
        ("rekey_interval_us", 999),
        ("rekey_packets", 15),
        ("stream_transport", 2),
    ],
)
def test_invalid_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(errors.ConfigError, match=field) as info:
        _core.Config(**{field: value})
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_failed_config_assignment_leaves_value_unchanged() -> None:
    cfg = _core.Config()
    with pytest.raises(errors.ConfigError, match="initial_mtu"):
        cfg.initial_mtu = 10
    assert cfg.initial_mtu == DOCUMENTED_DEFAULTS["initial_mtu"]


def test_config_rejects_unknown_keyword_and_wrong_type() -> None:
    with pytest.raises(TypeError, match="mtu_max"):
        _core.Config(mtu_max=1400)
    with pytest.raises(TypeError, match="initial_mtu"):
        _core.Config(initial_mtu=1200.0)


@pytest.mark.parametrize("bad", [b"", b"1234567", b"123456789", bytearray(16)])
def test_connection_id_length(bad: bytes) -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        _core.Connection(bad, CID_B, 0)
    with pytest.raises(ValueError, match="8 bytes"):
        _core.Connection(CID_A, bad, 0)


def test_aeads_registered_on_import() -> None:
    assert _core.aead_available(_core.AEAD_NULL)
    assert _core.aead_available(_core.AEAD_CHACHA20_POLY1305)
    assert not _core.aead_available(_core.AEAD_COUNT)
    assert _core.AEAD_CHACHA20_POLY1305 in crust._sodium.registered


def test_strerror_and_error_classes() -> None:
    assert _core.strerror(_core.EWOULDBLOCK)
    assert issubclass(errors.MessageTooLarge, ValueError)
    assert issubclass(errors.ConfigError, ValueError)
    for cls in (errors.WouldBlock, errors.ConnectionClosed, errors.NoKeys, errors.ProtocolError):
        assert issubclass(cls, errors.CrustError)


def _pair(aead: int, config: _core.Config | None = None) -> tuple[_core.Connection, ...]:
    a = _core.Connection(CID_A, CID_B, 0, config)
    b = _core.Connection(CID_B, CID_A, 0, config)
    k1, k2, iv1, iv2 = bytes([1] * 32), bytes([2] * 32), bytes([3] * 12), bytes([4] * 12)
    a.set_keys(0, aead, k1, iv1, k2, iv2)
    b.set_keys(0, aead, k2, iv2, k1, iv1)
    return a, b


def _deliver(
    a: _core.Connection, b: _core.Connection, count: int, now: int = 0
) -> list[tuple[int, bytes]]:
    """Pump datagrams both ways on a perfect link until b has `count` messages."""
    got: list[tuple[int, bytes]] = []
    for _ in range(100_000):
        moved = 0
        for src, dst in ((a, b), (b, a)):
            for datagram in src.datagrams_to_send(now):
                assert dst.receive_datagram(datagram, now) == 0
                moved += 1
        for ev_type, prio, payload, *_ in b.poll_events():
            if ev_type == _core.EV_MESSAGE:
                assert payload is not None
                got.append((prio, payload))
        a.poll_events()
        if len(got) >= count:
            return got
        if not moved:
            timers = [t for t in (a.get_timer(), b.get_timer()) if t is not None]
            assert timers, "nothing to send and no timer armed"
            now = max(now, min(timers))
            a.handle_timer(now)
            b.handle_timer(now)
    pytest.fail(f"only {len(got)} of {count} messages arrived")


def test_nothing_is_sent_without_keys() -> None:
    a = _core.Connection(CID_A, CID_B, 0)
    try:
        a.send(b"x", now=0)
    except errors.NoKeys:
        return
    assert a.datagrams_to_send(0) == []


@pytest.mark.parametrize(
    "aead", [_core.AEAD_NULL, _core.AEAD_CHACHA20_POLY1305, _core.AEAD_AES256_GCM]
)
def test_roundtrip_accepts_any_buffer(aead: int) -> None:
    if not _core.aead_available(aead):
        missing("AEAD not available on this CPU")
    a, b = _pair(aead)
    floats = np.arange(1000, dtype=np.float64)
    sent = [
        (0, b"hello"),
        (1, bytearray(b"x" * 3000)),
        (2, memoryview(b"0123456789")[2:7]),
        (3, floats),
        (0, np.frombuffer(os.urandom(70_000), dtype=np.uint8)),
        (1, b""),
    ]
    ids = [a.send(data, prio, now=0) for prio, data in sent]
    assert len(set(ids)) == len(ids)
    got = _deliver(a, b, len(sent))
    for prio in range(_core.NUM_PRIO):
        want = [bytes(memoryview(d).cast("B")) for p, d in sent if p == prio]
        assert [payload for p, payload in got if p == prio] == want
    stats = b.stats()
    assert stats["rx_msgs"] == len(sent)
    assert set(stats) >= {"srtt_us", "rx_dropped_decrypt", "mtu", "state"}


def test_bad_datagrams_are_counted_not_raised() -> None:
    a, b = _pair(_core.AEAD_CHACHA20_POLY1305)
    a.send(b"payload", now=0)
    (datagram, *_) = a.datagrams_to_send(0)
    tampered = bytearray(datagram)
    tampered[-1] ^= 1
    assert b.receive_datagram(bytes(tampered), 0) == _core.EDECRYPT
    assert b.receive_datagram(b"", 0) < 0
    assert b.receive_datagram(b"\xff" * 40, 0) < 0
    assert b.stats()["rx_dropped_decrypt"] == 1
    assert _core.packet_cid(datagram) == CID_B


def test_send_argument_errors() -> None:
    a, _ = _pair(_core.AEAD_NULL, _core.Config(max_message_size=1000))
    with pytest.raises(ValueError, match="priority"):
        a.send(b"x", _core.NUM_PRIO, now=0)
    with pytest.raises(errors.MessageTooLarge):
        a.send(bytes(1001), now=0)
    with pytest.raises(TypeError):
        a.send("text", now=0)  # type: ignore[arg-type]
    a.close(0, graceful=False)
    with pytest.raises(errors.ConnectionClosed):
        a.send(b"x", now=0)
