"""Connect by peer id through a rendezvous node, across the lab's NATs: the
acceptance matrix of issue 7 (each pair 20 trials, fresh services and ports
per trial, pairs run concurrently) and the relayed-to-direct upgrade."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import figures
import pytest
from lab import BOOTSTRAP_IP, Lab, Node, Proc

AGENT = Path(__file__).with_name("traversal_agent.py")
RUN = f"import runpy; runpy.run_path({str(AGENT)!r}, run_name='__main__')"
BOOT_PORT = 7000
BOOT_IP_PORT = f"{BOOTSTRAP_IP}:{BOOT_PORT}"
# The acceptance criterion is >= 20 trials per pair; a developer may ask for
# more (never fewer counts as a pass: the checks below use this number).
TRIALS = max(20, int(os.environ.get("CRUST_NETLAB_TRIALS", "20")))


class Agent:
    def __init__(
        self,
        node: Node,
        *,
        tcp_only: bool = False,
        stun: str = "",
        upnp: bool = False,
        boot_ports: tuple[int, ...] = (BOOT_PORT,),
    ) -> None:
        boots = ",".join(f"{BOOTSTRAP_IP}:{p}" for p in boot_ports)
        args = ["node", node.ip, boots]
        if tcp_only:
            args.append("--tcp-only")
        if upnp:
            args.append("--upnp")
        if stun:
            args += ["--stun", stun]
        self.proc: Proc = node.python(RUN, *args)
        self.wait("ready", 30)

    def wait(self, ev: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.proc.wait_event(ev, timeout)

    def cmd(self, line: str, ev: str, timeout: float = 30.0) -> dict[str, Any]:
        self.proc.write(line + "\n")
        return self.wait(ev, timeout)


def start_rendezvous(lab: Lab, port: int = BOOT_PORT) -> Proc:
    proc = lab.server.python(RUN, "serve", BOOTSTRAP_IP, str(port))
    proc.expect('"serving"', 30)
    return proc


def serving_id(proc: Proc) -> str:
    """The peer id a rendezvous process announced."""
    line = next(x for x in proc.stdout_lines if '"serving"' in x)
    return str(json.loads(line)["id"])


def trials(a: Agent, b: Agent, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        started_b = b.cmd("start", "started")
        started_a = a.cmd("start", "started")
        result = a.cmd(f"connect {started_b['id']}", "result", timeout=40)
        seen = (started_a["reflexive"], started_b["reflexive"])
        out.append({**result, "hard": (started_a["hard"], started_b["hard"]), "seen": seen})
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if r["ok"]]
    return {
        "ok": len(ok),
        "n": len(results),
        "paths": dict(Counter(r["path"] for r in ok)),
        "median_connect_s": round(statistics.median(r["connect_s"] for r in ok), 3) if ok else None,
        "median_first_msg_s": round(statistics.median(r["first_msg_s"] for r in ok), 3)
        if ok
        else None,
        "max_first_msg_s": round(max(r["first_msg_s"] for r in ok), 3) if ok else None,
        "errors": [r.get("error") for r in results if not r["ok"]][:3],
        "hard": dict(Counter(str(r["hard"]) for r in results)),
    }


def run_pairs(pairs: dict[str, tuple[Agent, Agent]], n: int) -> dict[str, list[dict[str, Any]]]:
    """Every pair's trials, the pairs concurrently."""
    results: dict[str, list[dict[str, Any]]] = {}
    errors: list[BaseException] = []

    def one(name: str, a: Agent, b: Agent) -> None:
        try:
            results[name] = trials(a, b, n)
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=one, args=(k, *v)) for k, v in pairs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_traversal_matrix(netlab: Lab) -> None:
    start_rendezvous(netlab)
    stun = ",".join(f"{ip}:{port}" for ip, port in netlab.stun())
    s = {
        "pub": netlab.add_site("pub", "public"),
        "c1": netlab.add_site("c1", "cone"),
        "c2": netlab.add_site("c2", "cone"),
        "f1": netlab.add_site("f1", "cone-fw"),
        "f2": netlab.add_site("f2", "cone-fw"),
        "s1": netlab.add_site("s1", "symmetric"),
        "s2": netlab.add_site("s2", "symmetric-fw"),
        "lan": netlab.add_site("lan", "cone", hosts=2),
        "up": netlab.add_site("up", "upnp"),
    }
    plan = {
        "public x cone": (s["pub"].host, s["c1"].host, False),
        "cone x public": (s["c2"].host, s["pub"].host, False),
        "cone x cone": (s["c1"].host, s["c2"].host, False),
        "cone x cone-fw": (s["c1"].host, s["f1"].host, False),
        "cone-fw x cone": (s["f2"].host, s["c2"].host, False),
        "cone-fw x cone-fw": (s["f1"].host, s["f2"].host, False),
        "cone x symmetric": (s["c1"].host, s["s1"].host, False),
        "symmetric x cone-fw": (s["s1"].host, s["f2"].host, False),
        "symmetric x symmetric-fw": (s["s1"].host, s["s2"].host, False),
        # With STUN each side knows its NAT: one symmetric side -> birthday.
        "cone x symmetric, STUN": (s["c2"].host, s["s2"].host, "stun"),
        "symmetric x cone-fw, STUN": (s["s1"].host, s["f1"].host, "stun"),
        "symmetric x symmetric-fw, STUN": (s["s2"].host, s["s1"].host, "stun"),
        # The target's UPnP forward takes the requester's punches in directly.
        "symmetric x UPnP": (s["s2"].host, s["up"].host, "upnp"),
        "same NAT (LAN)": (s["lan"].hosts[0], s["lan"].hosts[1], False),
        "cone-fw x cone-fw, TCP only": (s["f1"].host, s["f2"].host, True),
        "cone x cone, TCP only": (s["c1"].host, s["c2"].host, True),
    }
    pairs = {
        k: (
            Agent(a, tcp_only=t is True, stun=stun if t == "stun" else ""),
            Agent(b, tcp_only=t is True, stun=stun if t == "stun" else "", upnp=t == "upnp"),
        )
        for k, (a, b, t) in plan.items()
    }
    results = run_pairs(pairs, TRIALS)
    table = {k: summary(v) for k, v in results.items()}
    print("\nNAT traversal matrix:")
    for k, v in table.items():
        print(f"  {k:28s} {json.dumps(v)}")
    figures.append({"figure": "nat_traversal_matrix", "trials": TRIALS, "table": table})

    def check(name: str, paths: set[str], min_ok: int = TRIALS) -> None:
        v = table[name]
        assert v["ok"] >= min_ok, (name, v)
        assert set(v["paths"]) <= paths, (name, v)

    check("public x cone", {"direct-udp"})
    check("cone x public", {"direct-udp"})
    for name in ("cone x cone", "cone x cone-fw", "cone-fw x cone", "cone-fw x cone-fw"):
        # >= 99 % of 20 trials is all of them.
        check(name, {"punched-udp"})
        assert table[name]["max_first_msg_s"] < 1.0, (name, table[name])
    check("cone x symmetric", {"punched-udp", "relayed"})
    check("symmetric x cone-fw", {"punched-udp", "relayed"})
    check("symmetric x symmetric-fw", {"relayed"})
    # Birthday punching: STUN tells the hard side; expected mostly punched
    # (each trial ~98 % by the odds), never unconnected.
    for name in ("cone x symmetric, STUN", "symmetric x cone-fw, STUN"):
        check(name, {"punched-udp", "relayed"})
        assert table[name]["paths"].get("punched-udp", 0) >= TRIALS * 3 // 4, table[name]
    check("symmetric x symmetric-fw, STUN", {"relayed"})
    check("symmetric x UPnP", {"direct-udp"})
    # Reflexive addresses echoed by the rendezvous node's handshake: each
    # NATed requester learned its site's public address, every trial.
    for name, (host, _, _) in plan.items():
        site = next(x for x in s.values() if host in x.hosts)
        want = site.public_ip if site.kind != "public" else host.ip
        for r in results[name]:
            assert want in {ip for ip, _ in r["seen"][0]}, (name, r["seen"][0])
    check("same NAT (LAN)", {"direct-udp"})
    check("cone-fw x cone-fw, TCP only", {"punched-tcp"})
    # Without a firewall each NAT box answers an early SYN with RST, which
    # tears the other side's conntrack entry down; on the lab's zero-delay
    # links the SYNs never cross (crust/asyncio/tcp_punch.py): relayed.
    # With delayed links they do: test_netlab_tcp_punch.py.
    check("cone x cone, TCP only", {"punched-tcp", "relayed"})


