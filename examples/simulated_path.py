"""Two whole crust nodes (Noise handshake and engine) over a simulated
lossy, slow path with a virtual clock: deterministic, no sockets, and far
faster than real time. This is how to test code built on crust's sans-IO
layers; see the "Testing your application" page of the docs."""

import hashlib

from crust import Identity
from crust.testing import HandshakeNode, LinkConfig, Network

# 10 Mbit/s, 40 ms round trip, 2 % random loss, some reordering.
path = LinkConfig(
    delay_us=20_000,
    bandwidth_bps=10_000_000,
    queue_bytes=50_000,
    loss=0.02,
    reorder=0.01,
    reorder_delay_us=5_000,
)
net = Network(seed=7)
net.connect("10.0.0.1", "10.0.0.2", path)

server = HandshakeNode(Identity.generate(), "sim").attach(net, ("10.0.0.2", 4000))
client = HandshakeNode(Identity.generate(), "sim").attach(net, ("10.0.0.1", 5000))

blob = bytes(range(256)) * 4096  # 1 MiB
client.dial(("10.0.0.2", 4000), server.peer_id)  # IK: the client knows the id
client.send(server.peer_id, blob)


def delivered() -> bool:
    return bool(server.received.get(client.peer_id))


net.run(until=60_000_000, stop=delivered)
((_, data),) = server.received[client.peer_id]
stats = net.stats("10.0.0.1", "10.0.0.2")
seconds = net.now / 1e6
rate = 8 * len(data) / seconds / 1e6
print(f"1 MiB arrived after {seconds:.2f} s of virtual time ({rate:.1f} Mbit/s)")
print(f"datagrams sent {stats.sent}, lost {stats.dropped_loss}, queue drops {stats.dropped_queue}")
print("sha256 ok:", hashlib.sha256(data).digest() == hashlib.sha256(blob).digest())
