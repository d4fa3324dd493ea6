"""Delays every packet of one NFQUEUE queue by a fixed time (this kernel
has no netem). Speaks nfnetlink_queue directly over a netlink socket, so it
needs nothing but the standard library; run it inside the namespace whose
iptables rules send packets to the queue (with ``--queue-bypass``, so
traffic flows undelayed if this process is gone).

    python nfq_delay.py QUEUE_NUM DELAY_MS

Prints "ready" once bound. A constant delay keeps arrival order, so a FIFO
of (due time, packet id) is the whole scheduler, and one batch verdict
accepts everything due (copy mode "meta": the packets themselves never
come up to user space). Measured: ~400 Mbit/s of TCP through a 10 ms
link, no queue drops.
"""

from __future__ import annotations

import collections
import errno
import os
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
#: Packets the kernel holds for us before dropping (default 1024): a bulk
#: transfer at a few hundred Mbit/s over 50 ms has more in flight.
QUEUE_MAXLEN = 65536
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


class Queue:
    def __init__(self, num: int) -> None:
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)))
        self._config(_attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)))

    def _send(self, msg_type: int, flags: int, payload: bytes) -> None:
        self.seq += 1
        body = struct.pack("!BBH", socket.AF_UNSPEC, 0, self.num) + payload
        head = struct.pack(
            "=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, self.seq, 0
        )
        self.sock.send(head + body)

    def _config(self, payload: bytes) -> None:
        self._send(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, payload)
        data = self.sock.recv(65536)
        _, kind, _, _, _ = struct.unpack_from("=IHHII", data)
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, 16)
            if err:
                raise OSError(-err, f"nfqueue config: {os.strerror(-err)}")

    def accept_through(self, packet_id: int) -> None:
        """Accepts every held packet with an id up to ``packet_id`` (ids
        grow per queue, and a constant delay releases them in order)."""
        self._send(
            NFQNL_MSG_VERDICT_BATCH,
            NLM_F_REQUEST,
            _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)),
        )

    def packet_ids(self, data: bytes) -> list[int]:
        """Packet ids in one recv of (possibly several) netlink messages."""
        ids = []
        pos = 0
        while pos + 16 <= len(data):
            length, kind, _, _, _ = struct.unpack_from("=IHHII", data, pos)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                a = pos + 20  # after nlmsghdr and nfgenmsg
                while a + 4 <= pos + length:
                    alen, atype = struct.unpack_from("=HH", data, a)
                    if alen < 4:
                        break
                    if atype & 0x7FFF == NFQA_PACKET_HDR:
                        ids.append(struct.unpack_from("!I", data, a + 4)[0])
                    a += (alen + 3) & ~3
            pos += (length + 3) & ~3
        return ids


def main() -> int:
    num, delay = int(sys.argv[1]), float(sys.argv[2]) / 1000.0
    q = Queue(num)
    held: collections.deque[tuple[float, int]] = collections.deque()
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        last = None
        while held and held[0][0] <= now:
            last = held.popleft()[1]
        if last is not None:
            q.accept_through(last)
        timeout = max(0.0, held[0][0] - now) if held else None
        readable, _, _ = select.select([q.sock], [], [], timeout)
        if readable:
            try:
                data = q.sock.recv(1 << 16)
            except OSError as e:
                # The kernel had more to say than the socket buffer held:
                # those packets stay queued until the kernel drops them.
                if e.errno == errno.ENOBUFS:
                    continue
                raise
            due = time.monotonic() + delay
            held.extend((due, pid) for pid in q.packet_ids(data))

if __name__ == "__main__":
    sys.exit(main())