def test_relayed_upgrades_when_the_firewall_opens(netlab: Lab) -> None:
    start_rendezvous(netlab)
    a_site = netlab.add_site("a", "cone-fw")
    b_site = netlab.add_site("b", "cone-fw")
    # The router drops everything between the two sites: only the relay works.
    rules = [
        netlab.router.add_rule("FORWARD", "-s", x.public_ip, "-d", y.public_ip, "-j", "DROP")
        for x, y in ((a_site, b_site), (b_site, a_site))
    ]
    a, b = Agent(a_site.host), Agent(b_site.host)
    target = b.cmd("start", "started")["id"]
    a.cmd("start", "started")
    first = a.cmd(f"connect {target}", "result", timeout=40)
    assert first["ok"] and first["path"] == "relayed", first
    a.proc.write(f"send {target} 600\n")  # ~10 MB over ~6+ s
    time.sleep(1.5)
    for r in rules:
        r.remove()
    sent = a.wait("sent", 120)
    received = b.wait("received", 60)
    assert received["sha256"] == sent["sha256"] and received["chunks"] == 600
    assert sent["paths"][0] == "relayed" and sent["paths"][-1] == "punched-udp", sent
    assert received["path"] == "punched-udp", received


def test_relayed_connection_survives_its_relay_restarting(netlab: Lab) -> None:
    """Two mutual nodes; the pair's direct path is blocked at the router, so
    its connection is relayed. The relaying node restarts mid-transfer: the
    connection moves through the other (issue 16 item 4), nothing lost."""
    rendezvous = {port: start_rendezvous(netlab, port) for port in (BOOT_PORT, BOOT_PORT + 1)}
    a_site = netlab.add_site("a", "cone-fw")
    b_site = netlab.add_site("b", "cone-fw")
    for x, y in ((a_site, b_site), (b_site, a_site)):
        netlab.router.add_rule("FORWARD", "-s", x.public_ip, "-d", y.public_ip, "-j", "DROP")
    ports = tuple(rendezvous)
    a, b = Agent(a_site.host, boot_ports=ports), Agent(b_site.host, boot_ports=ports)
    target = b.cmd("start", "started")["id"]
    a.cmd("start", "started")
    first = a.cmd(f"connect {target}", "result", timeout=40)
    assert first["ok"] and first["path"] == "relayed", first
    [port] = [p for p, proc in rendezvous.items() if serving_id(proc)[:8] in first["why"]]
    a.proc.write(f"send {target} 600\n")  # ~10 MB over ~6+ s
    time.sleep(1.5)
    t0 = time.monotonic()
    relay = rendezvous[port]
    assert relay.popen.stdin is not None
    relay.popen.stdin.close()  # the node shuts down (and tells its peers)
    relay.wait(15)
    rendezvous[port] = start_rendezvous(netlab, port)  # and comes back, a new node
    restart_s = time.monotonic() - t0
    sent = a.wait("sent", 120)
    received = b.wait("received", 60)
    print(f"\nrelay restart ({restart_s:.1f} s): {sent['why']}")
    assert received["sha256"] == sent["sha256"] and received["chunks"] == 600
    assert sent["connected"] and set(sent["paths"]) == {"relayed"}, sent
    assert "re-routed" in sent["why"], sent
    took = float(sent["why"].split("re-routed ")[1].split(" s")[0])
    assert took < 5.0, sent["why"]


