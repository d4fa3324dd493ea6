"""crust: reliable, encrypted peer-to-peer connections over UDP.

Importing the package registers the AEAD ciphers of the libsodium bundled
with PyNaCl with the C core, so every connection can use them.
"""

from crust import _sodium as _sodium
from crust._version import __version__

__all__ = ["__version__"]
