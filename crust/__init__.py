"""crust: reliable, encrypted peer-to-peer connections over UDP and TCP.

Importing the package registers the AEAD ciphers of the libsodium bundled
with PyNaCl with the C core, so every connection can use them.

    import crust
    async with crust.Service(crust.ServiceConfig(network="demo")) as svc:
        ...
"""

from crust import _sodium as _sodium
from crust._version import __version__
from crust.config import ServiceConfig
from crust.config_sources import LoadedConfig, load_config
from crust.events import (
    BootstrapAccept,
    BootstrapConnect,
    BootstrapFailed,
    ConnectFailed,
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
from crust.peer import Peer, PeerStats, Received
from crust.service import ListenerError, Service, UnknownPeer
from crust.subscriptions import Subscription

__all__ = [
    "BootstrapAccept",
    "BootstrapConnect",
    "BootstrapFailed",
    "ConnectFailed",
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
