"""Hand the libsodium inside PyNaCl to the C core: its AEAD table, the
Noise handshake (csrc/noise.h) and Elligator key generation
(csrc/elligator.h).

PyNaCl links libsodium into its cffi module, so crust needs no system
library. cffi's ``addressof`` gives a C function pointer with libsodium's
own signature (the combined-mode ``crypto_aead_*_encrypt``/``_decrypt``),
which the core then calls per packet without going through Python.
Importing this module registers the ciphers and the Noise primitives
(X25519, streaming BLAKE2b, ChaCha20-Poly1305); ``crust/__init__.py`` does
that once.
"""

from __future__ import annotations

# Importing nacl.bindings runs sodium_init(), whose CPU feature detection
# AES-GCM needs (and which makes the library safe to call from any thread).
import nacl.bindings  # noqa: F401
from nacl._sodium import ffi, lib

from crust import _core

__all__ = ["registered"]


def _address(name: str) -> int:
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


def _register() -> tuple[int, ...]:
    done = [_core.AEAD_NULL]
    _core.register_aead(
        _core.AEAD_CHACHA20_POLY1305,
        _address("crypto_aead_chacha20poly1305_ietf_encrypt"),
        _address("crypto_aead_chacha20poly1305_ietf_decrypt"),
    )
    done.append(_core.AEAD_CHACHA20_POLY1305)
    # AES-256-GCM in libsodium needs AES-NI and PCLMUL; without them the
    # functions refuse to work, so the cipher is simply not offered.
    if lib.crypto_aead_aes256gcm_is_available():
        _core.register_aead(
            _core.AEAD_AES256_GCM,
            _address("crypto_aead_aes256gcm_encrypt"),
            _address("crypto_aead_aes256gcm_decrypt"),
        )
        done.append(_core.AEAD_AES256_GCM)
        # AEGIS-128L (libsodium >= 1.0.19) runs on the same AES round
        # instructions, about 4x faster than AES-GCM; without AES-NI its
        # software fallback is slower than ChaCha20, so it is offered only
        # with them.
        if hasattr(lib, "crypto_aead_aegis128l_encrypt"):
            _core.register_aead(
                _core.AEAD_AEGIS128L,
                _address("crypto_aead_aegis128l_encrypt"),
                _address("crypto_aead_aegis128l_decrypt"),
            )
            done.append(_core.AEAD_AEGIS128L)
    return tuple(done)


def _register_noise() -> None:
    # Only these BLAKE2b entry points are reachable through cffi (no plain
    # _init, no one-shot without salt): _init_salt_personal with NULL salt
    # and personalisation is plain BLAKE2b, as the specification uses it.
    _core.noise_use_sodium(
        _address("crypto_scalarmult"),
        _address("crypto_scalarmult_base"),
        _address("crypto_generichash_blake2b_init_salt_personal"),
        _address("crypto_generichash_blake2b_update"),
        _address("crypto_generichash_blake2b_final"),
        _address("crypto_aead_chacha20poly1305_ietf_encrypt"),
        _address("crypto_aead_chacha20poly1305_ietf_decrypt"),
        lib.crypto_generichash_statebytes(),
    )


def _register_elligator() -> None:
    # The dirty-key generation of csrc/elligator.h needs X25519's base
    # point multiplication only.
    _core.elligator_use_sodium(_address("crypto_scalarmult_base"))


_register_noise()
_register_elligator()

#: AEAD ids usable on this machine (the built-in null one included).
registered: tuple[int, ...] = _register()
