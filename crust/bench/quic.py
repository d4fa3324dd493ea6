"""The peer benchmark: aioquic (pure-Python QUIC over asyncio), the library a
Python user would otherwise pick, measured in the same run and the same
way as crust: a server in a child process, goodput at the receiver.

- one-stream bulk: the client writes N bytes on one stream;
- datagram rate: unreliable QUIC DATAGRAM frames (RFC 9221) of 64 bytes,
  counted as they reach the server's application.

aioquic needs TLS: a self-signed P-256 certificate is made at run time
with ``cryptography`` (an aioquic dependency). Flow-control windows are
raised to 16 MiB so they do not bound the transfer. Needs the ``bench``
extra (``pip install crust[bench]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import time
from typing import Any

from crust.bench.procs import BenchError, ChildPipe, child

__all__ = ["aioquic_available", "aioquic_bulk", "aioquic_datagrams"]

_WINDOW = 16 << 20
_CHUNK = 1 << 20
# Datagrams aioquic may hold unsent: it queues without bound otherwise.
_QUEUE = 1000


def aioquic_available() -> bool:
    try:
        import aioquic  # noqa: F401
    except ImportError:
        return False
    return True


def _configuration(is_client: bool) -> Any:
    from aioquic.quic.configuration import QuicConfiguration

    cfg = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=["crust-bench"],
        max_data=_WINDOW,
        max_stream_data=_WINDOW,
        max_datagram_frame_size=65536,
    )
    if is_client:
        cfg.verify_mode = ssl.CERT_NONE
    else:
        cfg.certificate, cfg.private_key = _self_signed()
    return cfg


def _self_signed() -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crust-bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


# ---- the server, in a child process ----------------------------------------------


async def _serve(pipe: Any, nbytes: int) -> None:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.asyncio.server import serve
    from aioquic.quic.events import DatagramFrameReceived, QuicEvent, StreamDataReceived

    counts = {"bytes": 0, "first_len": 0, "first": 0, "last": 0, "datagrams": 0}
    done = asyncio.get_running_loop().create_future()

    class Sink(QuicConnectionProtocol):
        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, StreamDataReceived):
                n = len(event.data)
            elif isinstance(event, DatagramFrameReceived):
                n = 0
                counts["datagrams"] += 1
            else:
                return
            counts["last"] = time.perf_counter_ns()
            if not counts["first"]:
                counts["first"], counts["first_len"] = counts["last"], n
            counts["bytes"] += n
            if nbytes and counts["bytes"] >= nbytes and not done.done():
                done.set_result(None)

    server = await serve("127.0.0.1", 0, configuration=_configuration(False), create_protocol=Sink)
    try:
        transport: Any = server._transport  # aioquic names no accessor for it
        pipe.send(transport.get_extra_info("sockname")[:2])
        if nbytes:
            await asyncio.wait_for(done, 300)
        else:
            await asyncio.to_thread(pipe.recv)  # the client finished sending
            await asyncio.sleep(0.2)  # what is in flight lands
        pipe.send(dict(counts))
        await asyncio.to_thread(pipe.recv)
    finally:
        server.close()


def _server(pipe: Any, nbytes: int) -> None:
    asyncio.run(_serve(pipe, nbytes))


async def _client(
    pipe: ChildPipe, addr: tuple[str, int], nbytes: int, seconds: float
) -> dict[str, int]:
    from aioquic.asyncio.client import connect

    sent = 0
    report: dict[str, int]
    async with connect(addr[0], addr[1], configuration=_configuration(True)) as client:
        quic: Any = client._quic
        if nbytes:
            stream = quic.get_next_available_stream_id()
            chunk = bytes(_CHUNK)
            while sent < nbytes:
                sent += _CHUNK
                quic.send_stream_data(stream, chunk, end_stream=sent >= nbytes)
                client.transmit()
                await asyncio.sleep(0)
        else:
            msg = bytes(64)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                if len(getattr(quic, "_datagrams_pending", ())) < _QUEUE:
                    for _ in range(64):
                        quic.send_datagram_frame(msg)
                    sent += 64
                    client.transmit()
                await asyncio.sleep(0)
            pipe.send("sent")
        report = await asyncio.to_thread(pipe.recv)
        pipe.send("stop")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(client.wait_closed(), 1.0)
    return report


def _run(nbytes: int, seconds: float) -> dict[str, int]:
    if not aioquic_available():
        raise BenchError("aioquic is not installed: pip install 'crust[bench]'")
    with child(_server, nbytes) as pipe:
        addr = pipe.recv()
        counts: dict[str, int] = asyncio.run(_client(pipe, addr, nbytes, seconds))
    return counts


def aioquic_bulk(nbytes: int) -> dict[str, Any]:
    """One stream of ``nbytes``; goodput at the server, first byte to last."""
    counts = _run(nbytes, 0.0)
    ns = counts["last"] - counts["first"]
    if counts["bytes"] < nbytes or ns <= 0:
        raise BenchError(f"aioquic delivered {counts['bytes']} of {nbytes} bytes")
    return {
        "bytes": counts["bytes"],
        "bytes_per_s": (counts["bytes"] - counts["first_len"]) / ns * 1e9,
    }


def aioquic_datagrams(seconds: float) -> dict[str, Any]:
    """64-byte DATAGRAM frames for ``seconds``; delivered per second."""
    counts = _run(0, seconds)
    ns = counts["last"] - counts["first"]
    if counts["datagrams"] < 2 or ns <= 0:
        raise BenchError(f"aioquic delivered {counts['datagrams']} datagrams")
    return {
        "datagrams": counts["datagrams"],
        "datagrams_per_s": (counts["datagrams"] - 1) / ns * 1e9,
    }
