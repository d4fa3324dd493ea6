"""A Prometheus exporter for :meth:`crust.Service.stats` (``crust[metrics]``).

    server = await crust.metrics.serve(svc, 9464)   # http://127.0.0.1:9464/metrics
    ...
    server.close()

The HTTP endpoint runs on the service's own event loop and reads
``svc.stats()`` at each scrape: the service is not thread-safe, so there
is no exporter thread and no copy that could go stale. ``prometheus-client``
is imported only here, and only when this is used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crust.service import Service

__all__ = ["MetricsServer", "collector", "serve"]

logger = logging.getLogger(__name__)

# PeerStats fields exported per peer: (stats key, metric suffix, help).
_PER_PEER = (
    ("rtt", "rtt_seconds", "smoothed round-trip time"),
    ("min_rtt", "min_rtt_seconds", "lowest round-trip time seen"),
    ("cwnd", "cwnd_bytes", "congestion window"),
    ("bytes_in_flight", "bytes_in_flight", "bytes sent and not yet acknowledged"),
    ("sent_bytes", "sent_bytes_total", "bytes sent"),
    ("received_bytes", "received_bytes_total", "bytes received"),
    ("lost_packets", "lost_packets_total", "packets declared lost"),
    ("mtu", "mtu_bytes", "path MTU in use"),
)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ImportError(
            "the Prometheus exporter needs prometheus-client: pip install 'crust[metrics]'"
        ) from None
    return prometheus_client


def collector(svc: Service) -> Any:
    """A prometheus-client collector of ``svc``'s stats (register it in a
    ``CollectorRegistry`` of your own to serve them another way)."""
    core = _prometheus().metrics_core

    class _Collector:
        def collect(self) -> Iterator[Any]:
            st = svc.stats()
            yield core.GaugeMetricFamily("crust_peers", "connected peers", value=st["peers"])
            yield core.GaugeMetricFamily(
                "crust_uptime_seconds", "seconds since the service started", value=st["uptime"]
            )
            conns = core.CounterMetricFamily(
                "crust_connections", "connection counters since start", labels=["kind"]
            )
            for kind, n in st["connections"].items():
                conns.add_metric([kind], n)
            yield conns
            lost = core.CounterMetricFamily(
                "crust_lost_peers", "connections ended, by reason", labels=["reason"]
            )
            for reason, n in st["lost_reasons"].items():
                lost.add_metric([reason], n)
            yield lost
            for key, n in st["traffic"].items():
                yield core.CounterMetricFamily(
                    f"crust_{key}", f"{key.replace('_', ' ')}, all connections", value=n
                )
            hs = core.CounterMetricFamily(
                "crust_handshake", "handshake responder counters", labels=["counter"]
            )
            for name, n in st["handshake"].items():
                hs.add_metric([name], n)
            yield hs
            refl = core.CounterMetricFamily(
                "crust_reflection",
                "sends to unverified addresses charged to their requesters",
                labels=["counter"],
            )
            for name, n in st["reflection"].items():
                if name != "sources":
                    refl.add_metric([name], n)
            yield refl
            for key, suffix, text in _PER_PEER:
                counter = suffix.endswith("_total")
                kind = core.CounterMetricFamily if counter else core.GaugeMetricFamily
                name = f"crust_peer_{suffix.removesuffix('_total')}"
                fam = kind(name, f"per peer: {text}", labels=["peer", "path"])
                for pid, entry in st["per_peer"].items():
                    values: dict[str, Any] = dict(entry)
                    fam.add_metric([pid, entry["path"]], values[key])
                yield fam

    return _Collector()


class MetricsServer:
    """The running exporter: ``address`` is where it listens."""

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        host, port = server.sockets[0].getsockname()[:2]
        self.address: tuple[str, int] = (host, port)

    def close(self) -> None:
        self._server.close()


async def serve(svc: Service, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``svc``'s stats at ``http://host:port/metrics`` (Prometheus
    text format) until :meth:`MetricsServer.close`. Loopback by default:
    the figures name peers and addresses."""
    prom = _prometheus()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(collector(svc))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path.split(b"?")[0] in (b"/metrics", b"/"):
                body, status = prom.generate_latest(registry), b"200 OK"
            else:
                body, status = b"not found: try /metrics\n", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + prom.CONTENT_TYPE_LATEST.encode()
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            logger.debug("metrics request failed: %s", e)
        except asyncio.TimeoutError:
            logger.debug("metrics request: no request line within 10 s")
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    return MetricsServer(server)
