"""kernel_rtt_us: the kernel's RTT of a TCP link, which the rendezvous
messages carry so the target can time its first SYN (design note 0019)."""

from __future__ import annotations

import socket
import sys

import pytest

from crust.asyncio.tcp_punch import kernel_rtt_us


@pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO layout is Linux's")
def test_connected_tcp_socket_has_a_kernel_rtt() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        with socket.create_connection(srv.getsockname()) as c:
            conn, _ = srv.accept()
            with conn:
                c.sendall(b"x" * 100)
                assert conn.recv(100)
                rtt = kernel_rtt_us(c)
                # Loopback: some microseconds, far below a second.
                assert rtt is not None and 0 < rtt < 1_000_000, rtt


def test_no_rtt_where_there_is_no_tcp_info() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert kernel_rtt_us(udp) is None
    assert kernel_rtt_us(object()) is None
