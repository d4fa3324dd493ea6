"""A handshake flood from one host, in a child process (the victim must
not share its CPU time with the attacker's Python):

    python flood.py SRC HOST PORT NETWORK SECONDS RATE [--solve]

XX initiations with a valid mac1 from 1,024 UDP ports of SRC, RATE a
second; with ``--solve`` each port reads its cookie reply and sends every
later initiation with a valid mac2 (a cookie belongs to an address and
port, so one per port is all it takes). Prints one JSON line: what was
sent, and the replies by kind.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import nacl.bindings as sodium

from crust.handshake import (
    HEADER_LEN,
    MAC_LEN,
    Initiator,
    _labelled_key,
    _mac,
)
from crust.identity import Identity

PORTS = 1024
_NONCE = 24  # crust.handshake._COOKIE_NONCE_LEN


def main() -> None:
    src, host, port, network = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    seconds, rate = float(sys.argv[5]), float(sys.argv[6])
    solve = "--solve" in sys.argv
    target = (host, port)
    name = network.encode()
    mac1_key = _labelled_key(b"crust mac1", name, None)
    cookie_key = _labelled_key(b"crust cookie", name, None)
    template = Initiator(
        Identity.generate(), network, remote=None, local_cid=b"\x01" * 8, now=0
    ).datagrams_to_send(0)[0]
    socks = []
    for _ in range(PORTS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        s.setblocking(False)
        socks.append(s)
    cookies: list[bytes | None] = [None] * PORTS
    mac1_of: dict[int, bytes] = {}  # initiation counter -> its mac1
    replies = {"cookie": 0, "response": 0, "other": 0}
    sent = failed = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while (now := time.monotonic()) < end:
        due = int((now - t0) * rate)
        while sent < due:
            k = sent % PORTS
            body = bytearray(template[: -2 * MAC_LEN])
            body[14:22] = sent.to_bytes(8, "big")
            body[22:54] = os.urandom(32)
            mac1 = _mac(mac1_key, bytes(body))
            cookie = cookies[k]
            head = bytes(body) + mac1
            pkt = head + (_mac(cookie, head) if cookie else bytes(MAC_LEN))
            if solve and cookie is None:
                mac1_of[sent] = mac1
            try:
                socks[k].sendto(pkt, target)
            except BlockingIOError:
                failed += 1
            sent += 1
        for k, s in enumerate(socks):
            while True:
                try:
                    d = s.recv(2048)
                except BlockingIOError:
                    break
                kind = d[0] & 0x3F
                if kind == 4:
                    replies["cookie"] += 1
                    n = int.from_bytes(d[6:14], "big")
                    m1 = mac1_of.pop(n, None)
                    if solve and m1 is not None and cookies[k] is None:
                        cookies[k] = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                            d[HEADER_LEN + _NONCE :], m1, d[HEADER_LEN : HEADER_LEN + _NONCE],
                            cookie_key,
                        )  # fmt: skip
                elif kind == 2:
                    replies["response"] += 1
                else:
                    replies["other"] += 1
        if len(mac1_of) > 100_000:
            mac1_of.clear()
        time.sleep(0.001)
    took = time.monotonic() - t0
    print(json.dumps({
        "sent": sent, "send_failed": failed, "seconds": took, "rate": sent / took,
        "cookies_solved": sum(c is not None for c in cookies), **replies,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
