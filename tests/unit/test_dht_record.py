"""The DHT record (crust.dht.record), sans-IO: what a node publishes, and
every way a record from the DHT is refused: forged, for another key or
network, replayed (older sequence number), oversize, malformed, expired,
from the future. No libtorrent needed."""

from __future__ import annotations

import time

import pytest

from crust.dht import bencode
from crust.dht.cache import RecordCache
from crust.dht.record import (
    MAX_VALUE,
    Contact,
    Record,
    RecordError,
    SignedItem,
    decode_value,
    expanded_secret,
    network_salt,
    sign,
    signed_buffer,
    verify,
)
from crust.identity import Identity

SALT = network_salt("test")
NOW = 1_800_000_000


def _record(seq: int = 5, **kw: object) -> Record:
    other = Identity.from_seed(b"c" * 32).peer_id
    base: dict[str, object] = dict(
        endpoints=(("203.0.113.7", 40000), ("2001:db8::1", 40001)),
        contacts=(Contact(other, ("198.51.100.2", 5483)),),
        seq=seq,
        issued=NOW,
        ttl=7200,
    )
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


def _item(ident: Identity, record: Record, *, bep44_seq: int = 1, salt: bytes = SALT) -> SignedItem:
    value = record.value()
    return SignedItem(
        bytes(ident.peer_id), salt, bep44_seq, value, sign(ident, salt, bep44_seq, value)
    )


def _check(ident: Identity, item: SignedItem, seen: int | None = None) -> Record:
    return verify(item, peer_id=ident.peer_id, salt=SALT, now=NOW + 10, seen_seq=seen)


def test_round_trip() -> None:
    ident = Identity.generate()
    rec = _record()
    assert _check(ident, _item(ident, rec)) == rec
    assert decode_value(rec.value()) == rec
    assert len(rec.value()) < 200


def test_largest_record_fits_bep44() -> None:
    other = Identity.generate().peer_id
    rec = _record(
        endpoints=tuple((f"2001:db8::{i + 1:x}", 65535) for i in range(16)),
        contacts=tuple(Contact(other, (f"2001:db8::{i + 1:x}", 65535)) for i in range(8)),
        seq=(1 << 63) - 1,
    )
    assert len(rec.value()) <= MAX_VALUE


def test_expanded_secret_is_libsodiums_scalar() -> None:
    """libtorrent signs with SHA-512(seed) clamped: the same scalar libsodium
    derives, so a public key computed from it is the peer id."""
    import nacl.bindings as sodium

    ident = Identity.generate()
    scalar = expanded_secret(ident.seed)[:32]
    assert sodium.crypto_scalarmult_ed25519_base_noclamp(scalar) == bytes(ident.peer_id)


def test_signed_buffer_layout() -> None:
    assert signed_buffer(b"foobar", 1, b"12:Hello World!") == (
        b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
    )  # the example in BEP 44
    assert signed_buffer(b"", 1, b"12:Hello World!") == b"3:seqi1e1:v12:Hello World!"


def test_forged_signature_is_refused() -> None:
    ident, mallory = Identity.generate(), Identity.generate()
    rec = _record()
    forged = _item(mallory, rec)
    forged = SignedItem(bytes(ident.peer_id), SALT, forged.seq, forged.value, forged.signature)
    with pytest.raises(RecordError) as e:
        _check(ident, forged)
    assert e.value.reason == "signature"
    good = _item(ident, rec)
    # One bit flipped anywhere signed: value, sequence number, salt.
    tampered = [
        SignedItem(good.key, good.salt, good.seq + 1, good.value, good.signature),
        SignedItem(
            good.key, good.salt, good.seq, good.value.replace(b"i5e", b"i6e"), good.signature
        ),
        SignedItem(good.key, good.salt, good.seq, good.value, bytes(64)),
    ]
    for item in tampered:
        with pytest.raises(RecordError) as e:
            _check(ident, item)
        assert e.value.reason == "signature"


def test_wrong_key_and_salt_are_refused() -> None:
    ident, other = Identity.generate(), Identity.generate()
    with pytest.raises(RecordError) as e:
        _check(ident, _item(other, _record()))  # valid, but another peer's
    assert e.value.reason == "key"
    with pytest.raises(RecordError) as e:
        _check(ident, _item(ident, _record(), salt=network_salt("other network")))
    assert e.value.reason == "salt"


def test_replayed_older_record_is_refused() -> None:
    ident = Identity.generate()
    old, new = _item(ident, _record(seq=5)), _item(ident, _record(seq=6), bep44_seq=1)
    cache = RecordCache()
    cache.put(ident.peer_id, _check(ident, new), NOW)
    with pytest.raises(RecordError) as e:
        _check(ident, old, cache.seen_seq(ident.peer_id))
    assert e.value.reason == "replayed"
    # The same record again is fine (the DHT hands it out many times).
    assert _check(ident, new, cache.seen_seq(ident.peer_id)).seq == 6


