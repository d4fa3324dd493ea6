"""NAT traversal, sans-IO: reflexive addresses, STUN, rendezvous, hole
punching and relaying. The asyncio glue lives in :mod:`crust.asyncio`."""
