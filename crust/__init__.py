"""crust: reliable, encrypted peer-to-peer connections over UDP and TCP.

Importing the package registers the AEAD ciphers of the libsodium bundled
with PyNaCl with the C core, so every connection can use them.

    import crust
    async with crust.Service(crust.ServiceConfig(network="demo")) as svc:
        ...
"""

import importlib.util

# Without this check, `import crust` from a source checkout fails deep in
# crust._sodium with "cannot import name '_core' from partially initialized
# module": the compiled core exists only in a built package.
if importlib.util.find_spec("crust._core") is None:
    raise ImportError(
        "crust's compiled core (crust._core) is missing: install the package "
        "(pip install .) rather than importing crust from the source tree"
    )

from crust import _sodium as _sodium
from crust._version import __version__
from crust.config import ServiceConfig
from crust.config_sources import LoadedConfig, load_config
from crust.errors import (
    ConnectError,
    ConnectTimeout,
    CrustError,
    ListenerError,
    UnknownPeer,
)
from crust.events import (
    BootstrapAccept,
    BootstrapConnect,
    BootstrapFailed,
    ConnectFailed,
    ContactJoined,
    ContactLost,
    Event,
    LanPeerFound,
    ListenerFailed,
    ListenerStarted,
    LostPeer,
    MessageDropped,
    NatDetected,
    NewMessage,
    NewPeer,
    PeerMisbehaving,
    PortMapped,
    PortMappingFailed,
)
from crust.identity import Identity, PeerId
from crust.paths import CloseReason, PathName
from crust.peer import Peer, PeerStats, Received
from crust.service import Service
from crust.subscriptions import Subscription

__all__ = [
    "BootstrapAccept",
    "BootstrapConnect",
    "BootstrapFailed",
    "CloseReason",
    "ConnectError",
    "ConnectFailed",
    "ConnectTimeout",
    "ContactJoined",
    "ContactLost",
    "CrustError",
    "Event",
    "Identity",
    "LanPeerFound",
    "ListenerError",
    "ListenerFailed",
    "ListenerStarted",
    "LoadedConfig",
    "LostPeer",
    "MessageDropped",
    "NatDetected",
    "NewMessage",
    "NewPeer",
    "PathName",
    "Peer",
    "PeerId",
    "PeerMisbehaving",
    "PeerStats",
    "PortMapped",
    "PortMappingFailed",
    "Received",
    "Service",
    "ServiceConfig",
    "Subscription",
    "UnknownPeer",
    "__version__",
    "load_config",
]