def test_oversize_value_is_refused_before_anything_else() -> None:
    ident = Identity.generate()
    inner = _record().encode()[:-1] + b"1:z" + b"%d:" % 1000 + b"x" * 1000 + b"e"
    value = b"%d:%s" % (len(inner), inner)
    item = SignedItem(bytes(ident.peer_id), SALT, 1, value, sign(ident, SALT, 1, value))
    with pytest.raises(RecordError) as e:
        _check(ident, item)
    assert e.value.reason == "size"


def test_too_many_endpoints_cannot_be_made_or_accepted() -> None:
    with pytest.raises(ValueError):
        _record(endpoints=tuple(("192.0.2.1", 1000 + i) for i in range(17))).encode()
    ident = Identity.generate()
    d = bencode.decode(_record().encode())
    assert isinstance(d, dict)
    d[b"a"] = [bytes([192, 0, 2, 1]) + (1000 + i).to_bytes(2, "big") for i in range(17)]
    inner = bencode.encode(d)
    value = b"%d:%s" % (len(inner), inner)
    item = SignedItem(bytes(ident.peer_id), SALT, 1, value, sign(ident, SALT, 1, value))
    with pytest.raises(RecordError) as e:
        _check(ident, item)
    assert e.value.reason == "malformed"


@pytest.mark.parametrize(
    "inner",
    [
        b"de",
        b"le",
        b"i1e",
        b"d1:ai1ee",
        # Not canonical: keys out of order, leading zeros.
        b"d1:cle1:ale1:qi1e1:ti1e1:vi1e1:xi1ee",
        b"d1:ale1:cle1:qi01e1:ti1e1:vi1e1:xi1ee",
        # Bad field values.
        b"d1:al3:abce1:cle1:qi1e1:ti1e1:vi1e1:xi1ee",
        b"d1:al6:\x00\x00\x00\x00\x00\x01e1:cle1:qi1e1:ti1e1:vi1e1:xi1ee",
        b"d1:al6:\x7f\x00\x00\x01\x00\x00e1:cle1:qi1e1:ti1e1:vi1e1:xi1ee",
        b"d1:ale1:cl38:" + b"\x00" * 38 + b"e1:qi1e1:ti1e1:vi1e1:xi1ee",
        b"d1:ale1:cle1:qi-1e1:ti1e1:vi1e1:xi1ee",
        b"d1:ale1:cle1:qi1e1:ti1e1:vi2e1:xi1ee",
        b"d1:ale1:cle1:qi1e1:ti1e1:vi1e1:xi0ee",
        b"d1:ale1:cle1:qi1e1:ti1e1:vi1e1:xi1e1:yi1ee",
        b"d1:ale1:cle1:qi1e1:ti1e1:vi1e1:xi1ee" + b"x",
        b"l" * 50 + b"e" * 50,
    ],
)
def test_malformed_records_are_refused(inner: bytes) -> None:
    ident = Identity.generate()
    value = b"%d:%s" % (len(inner), inner)
    item = SignedItem(bytes(ident.peer_id), SALT, 1, value, sign(ident, SALT, 1, value))
    with pytest.raises(RecordError) as e:
        _check(ident, item)
    assert e.value.reason == "malformed"


def test_expired_and_future_records_are_refused() -> None:
    ident = Identity.generate()
    with pytest.raises(RecordError) as e:
        _check(ident, _item(ident, _record(issued=NOW - 7300)))
    assert e.value.reason == "expired"
    with pytest.raises(RecordError) as e:
        _check(ident, _item(ident, _record(issued=NOW + 3600)))
    assert e.value.reason == "future"


def test_cache_honours_expiry_and_bounds() -> None:
    ident = Identity.generate()
    cache = RecordCache(size=2, max_age=100)
    rec = _record(issued=NOW, ttl=50)
    cache.put(ident.peer_id, rec, NOW)
    assert cache.get(ident.peer_id, NOW + 49) == rec
    assert cache.get(ident.peer_id, NOW + 50) is None  # the record's own expiry
    assert cache.seen_seq(ident.peer_id) == rec.seq  # kept after expiry
    cache.put(ident.peer_id, _record(issued=NOW, ttl=7200), NOW)
    assert cache.get(ident.peer_id, NOW + 100) is None  # max_age
    for _ in range(5):
        cache.put(Identity.generate().peer_id, rec, NOW)
    assert len(cache) <= 2 and cache.seen_seq(ident.peer_id) is None


def test_withdrawn_record() -> None:
    assert Record((), (), 1, int(time.time()), 60).withdrawn
    assert not _record().withdrawn


def test_missing_libtorrent_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """crust[dht] is optional: without libtorrent, turning the DHT on says
    what to install (and nothing imports it before)."""
    import asyncio
    import sys

    import crust
    from crust.dht.node import DhtUnavailable, load_libtorrent

    monkeypatch.setitem(sys.modules, "libtorrent", None)  # import raises ImportError
    with pytest.raises(DhtUnavailable, match=r"pip install 'crust\[dht\]'"):
        load_libtorrent()

    async def main() -> None:
        svc = crust.Service(network="no-lt", identity=Identity.generate(), dht=True)
        with pytest.raises(DhtUnavailable, match="libtorrent"):
            await svc.start()
        assert svc.closing  # started nothing it left open

    asyncio.run(main())
