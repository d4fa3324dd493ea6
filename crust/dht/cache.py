"""Resolved DHT records, kept until they expire, and the highest sequence
number seen per peer (what makes a replayed older record useless once a
newer one was seen). Both bounded: least recently used entries go first."""

from __future__ import annotations

from collections import OrderedDict

from crust.dht.record import Record
from crust.identity import PeerId

__all__ = ["RecordCache"]


class RecordCache:
    """Records by peer id, each used until its own expiry (or ``max_age``
    seconds after it was fetched, whichever comes first: a node's endpoints
    move, and a fresh lookup costs well under a second)."""

    def __init__(self, size: int = 4096, max_age: float = 300.0) -> None:
        self._size = size
        self._max_age = max_age
        self._records: OrderedDict[PeerId, tuple[Record, float]] = OrderedDict()
        self._seen: OrderedDict[PeerId, int] = OrderedDict()

    def get(self, peer_id: PeerId, now: float) -> Record | None:
        """The cached record of ``peer_id`` while it holds, else None."""
        hit = self._records.get(peer_id)
        if hit is None:
            return None
        record, until = hit
        if now >= until:
            del self._records[peer_id]
            return None
        self._records.move_to_end(peer_id)
        return record

    def seen_seq(self, peer_id: PeerId) -> int | None:
        """The highest record sequence number accepted for ``peer_id``."""
        return self._seen.get(peer_id)

    def put(self, peer_id: PeerId, record: Record, now: float) -> None:
        """Keep a verified record (the caller checked it is not older than
        :meth:`seen_seq`)."""
        until = min(float(record.expires), now + self._max_age)
        self._records[peer_id] = (record, until)
        self._records.move_to_end(peer_id)
        seen = self._seen.get(peer_id)
        self._seen[peer_id] = record.seq if seen is None else max(seen, record.seq)
        self._seen.move_to_end(peer_id)
        for table in (self._records, self._seen):
            while len(table) > self._size:
                table.popitem(last=False)

    def forget(self, peer_id: PeerId) -> None:
        """Drop the cached record (its endpoints failed); the sequence
        number seen is kept."""
        self._records.pop(peer_id, None)

    def __len__(self) -> int:
        return len(self._records)
