"""Summarise a ``perf record --call-graph dwarf`` profile of a crust
benchmark by process: the share of samples under each crust C entry point
(``crust_endpoint_drive``, ``crust_conn_send``, ...) or else in the kernel
on Python's behalf or in the interpreter, and the hottest leaf functions
with the crust entry they ran under.

    perf record -D 1200 --call-graph dwarf,16384 -F 400 -o udp.data -- \\
        python -c "from crust.bench import service_path as s; print(s.bulk('udp', 3000 << 20))"
    perf script -i udp.data -F comm,pid,ip,sym,dso | python benchmarks/perf_by_entry.py

(``-D`` skips the start-up; the receiver is the forked child process.)
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable


def _bucket(frames: list[tuple[str, str]]) -> str:
    crust = [sym for sym, _ in frames if sym.startswith("crust_")]
    if crust:
        return crust[-1]  # the outermost: the entry Python called
    dso = frames[0][1]
    if "kernel" in dso:
        return "kernel, from Python (socket I/O, epoll, wake-ups)"
    if "python" in dso or "_asyncio" in dso:
        return "Python interpreter (asyncio, service, events)"
    return f"other: {dso}"


def _samples(lines: Iterable[str]) -> Iterable[tuple[str, list[tuple[str, str]]]]:
    pid, frames = "", []
    for raw in lines:
        line = raw.rstrip()
        if not line:
            if frames:
                yield pid, frames
            pid, frames = "", []
        elif not line[0].isspace():
            fields = line.split()
            pid = fields[1] if len(fields) > 1 else line
        else:
            parts = line.strip().split(None, 1)
            if len(parts) < 2:
                continue
            rest = parts[1]
            sym = rest.split("+0x")[0].split(" (")[0]
            dso = rest.rsplit("(", 1)[-1].rstrip(")") if "(" in rest else "?"
            if dso != "inlined":  # attribute inlined code to its function
                frames.append((sym, dso))
    if frames:
        yield pid, frames


def main() -> None:
    per_pid: Counter[str] = Counter()
    buckets: Counter[tuple[str, str]] = Counter()
    leaves: Counter[tuple[str, str, str]] = Counter()
    for pid, frames in _samples(sys.stdin):
        per_pid[pid] += 1
        entry = _bucket(frames)
        buckets[(pid, entry)] += 1
        leaves[(pid, frames[0][0], entry)] += 1
    for pid, n in per_pid.most_common():
        print(f"== pid {pid}: {n} samples")
        for (p, entry), m in buckets.most_common():
            if p == pid and m / n >= 0.02:
                print(f"  {100 * m / n:5.1f}%  {entry}")
        print("  hottest functions (under):")
        for (p, leaf, entry), m in leaves.most_common():
            if p == pid and m / n >= 0.015:
                print(f"  {100 * m / n:5.1f}%  {leaf}  ({entry})")


if __name__ == "__main__":
    main()
