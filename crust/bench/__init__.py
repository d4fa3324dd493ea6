"""crust's benchmark suite: crust over loopback beside raw kernel sockets,
the cipher alone and aioquic, each ratio to a baseline of the same run.

Run it as ``crust bench`` (table on stdout, pytest-benchmark JSON in
``crust-bench.json``) or ``pytest benchmarks/ --benchmark-only``. Modules:
``baselines`` (raw UDP through ``rawudp.c``, raw TCP, AEAD alone),
``service_path`` (one connection through ``crust.Service``), ``many`` (many
connections on one service), ``quic`` (aioquic), ``suite`` (cases, sizes,
medians, ratios) and ``report`` (table and JSON).
"""
