"""Write the seed corpora of the libFuzzer targets (tests/fuzz/*.c) into
tests/data/fuzz_frame/, tests/data/fuzz_packet/ and tests/data/fuzz_conn/.

Each seed is a small VALID input in the target's format, so the fuzzer
starts from inputs that reach deep code instead of having to discover the
formats first. The output is deterministic; rerun after changing a format:

    python tests/fuzz/make_seeds.py
"""

from __future__ import annotations

import struct
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
CID_US = b"\xc1" * 8

# Frame types (csrc/frame.h).
PADDING, PING, ACK, STREAM, MAX_DATA = 0x00, 0x01, 0x02, 0x08, 0x10
PATH_CHALLENGE, PATH_RESPONSE, CLOSE = 0x1A, 0x1B, 0x1C

# fuzz_conn opcodes (tests/fuzz/fuzz_conn.c).
OP_FRAMES, OP_ACK, OP_POLL, OP_TIME, OP_EVENTS, OP_SEND, OP_CLOSE, OP_PROBE = range(8)
OP_UPDATE, OP_STREAM, OP_RESPOND, OP_MAXDATA, OP_PING, OP_PEER_CLOSE, OP_GAPS = range(8, 15)


def varint(v: int) -> bytes:
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return struct.pack(">H", 0x4000 | v)
    if v < 1 << 30:
        return struct.pack(">I", 0x8000_0000 | v)
    return struct.pack(">Q", 0xC000_0000_0000_0000 | v)


def ack(largest: int, delay: int, first: int, ranges: list[tuple[int, int]]) -> bytes:
    out = bytes([ACK]) + varint(largest) + varint(delay) + varint(len(ranges)) + varint(first)
    for gap, length in ranges:
        out += varint(gap) + varint(length)
    return out


def stream(prio: int, offset: int, data: bytes) -> bytes:
    return bytes([STREAM + prio]) + varint(offset) + varint(len(data)) + data


def message(body: bytes) -> bytes:
    return varint(len(body)) + body


def frame_seeds() -> dict[str, bytes]:
    hello = message(b"hello")
    return {
        "ping_padding": bytes([PING, PADDING, PADDING, PADDING]),
        "ack_one_range": ack(100, 25, 10, []),
        "ack_three_ranges": ack(1000, 3125, 5, [(0, 3), (7, 0), (100, 20)]),
        "stream_each_prio": b"".join(stream(p, 0, hello) for p in range(4)),
        "stream_high_offset": stream(2, 1 << 20, b"x" * 40),
        "control": bytes([MAX_DATA])
        + varint(1 << 25)
        + bytes([PATH_CHALLENGE])
        + bytes(range(8))
        + bytes([PATH_RESPONSE])
        + bytes(range(8, 16)),
        "close": bytes([CLOSE]) + varint(2) + varint(42),
        "pn_decode": struct.pack(">Q", 1 << 20) + bytes([0x01]) + b"\x00\x10\x00\x00",
    }


def packet_record(ctl: int, datagram: bytes) -> bytes:
    assert len(datagram) < 256
    return bytes([ctl, len(datagram)]) + datagram


def short_header(pn: int, phase: int = 0, pnlen: int = 4) -> bytes:
    flags = 0x40 | (0x04 if phase else 0) | (pnlen - 1)
    return bytes([flags]) + CID_US + pn.to_bytes(pnlen, "big")


def packet_seeds() -> dict[str, bytes]:
    # ctl 0x0b: our cid, sealed valid, send the reply; 0x0f also advances time.
    hello = stream(0, 0, message(b"hello"))
    return {
        "one_message": packet_record(0x0B, short_header(0) + hello),
        "sequence_and_replay": packet_record(0x0B, short_header(0) + bytes([PING]))
        + packet_record(0x0B, short_header(1) + hello)
        + packet_record(0x0B, short_header(1) + hello)
        + packet_record(0x0F, short_header(2, pnlen=1) + bytes([PING])),
        "key_phase_one": packet_record(0x0B, short_header(0) + bytes([PING]))
        + packet_record(0x0B, short_header(1, phase=1) + hello),
        "garbage_and_junk": packet_record(0x01, short_header(5) + b"\x99" * 40)
        + packet_record(0x00, b"\x80" + b"\x00" * 30)
        + packet_record(0x0B, short_header(3) + bytes([0x3F, 0x00])),
        "close": packet_record(0x0B, short_header(0) + bytes([CLOSE]) + varint(2) + varint(7)),
    }


def conn_op(op: int, *args: int) -> bytes:
    return bytes([op, *args])


def conn_frames(ctl: int, frames: bytes) -> bytes:
    return bytes([OP_FRAMES, ctl]) + struct.pack("<H", len(frames)) + frames


def conn_stream(prio: int, ctl: int, mlen: int, back: int) -> bytes:
    return bytes([OP_STREAM, prio, ctl]) + struct.pack("<HI", mlen, back)


def conn_ack(back: int, first: int, shape: int = 0, delay: int = 0) -> bytes:
    return bytes([OP_ACK, back, first, shape, delay])


def conn_time(v: int, shift: int) -> bytes:
    return bytes([OP_TIME]) + struct.pack("<H", v) + bytes([shift])


