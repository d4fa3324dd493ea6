"""The baselines every crust figure is divided by, measured in the same run:
what the kernel moves over loopback without crust (UDP through
``sendmmsg``/``recvmmsg``, one TCP stream) and what the cipher alone costs.

Raw UDP is a small C program (``rawudp.c`` beside this file), compiled on
first use with the system C compiler: Python's per-call overhead would make
the baseline, and so every ratio, flatter than the kernel really is.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

from crust import _core
from crust.bench.procs import BenchError, child, pin_child

__all__ = ["aead_alone", "cpu_seconds", "raw_tcp", "raw_udp", "rawudp_binary", "x25519"]

_SOURCE = Path(__file__).with_name("rawudp.c")
_BATCH = 32
_MIB = 1 << 20


def rawudp_binary(cache: Path | None = None) -> Path:
    """Compile rawudp.c (once per source version; ``$CC`` or ``cc``)."""
    src = _SOURCE.read_bytes()
    tag = hashlib.sha256(src).hexdigest()[:12]
    where = cache or Path(tempfile.gettempdir()) / f"crust-bench-{os.getuid()}"
    out = where / f"rawudp-{tag}"
    if out.exists():
        return out
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise BenchError("no C compiler (cc or $CC) to build the raw UDP baseline")
    where.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name, then rename: concurrent runs never see
    # a half-written binary.
    tmp = out.with_suffix(f".{os.getpid()}")
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", str(_SOURCE), "-o", str(tmp)], check=True)
    tmp.replace(out)
    return out


def raw_udp(binary: Path, payload: int, seconds: float, gso: bool = False) -> dict[str, float]:
    """One raw run: a C sender floods ``payload``-byte datagrams for
    ``seconds``; the C receiver counts them, first to last. The CPU both
    programs used (sender and receiver, from start to exit) per datagram
    and byte delivered is the baseline of crust's figures per CPU second."""
    cpu0 = _children_cpu()
    with subprocess.Popen(
        [str(binary), "recv", str(payload), str(_BATCH), str(int(gso))],
        stdout=subprocess.PIPE,
        text=True,
    ) as recv:
        assert recv.stdout is not None
        try:
            # The receiver on the far core (it has only bound its socket by
            # now); the sender below inherits the measuring side's.
            pin_child(recv.pid)
            port = int(recv.stdout.readline().split()[1])
            subprocess.run(
                [
                    str(binary),
                    "send",
                    str(port),
                    str(payload),
                    str(_BATCH),
                    str(int(gso)),
                    str(seconds),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                timeout=seconds + 30,
            )
            fields = recv.stdout.readline().split()
        except BaseException:
            recv.kill()
            raise
    if len(fields) != 6 or fields[0] != "datagrams":
        raise BenchError(f"rawudp receiver printed {fields!r}")
    dgrams, nbytes, ns = int(fields[1]), int(fields[3]), int(fields[5])
    if ns <= 0:
        raise BenchError(f"rawudp received {dgrams} datagrams: too few to time")
    cpu = max(_children_cpu() - cpu0, 1e-9)  # both programs have been waited for
    return {
        "dgrams_per_s": dgrams / ns * 1e9,
        "bytes_per_s": nbytes / ns * 1e9,
        "dgrams_per_cpu_s": dgrams / cpu,
        "bytes_per_cpu_s": nbytes / cpu,
        "seconds": ns / 1e9,
    }


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _raw_tcp_receiver(pipe: Pipe, nbytes: int, chunk: int) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    pipe.send(srv.getsockname())
    conn, _ = srv.accept()
    buf = bytearray(chunk)
    view = memoryview(buf)
    got = first_len = 0
    first = 0
    cpu0 = cpu_seconds()
    while got < nbytes:
        n = conn.recv_into(view)
        if not n:
            break
        if not first:
            first, first_len = time.perf_counter_ns(), n
        got += n
    last = time.perf_counter_ns()
    pipe.send((got, got - first_len, last - first, cpu_seconds() - cpu0))
    conn.close()
    srv.close()


def raw_tcp(nbytes: int, chunk: int = _MIB) -> dict[str, float]:
    """One kernel TCP transfer of ``nbytes`` in ``chunk``-byte writes to a
    child process reading into a ``chunk``-byte buffer; goodput at the
    receiver, first read to last (the first read's bytes not counted)."""
    data = os.urandom(chunk)
    with child(_raw_tcp_receiver, nbytes, chunk) as pipe:
        addr = pipe.recv()
        with socket.create_connection(addr) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sent = 0
            cpu0 = cpu_seconds()
            while sent < nbytes:
                s.sendall(data)
                sent += chunk
            tx_cpu = cpu_seconds() - cpu0
            got, counted, ns, rx_cpu = pipe.recv()
    if got < nbytes or ns <= 0:
        raise BenchError(f"raw TCP delivered {got} of {nbytes} bytes")
    return {
        "bytes": got,
        "ns": ns,
        "bytes_per_s": counted / ns * 1e9,
        "bytes_per_cpu_s": got / max(tx_cpu + rx_cpu, 1e-9),
        "tx_cpu_ns_per_byte": tx_cpu / got * 1e9,
        "rx_cpu_ns_per_byte": rx_cpu / got * 1e9,
    }


def aead_alone(aead: int, pkt_len: int, count: int) -> dict[str, float]:
    """Seal and open ``count`` packets of ``pkt_len`` bytes in C, no engine
    and no sockets: the cipher's share of every encrypted packet."""
    if not _core.aead_available(aead):
        raise BenchError(f"AEAD {aead} is not available on this machine")
    done, ns = _core.bench_aead(aead, pkt_len, count)
    if done != count or ns <= 0:
        raise BenchError(f"bench_aead({aead}, {pkt_len}, {count}) failed: {done}")
    return {
        "ns_per_packet": ns / count,
        "packets_per_s": count / ns * 1e9,
        "bytes_per_s": count * pkt_len / ns * 1e9,
    }


# Diffie-Hellman operations a responder does per handshake (XX: e·e, e·s,
# s·e on each side, of which the responder's share bounds its rate):
# issue #19 takes the responder's bound as X25519 ops/s / 4.
DH_PER_RESPONDER_HANDSHAKE = 4


def x25519(seconds: float) -> dict[str, float]:
    """X25519 operations per second from Python (PyNaCl's
    ``crypto_scalarmult``, the call crust's handshake makes) for
    ``seconds``, and the handshake rate that bounds at one responder."""
    import nacl.bindings  # deferred: the only baseline that needs it

    scalarmult = nacl.bindings.crypto_scalarmult
    private = os.urandom(32)
    public = nacl.bindings.crypto_scalarmult_base(os.urandom(32))
    ops = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(200):
            scalarmult(private, public)
        ops += 200
        now = time.perf_counter()
        if now >= end:
            break
    per_s = ops / (now - t0)
    return {
        "ops_per_s": per_s,
        "responder_bound_per_s": per_s / DH_PER_RESPONDER_HANDSHAKE,
    }
