"""Finding peers: the LAN beacon, the bootstrap cache and contact gossip.

The protocols here are sans-IO (bytes in, bytes out, ``now`` passed in);
the asyncio glue that owns sockets, files and timers lives in
:mod:`crust.asyncio.beacon` and :mod:`crust.asyncio.discovery`.
"""