def conn_send(prio_byte: int, length: int) -> bytes:
    return bytes([OP_SEND, prio_byte]) + struct.pack("<H", length)


def conn_seeds() -> dict[str, bytes]:
    # Config byte 0x40: defaults without idle timeout and keepalive;
    # 0x62 adds pacing off and key updates every 16 packets.
    send_and_ack = (
        conn_send(0, 1000)
        + conn_send(1, 3000)
        + conn_op(OP_POLL, 20)
        + conn_time(20, 10)
        + conn_ack(0, 255, 0, 3)
        + conn_op(OP_EVENTS)
    )
    receive = (
        conn_stream(0, 1, 100, 200)
        + conn_stream(1, 1, 2000, 2002)
        + conn_stream(1, 0, 0, 702)
        + conn_op(OP_EVENTS)
        + conn_op(OP_POLL, 4)
    )
    holes = (
        conn_stream(2, 3, 1000, 1100)
        + conn_stream(2, 1, 10, 11)
        + conn_stream(2, 0, 0, 1013)
        + conn_op(OP_EVENTS)
    )
    rekey = b"".join(
        conn_send(0, 800) + conn_op(OP_POLL, 3) + conn_ack(0, 255) + conn_time(0, 0)
        for _ in range(12)
    ) + (conn_op(OP_EVENTS) + conn_op(OP_UPDATE) + conn_op(OP_PING, 4) + conn_op(OP_EVENTS))
    loss = (
        conn_send(0, 20000)
        + conn_op(OP_POLL, 30)
        + conn_ack(2, 3, 0b111001)
        + conn_time(0, 0)
        + conn_time(0, 0)
        + conn_op(OP_POLL, 30)
        + conn_op(OP_EVENTS)
    )
    control = (
        conn_op(OP_PROBE)
        + conn_op(OP_POLL, 2)
        + conn_op(OP_RESPOND)
        + conn_op(OP_MAXDATA, 0, 1, 20)
        + conn_frames(0, bytes([PATH_CHALLENGE]) + bytes(range(8)))
        + conn_op(OP_POLL, 2)
        + conn_op(OP_EVENTS)
    )
    closes = (
        conn_send(3, 10)
        + conn_op(OP_CLOSE, 1, 9)
        + conn_op(OP_POLL, 2)
        + conn_ack(0, 255)
        + conn_op(OP_PEER_CLOSE, 1, 3)
        + conn_time(0, 0)
        + conn_op(OP_EVENTS)
    )
    # A small window (config bit 2) filled and consumed: the engine reopens it.
    window = b"".join(conn_stream(0, 0x41, 4000, 4002) + conn_op(OP_EVENTS) for _ in range(40))
    window += conn_op(OP_POLL, 4)
    # A message over the small max_message_size: protocol close, and then
    # no phantom events (found crust_conn_has_event answering 1 forever).
    oversized = conn_stream(0, 0x41, 16000, 16003) + conn_op(OP_EVENTS) + conn_op(OP_EVENTS)
    spurious = (
        b"".join(conn_send(0, 1000) for _ in range(20))
        + conn_op(OP_POLL, 30)
        + conn_ack(0, 0)
        + conn_ack(0, 255)
        + conn_op(OP_EVENTS)
    )
    replay = conn_op(OP_PING, 0) + conn_op(OP_PING, 0xF3) + conn_op(OP_PING, 0xF2)
    # Config 0xC2 is a stream transport: whole messages in order, opened
    # straight into their buffers; then one resent (a misprediction).
    in_place = b"".join(
        conn_stream(p, 0x41, 9000 + 500 * p, 9002 + 500 * p) + conn_op(OP_EVENTS) for p in (0, 1, 0)
    ) + conn_stream(1, 0x40, 0, 3000) + conn_op(OP_EVENTS) + conn_op(OP_POLL, 4)
    return {
        "stream_in_place": b"\xc2" + in_place,
        "window_reopens": b"\x44" + window,
        "oversized_message": b"\x44" + oversized,
        "spurious_loss": b"\x42" + spurious,
        "replay_window": b"\x40" + replay,
        "ack_ranges": b"\x40" + bytes([OP_GAPS]) + struct.pack("<H", 300) + conn_op(OP_POLL, 2),
        "send_and_ack": b"\x40" + send_and_ack,
        "receive_messages": b"\x44" + receive,
        "reassembly_holes": b"\x40" + holes,
        "key_updates": b"\x62" + rekey,
        "loss_and_pto": b"\x41" + loss,
        "path_and_max_data": b"\x00" + control,
        "close_both_ways": b"\x50" + closes,
        "raw_frames": b"\x08"
        + conn_frames(0, stream(0, 0, message(b"raw")) + bytes([PING]))
        + conn_frames(1, ack(0, 0, 0, []))
        + conn_op(OP_EVENTS),
    }


def main() -> None:
    for target, seeds in (
        ("fuzz_frame", frame_seeds()),
        ("fuzz_packet", packet_seeds()),
        ("fuzz_conn", conn_seeds()),
    ):
        out = DATA / target
        out.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (out / name).write_bytes(data)
        print(f"{out}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
