"""The Prometheus exporter (crust[metrics]): scraped over loopback, from
the library and from `crust node --metrics-port`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from capability import missing

from crust import Identity, Service, ServiceConfig

QUIET = {"gossip": False, "beacon": False, "cache_size": 0, "backup_port": False}


@pytest.fixture(autouse=True)
def _needs_prometheus_client() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        missing("prometheus-client not installed (pip install '.[test]')")


async def _scrape(host: str, port: int, path: str = "/metrics") -> tuple[str, str]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return head.splitlines()[0], body


def _sample(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the scrape:\n{body}")


def test_scrape_shows_the_service_stats() -> None:
    from crust.metrics import serve

    async def main() -> None:
        cfg = ServiceConfig(identity=Identity.generate(), **QUIET)
        async with Service(cfg) as a, Service(cfg.replace(identity=Identity.generate())) as b:
            server = await serve(a, 0)
            try:
                host, port = server.address
                status, body = await _scrape(host, port)
                assert status == "HTTP/1.1 200 OK"
                assert _sample(body, "crust_peers") == 0
                peer = await a.connect(b.endpoints[0])
                await peer.send(b"x" * 5000)
                status, body = await _scrape(host, port)
                assert _sample(body, "crust_peers") == 1
                assert _sample(body, 'crust_connections_total{kind="outgoing"}') == 1
                assert _sample(body, "crust_sent_bytes_total") >= 5000
                rtt = [ln for ln in body.splitlines() if ln.startswith("crust_peer_rtt_seconds{")]
                assert len(rtt) == 1 and f'peer="{b.id}"' in rtt[0] and peer.path in rtt[0]
                status, _ = await _scrape(host, port, "/nope")
                assert status == "HTTP/1.1 404 Not Found"
            finally:
                server.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_missing_prometheus_client_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from crust import metrics

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'crust\[metrics\]'"):
        metrics.collector(None)  # type: ignore[arg-type]


def test_crust_node_metrics_port(tmp_path: Path) -> None:
    env_dirs = {"XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    node = subprocess.Popen(
        [sys.executable, "-m", "crust", "node", "--host", "127.0.0.1", "--json",
         "--metrics-port", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **env_dirs, "CRUST_BEACON": "false", "CRUST_CACHE_SIZE": "0"},
    )  # fmt: skip
    try:
        assert node.stdout is not None
        started = json.loads(node.stdout.readline())
        assert started["event"] == "Started"
        serving = json.loads(node.stdout.readline())
        assert serving["event"] == "MetricsServing"
        # Not urllib: it would follow an http_proxy setting off the machine.
        host, port = serving["url"].split("//")[1].split("/")[0].split(":")
        status, body = asyncio.run(_scrape(host, int(port)))
        assert status == "HTTP/1.1 200 OK"
        assert _sample(body, "crust_peers") == 0
        assert _sample(body, "crust_uptime_seconds") >= 0
    finally:
        node.send_signal(signal.SIGINT)
        _, err = node.communicate(timeout=20)
    assert node.returncode == 130, err
