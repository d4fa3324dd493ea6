"""Bencoding (BEP 3), strict: the only form a signed DHT value may take.

The decoder accepts canonical encodings only (no leading zeros, no ``-0``,
dictionary keys as sorted, unique byte strings) and refuses anything past a
nesting depth and input length, so that one value has one encoding: a
signature over the encoding is then a signature over the value, and a
hostile value cannot make the decoder recurse or allocate without bound.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ["BencodeError", "Value", "decode", "encode"]

Value: TypeAlias = bytes | int | list["Value"] | dict[bytes, "Value"]

#: Deeper nesting than any record needs; bounds the decoder's recursion.
MAX_DEPTH = 8


class BencodeError(ValueError):
    """Not canonical bencoding (or too deep, or trailing bytes)."""


def encode(value: Value) -> bytes:
    """The canonical encoding of ``value`` (dict keys sorted)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    if isinstance(value, bool):  # bool is an int: refuse the ambiguity
        raise TypeError("booleans have no bencoding")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray)):
        out.append(b"%d:" % len(value))
        out.append(bytes(value))
    elif isinstance(value, list):
        out.append(b"l")
        for v in value:
            _encode(v, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for k in sorted(value):
            if not isinstance(k, bytes):
                raise TypeError(f"dictionary keys must be bytes, got {k!r}")
            _encode(k, out)
            _encode(value[k], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """The value ``data`` encodes; :class:`BencodeError` unless it is
    exactly one canonical value."""
    value, end = _decode(bytes(data), 0, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} trailing bytes")
    return value


def _int_at(data: bytes, start: int, stop: int) -> int:
    text = data[start:stop]
    digits = text[1:] if text[:1] == b"-" else text
    if not digits or not digits.isdigit():
        raise BencodeError(f"not an integer at {start}")
    if (digits[:1] == b"0" and len(digits) > 1) or text == b"-0":
        raise BencodeError(f"non-canonical integer at {start}")
    if len(digits) > 20:
        raise BencodeError(f"integer too long at {start}")
    return int(text)


def _decode(data: bytes, i: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if i >= len(data):
        raise BencodeError("truncated")
    c = data[i : i + 1]
    if c == b"i":
        end = data.find(b"e", i + 1)
        if end < 0:
            raise BencodeError("unterminated integer")
        return _int_at(data, i + 1, end), end + 1
    if c.isdigit():
        colon = data.find(b":", i)
        if colon < 0 or colon - i > 7:
            raise BencodeError(f"bad string length at {i}")
        n = _int_at(data, i, colon)
        start = colon + 1
        if start + n > len(data):
            raise BencodeError("truncated string")
        return data[start : start + n], start + n
    if c == b"l":
        items: list[Value] = []
        i += 1
        while data[i : i + 1] != b"e":
            v, i = _decode(data, i, depth + 1)
            items.append(v)
        return items, i + 1
    if c == b"d":
        d: dict[bytes, Value] = {}
        last: bytes | None = None
        i += 1
        while data[i : i + 1] != b"e":
            k, i = _decode(data, i, depth + 1)
            if not isinstance(k, bytes):
                raise BencodeError("dictionary key is not a string")
            if last is not None and k <= last:
                raise BencodeError("dictionary keys not sorted and unique")
            last = k
            d[k], i = _decode(data, i, depth + 1)
        return d, i + 1
    raise BencodeError(f"unexpected byte {c!r} at {i}")
