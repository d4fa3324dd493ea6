"""asyncio transports of a :class:`crust.Service`: UDP through the C
endpoint (:mod:`crust.asyncio.udp`) and TCP streams (:mod:`crust.asyncio.tcp`).
The application uses :class:`crust.Service`, not these directly."""
