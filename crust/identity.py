"""Node identities: a long-term Ed25519 key pair, named by its public key.

A :class:`PeerId` is the 32-byte Ed25519 public key. Its text form is what
people copy between machines, so it is short, case-insensitive and
checksummed: lowercase RFC 4648 base32, without padding, of

    public key (32) || checksum (2) || version (1)

which is exactly 35 bytes = 56 characters, with no padding bits (so every
valid string decodes to one key, and back). The checksum is a 2-byte
BLAKE2b over version and key; the layout is Tor's v3 onion-address layout,
the version byte leaving room for another key type later.

The handshake's Noise static key is not a second secret: it is the X25519
form of the Ed25519 key (libsodium's ``crypto_sign_ed25519_sk_to_curve25519``
/ ``pk_to_curve25519``). Authenticating the Noise static therefore
authenticates the peer id, and a node has exactly one key to keep safe.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions

from crust.errors import CrustError, IdentityError, InvalidPeerId

__all__ = ["Identity", "IdentityError", "InvalidPeerId", "PeerId", "default_identity_path"]

logger = logging.getLogger(__name__)

PEER_ID_VERSION = 1
#: Length of ``str(peer_id)``.
PEER_ID_TEXT_LEN = 56
_KEY_LEN = 32
_SEED_LEN = 32
_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_FILE_MAGIC = "crust identity v1"
# Generous: the file is ~150 bytes; anything much larger is not ours.
_MAX_FILE_SIZE = 4096


@functools.lru_cache(maxsize=4096)
def _ed25519_to_x25519(key: bytes) -> bytes:
    """The X25519 form of a valid Ed25519 public key, else InvalidPeerId.

    libsodium checks the point is on the curve, not of small order, and in
    the prime-order subgroup: a scalar multiplication, ~40 us. Peers
    reconnect, and every handshake meets the peer's key again (the listener
    in each initiation), so valid keys are remembered (bounded; a pure
    function of the key, so a cached answer is the same answer). Invalid
    keys raise, and exceptions are never cached.
    """
    try:
        return sodium.crypto_sign_ed25519_pk_to_curve25519(key)
    except nacl.exceptions.CryptoError:
        raise InvalidPeerId(
            "not a valid Ed25519 public key (not on the curve, or of small order)"
        ) from None


def _checksum(key: bytes, version: int) -> bytes:
    return hashlib.blake2b(bytes([version]) + key, digest_size=2, person=b"crust peer id").digest()


@dataclass(frozen=True)
class PeerId:
    """The public identity of a node: its Ed25519 public key.

    Frozen and hashable, so it can key dicts. ``str()`` gives the 56-character
    text form, :meth:`parse` reads it back, ``bytes()`` gives the key.
    Constructing one checks that the key is a valid Ed25519 point, so every
    PeerId has an X25519 form.
    """

    key: bytes
    _x25519: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = bytes(self.key)
        if len(key) != _KEY_LEN:
            raise InvalidPeerId(f"an Ed25519 public key is {_KEY_LEN} bytes, got {len(key)}")
        x25519 = _ed25519_to_x25519(key)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "_x25519", x25519)

    @classmethod
    def parse(cls, text: str) -> PeerId:
        """Read the text form. Surrounding whitespace and upper case are
        accepted; anything else wrong raises :class:`InvalidPeerId` saying
        what (positions count from 1)."""
        s = text.strip()
        if len(s) != PEER_ID_TEXT_LEN:
            raise InvalidPeerId(
                f"a peer id is {PEER_ID_TEXT_LEN} characters; this one has {len(s)}"
            )
        lower = s.lower()
        for i, ch in enumerate(lower):
            if ch not in _ALPHABET:
                raise InvalidPeerId(
                    f"invalid character {s[i]!r} at position {i + 1} (peer ids use a-z and 2-7)"
                )
        raw = base64.b32decode(lower.upper())
        key, checksum, version = raw[:_KEY_LEN], raw[_KEY_LEN:-1], raw[-1]
        if not hmac.compare_digest(checksum, _checksum(key, version)):
            raise InvalidPeerId("checksum mismatch (a typo?)")
        if version != PEER_ID_VERSION:
            raise InvalidPeerId(
                f"unsupported peer id version {version} (this crust knows {PEER_ID_VERSION})"
            )
        return cls(key)

    def __str__(self) -> str:
        raw = self.key + _checksum(self.key, PEER_ID_VERSION) + bytes([PEER_ID_VERSION])
        return base64.b32encode(raw).decode("ascii").lower()

    def __repr__(self) -> str:
        return f"PeerId({str(self)!r})"

    def __bytes__(self) -> bytes:
        return self.key

    @property
    def short(self) -> str:
        """The first 8 characters, for logs (not unique: never compare them)."""
        return str(self)[:8]

    def x25519_public(self) -> bytes:
        """The X25519 public key this identity uses as its Noise static."""
        return self._x25519

    def verify(self, data: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this identity's Ed25519 signature of
        ``data``."""
        if len(signature) != 64:
            return False
        try:
            sodium.crypto_sign_open(bytes(signature) + bytes(data), self.key)
        except nacl.exceptions.CryptoError:
            return False
        return True


def default_identity_path() -> Path:
    """Where :meth:`Identity.load_or_create` keeps the key by default."""
    import platformdirs  # deferred: only this path needs it

    return platformdirs.user_data_path("crust", appauthor=False) / "identity.key"