def cli_transfer(
    receiver: Node, sender: Node, via: str, src: Path, out: Path, flags: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``crust recv --via`` on ``receiver``, ``crust send --to`` its id on
    ``sender`` (fresh processes, ``flags`` to both): both exit 0 and the
    file arrives whole. Returns what send printed (path, seconds)."""
    out.mkdir()
    recv = receiver.spawn(
        sys.executable, "-m", "crust", "recv", "--via", via, "--host", receiver.ip,
        "--out", str(out), "--json", "--yes", *flags,
    )  # fmt: skip
    peer_id = json.loads(recv.readline(30))["ready"]
    send = sender.spawn(
        sys.executable, "-m", "crust", "send", "--via", via, "--host", sender.ip,
        "--to", peer_id, str(src), "--json", *flags,
    )  # fmt: skip
    sent: dict[str, Any] = json.loads(send.readline(90))
    try:
        got = json.loads(recv.readline(60))
    except (EOFError, TimeoutError) as e:
        # What the sender saw tells a lost path from a lost transfer.
        raise AssertionError(f"{e}\nsender printed {sent}; stderr: {send.stderr()[-2000:]}") from e
    assert send.wait(10) == 0 and recv.wait(10) == 0
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert sent["verified"] and sent["sha256"] == got["sha256"] == digest, (sent, got)
    assert Path(got["saved"]).read_bytes() == src.read_bytes()
    return sent


def test_crust_send_and_recv_across_nats(netlab: Lab, tmp_path: Path) -> None:
    """The commands, end to end: a file from behind a symmetric NAT to a
    host behind a cone NAT, and between two cones, through the rendezvous
    node; path and SHA-256 as reported by both sides."""
    start_rendezvous(netlab)
    sites = {
        "c": netlab.add_site("c", "cone-fw"),
        "c2": netlab.add_site("c2", "cone"),
        "s": netlab.add_site("s", "symmetric"),
    }
    data = os.urandom(2_000_000)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    via = f"{BOOTSTRAP_IP}:{BOOT_PORT}"
    paths = {}
    # s -> c relayed: this rendezvous node listens on one port only
    # (backup_port=False), so nothing tells s that its NAT is symmetric.
    # With `crust node` (two ports) as the contact, s learns it and the
    # pair is punched: test_..._punch_a_symmetric_nat_with_only_a_contact.
    for sender, receiver, want in (("s", "c", {"relayed"}), ("c2", "c", {"punched-udp"})):
        out = tmp_path / f"out-{sender}"
        sent = cli_transfer(sites[receiver].host, sites[sender].host, via, src, out)
        assert sent["path"] in want, sent
        paths[f"{sender}->{receiver}"] = (sent["path"], round(sent["seconds"], 2))
    print("\ncrust send/recv across NATs:", paths)


CLI_TRIALS = 10


def test_crust_send_and_recv_punch_a_symmetric_nat_with_stun(netlab: Lab, tmp_path: Path) -> None:
    """Issue 16 item 2: the commands take STUN servers (`--stun`, as the
    API's stun_servers), so from the command line too a symmetric side
    knows it is one and cone x symmetric is birthday-punched, not relayed
    (before: no STUN from the CLI, every such pair relayed, as
    test_crust_send_and_recv_across_nats still shows without --stun).
    Fresh processes per trial."""
    start_rendezvous(netlab)
    stun = [f"{ip}:{port}" for ip, port in netlab.stun()]
    flags = [a for s in stun for a in ("--stun", s)]
    sites = {"c": netlab.add_site("c", "cone-fw"), "s": netlab.add_site("s", "symmetric")}
    data = os.urandom(200_000)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    via = f"{BOOT_IP_PORT}"
    paths: Counter[str] = Counter()
    seconds = []
    for i in range(CLI_TRIALS):
        out = tmp_path / f"out-{i}"
        sent = cli_transfer(sites["c"].host, sites["s"].host, via, src, out, tuple(flags))
        paths[sent["path"]] += 1
        seconds.append(sent["seconds"])
    print(f"\nFIGURE crust send (symmetric, --stun) -> crust recv (cone-fw): {dict(paths)} "
          f"of {CLI_TRIALS}, median {statistics.median(seconds):.2f} s")  # fmt: skip
    assert set(paths) <= {"punched-udp", "relayed"}
    assert paths["punched-udp"] >= CLI_TRIALS * 3 // 4, paths


# Trials per direction of the contact-only test below: CI runs 2 (4 in all,
# ~30 s); the acceptance figure of issue 16 (>= 18 of 20) is measured with
# CRUST_NETLAB_CONTACT_TRIALS=20.
CONTACT_TRIALS = max(1, int(os.environ.get("CRUST_NETLAB_CONTACT_TRIALS", "2")))


@pytest.mark.parametrize("kinds", [("cone", "symmetric"), ("cone-fw", "symmetric-fw")])
def test_crust_send_and_recv_punch_a_symmetric_nat_with_only_a_contact(
    netlab: Lab, tmp_path: Path, kinds: tuple[str, str]
) -> None:
    """Issue 16 item 2, beyond STUN: no --stun anywhere. Each command joins
    the contact (--via), asks both of its UDP ports where they see it
    (crust.nat.mapping, design note 0062): behind --random-fully the two
    answers differ, so that side knows it is symmetric and cone x
    symmetric is birthday-punched, not relayed. Both directions (receiver
    behind the symmetric NAT, then the sender), fresh processes per trial.
    The contact is `crust node` (live and backup ports, as by default)."""
    contact = netlab.server.spawn(
        sys.executable, "-m", "crust", "node", "--host", BOOTSTRAP_IP, "--port", str(BOOT_PORT),
        "--identity", str(tmp_path / "contact.key"), "--json",
    )  # fmt: skip
    contact.expect('"Started"', 30)
    sites = {"c": netlab.add_site("c", kinds[0]), "s": netlab.add_site("s", kinds[1])}
    data = os.urandom(200_000)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    via = f"{BOOT_IP_PORT}"
    paths: dict[str, Counter[str]] = {"c->s": Counter(), "s->c": Counter()}
    seconds = []
    for i in range(2 * CONTACT_TRIALS):
        sender, receiver = ("c", "s") if i % 2 == 0 else ("s", "c")
        out = tmp_path / f"out-{i}"
        sent = cli_transfer(sites[receiver].host, sites[sender].host, via, src, out)
        paths[f"{sender}->{receiver}"][sent["path"]] += 1
        seconds.append(sent["seconds"])
    total = paths["c->s"] + paths["s->c"]
    print(
        f"\nFIGURE crust send/recv, {kinds[0]} x {kinds[1]}, only a crust contact (no STUN): "
        f"{ {k: dict(v) for k, v in paths.items()} } of {CONTACT_TRIALS} per direction, "
        f"punched {total['punched-udp']}/{2 * CONTACT_TRIALS}, "
        f"median {statistics.median(seconds):.2f} s"
    )
    assert set(total) <= {"punched-udp", "relayed"}, total
    assert total["punched-udp"] * 4 >= 2 * CONTACT_TRIALS * 3, paths
