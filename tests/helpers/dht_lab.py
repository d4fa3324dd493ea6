"""A private Mainline DHT on loopback for the tests: N libtorrent sessions
in this process, each bound to 127.0.0.1, bootstrapped only to each other.

Never the public DHT: every session's bootstrap list is set explicitly (to
lab nodes), local service discovery, UPnP and NAT-PMP are off, and every
socket is bound to 127.0.0.1, from which the kernel cannot send anywhere
but this machine (:func:`sockets_off_loopback` checks what this process
holds).
"""

from __future__ import annotations

import os
import random
import socket
from typing import Any

from crust.dht.node import load_libtorrent, settings

__all__ = ["LAB_SETTINGS", "PrivateDht", "sockets_off_loopback"]

#: What a DHT of many nodes on one address needs (libtorrent otherwise
#: keeps one node per IP in a routing table bucket and a lookup).
LAB_SETTINGS: dict[str, Any] = {
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "dht_enforce_node_id": False,
    "dht_prefer_verified_node_ids": False,
    "dht_ignore_dark_internet": False,
    # Every lab node sends from 127.0.0.1: libtorrent's per-address limits
    # (5 packets/s, then blocked for minutes) would silence the whole lab.
    "dht_block_ratelimit": 1_000_000,
    "dht_upload_rate_limit": 1 << 20,
}


def _free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PrivateDht:
    """``n`` DHT nodes on ``host`` (127.0.0.1 by default; the NAT lab puts
    them on its server's address on the lab "internet", tests/netlab/
    dht_agent.py); :attr:`bootstrap` names a few of them as ``"host:port"``
    strings for ``ServiceConfig.dht_bootstrap``."""

    def __init__(self, n: int = 50, *, seed: int = 1, host: str = "127.0.0.1") -> None:
        self.lt = load_libtorrent()
        self.host = host
        self.ports: list[int] = []
        self.sessions: list[Any] = []
        rng = random.Random(seed)
        for _ in range(n):
            port = _free_udp_port(host)
            first = [(host, p) for p in self.ports[:4]]
            pack = settings(self.lt, host, port, tuple(first))
            pack.update(LAB_SETTINGS)
            pack["alert_mask"] = 0  # nobody reads them
            self.sessions.append(self.lt.session(pack))
            self.ports.append(port)
        # Each node told about 8 others: the routing tables fill from there
        # (routers, the bootstrap list, are never put in a routing table).
        for i, ses in enumerate(self.sessions):
            for j in rng.sample(range(n), min(n, 9)):
                if j != i:
                    ses.add_dht_node((host, self.ports[j]))

    @property
    def bootstrap(self) -> tuple[str, ...]:
        return tuple(f"{self.host}:{p}" for p in self.ports[:4])

    def close(self) -> None:
        for ses in self.sessions:
            ses.pause()
        self.sessions.clear()


def _inodes() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def sockets_off_loopback() -> list[str]:
    """This process's IP sockets bound or connected anywhere but loopback
    (``"proto local remote"``); empty when all traffic stays here."""
    mine = _inodes()
    bad = []
    for proto in ("udp", "tcp", "udp6", "tcp6"):
        try:
            with open(f"/proc/net/{proto}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, remote, inode = cols[1], cols[2], cols[9]
            if inode not in mine:
                continue
            for hexaddr in (local, remote):
                ip = hexaddr.split(":")[0]
                if len(ip) == 8:
                    b = bytes.fromhex(ip)[::-1]  # little-endian u32
                    ok = b[0] == 127 or b == bytes(4)
                    if b == bytes(4) and hexaddr is local:
                        ok = False  # bound to every interface
                else:
                    raw = bytes.fromhex(ip)
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    ok = words == bytes(15) + b"\x01" or (words == bytes(16) and hexaddr is remote)
                    if words[:12] == bytes(10) + b"\xff\xff":
                        ok = words[12] == 127
                if not ok:
                    bad.append(f"{proto} {local} {remote}")
    return bad
