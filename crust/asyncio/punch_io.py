"""Sending one punch packet with a per-packet IP TTL."""

from __future__ import annotations

import logging
import socket
import struct

from crust.peer import Address

__all__ = ["send_with_ttl"]

logger = logging.getLogger(__name__)


def send_with_ttl(sock: socket.socket, data: bytes, addr: Address, ttl: int | None) -> None:
    """Send ``data`` from ``sock``; ``ttl`` (None: the socket's own) goes
    as ancillary data, so the socket's TTL is left alone. Errors (a full
    buffer, an unreachable candidate) are logged: the next round retries."""
    try:
        if ttl is None:
            sock.sendto(data, addr)
        elif sock.family == socket.AF_INET6:
            cmsg = (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, struct.pack("i", ttl))
            sock.sendmsg([data], [cmsg], 0, addr)
        else:
            cmsg = (socket.IPPROTO_IP, socket.IP_TTL, struct.pack("i", ttl))
            sock.sendmsg([data], [cmsg], 0, addr)
    except OSError as e:
        logger.debug("punch to %s:%d not sent: %s", addr[0], addr[1], e)