class Identity:
    """A node's long-term Ed25519 key pair.

    The 32-byte seed is the secret; never log it (``repr`` shows only the
    peer id).
    """

    __slots__ = ("_peer_id", "_pk", "_seed", "_sk", "_x25519_pk", "_x25519_sk")

    def __init__(self, seed: bytes) -> None:
        seed = bytes(seed)
        if len(seed) != _SEED_LEN:
            raise ValueError(f"an identity seed is {_SEED_LEN} bytes, got {len(seed)}")
        self._seed = seed
        self._pk, self._sk = sodium.crypto_sign_seed_keypair(seed)
        self._peer_id = PeerId(self._pk)
        # Converted once: every handshake uses them as the Noise static key.
        self._x25519_sk = sodium.crypto_sign_ed25519_sk_to_curve25519(self._sk)
        self._x25519_pk = sodium.crypto_scalarmult_base(self._x25519_sk)
        if self._x25519_pk != self._peer_id.x25519_public():
            raise CrustError("libsodium gave inconsistent X25519 keys")  # pragma: no cover

    @classmethod
    def generate(cls) -> Identity:
        """A new random identity (kept in memory only)."""
        return cls(os.urandom(_SEED_LEN))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity of a 32-byte Ed25519 seed."""
        return cls(seed)

    @classmethod
    def load_or_create(cls, path: Path | None = None) -> Identity:
        """Load the identity kept at ``path`` (default:
        :func:`default_identity_path`), creating it on first use.

        A new file is written atomically with mode 0600, in a directory
        created with mode 0700. An unreadable or damaged file raises
        :class:`IdentityError` naming it; it is never replaced.
        """
        path = default_identity_path() if path is None else Path(path)
        if not path.exists():
            created = cls._create(path)
            if created is not None:
                return created
            # Another process created it first: use theirs.
        return cls._load(path)

    @property
    def peer_id(self) -> PeerId:
        """This identity's public name."""
        return self._peer_id

    @property
    def seed(self) -> bytes:
        """The secret seed (for storage only)."""
        return self._seed

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return sodium.crypto_sign(bytes(data), self._sk)[:64]

    def x25519_private(self) -> bytes:
        """The X25519 private key used as the Noise static key."""
        return self._x25519_sk

    def x25519_public(self) -> bytes:
        """Its public half (equal to ``peer_id.x25519_public()``)."""
        return self._x25519_pk

    def __repr__(self) -> str:
        return f"Identity({self._peer_id})"

    # -- the key file ------------------------------------------------------------

    def _file_text(self) -> str:
        return f"{_FILE_MAGIC}\nseed {self._seed.hex()}\npeer-id {self._peer_id}\n"

    @classmethod
    def _load(cls, path: Path) -> Identity:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read(_MAX_FILE_SIZE + 1)
        except OSError as exc:
            raise IdentityError(
                f"cannot read identity file {path}: {exc.strerror or exc}", path
            ) from exc
        if st.st_mode & 0o077:
            logger.warning(
                "identity file %s is accessible by other users (mode %o): chmod 600 it",
                path,
                st.st_mode & 0o777,
            )

        def corrupt(why: str) -> IdentityError:
            return IdentityError(
                f"identity file {path} is damaged ({why}); it was left untouched: restore "
                "it from a backup, or move it away to make this node a new identity",
                path,
            )

        if len(data) > _MAX_FILE_SIZE:
            raise corrupt(f"larger than {_MAX_FILE_SIZE} bytes")
        try:
            lines = data.decode("ascii").splitlines()
        except UnicodeDecodeError:
            raise corrupt("not ASCII text") from None
        if len(lines) != 3 or lines[0] != _FILE_MAGIC:
            raise corrupt(f"expected 3 lines starting with {_FILE_MAGIC!r}")
        seed_word, _, seed_hex = lines[1].partition(" ")
        id_word, _, id_text = lines[2].partition(" ")
        if seed_word != "seed" or id_word != "peer-id":
            raise corrupt("expected a 'seed' line and a 'peer-id' line")
        try:
            seed = bytes.fromhex(seed_hex)
        except ValueError:
            raise corrupt("the seed is not hexadecimal") from None
        if len(seed) != _SEED_LEN:
            raise corrupt(f"the seed is {len(seed)} bytes, expected {_SEED_LEN}")
        identity = cls(seed)
        if id_text != str(identity.peer_id):
            raise corrupt("the peer id does not match the seed")
        return identity

    @classmethod
    def _create(cls, path: Path) -> Identity | None:
        """Write a new identity to ``path``; None if the file appeared
        meanwhile (the caller then loads it)."""
        identity = cls.generate()
        directory = path.parent
        try:
            if not directory.exists():
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                # mkdir's mode is filtered by the umask; the key's directory
                # must be private whatever the umask says.
                os.chmod(directory, 0o700)
            fd, tmp = tempfile.mkstemp(prefix=".identity-", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise IdentityError(
                f"cannot create identity file {path}: {exc.strerror or exc}", path
            ) from exc
        try:
            try:
                os.fchmod(fd, 0o600)  # mkstemp already does; say it anyway
                os.write(fd, identity._file_text().encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                # link() refuses to overwrite, so two processes starting at
                # once cannot end up with different identities.
                os.link(tmp, path)
            except FileExistsError:
                return None
            except OSError:
                # Filesystems without hard links: replace() is still atomic.
                os.replace(tmp, path)
            _fsync_dir(directory)
        except OSError as exc:
            raise IdentityError(
                f"cannot write identity file {path}: {exc.strerror or exc}", path
            ) from exc
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        logger.info("created identity %s in %s", identity.peer_id, path)
        return identity


def _fsync_dir(directory: Path) -> None:
    # Makes the new name durable; not possible everywhere, and not fatal.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
