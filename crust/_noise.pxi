# The Noise handshake of csrc/noise.h, bound for crust/noise.py (included
# by _core.pyx). Bytes in through a Py_buffer, bytes out; every negative
# CRUST_NOISE_E* code becomes a NoiseError (the only exception a peer's
# bytes can cause here). crust/noise.py holds the public API and its
# documentation; these are its primitives.

from libc.string cimport memcpy

from crust.errors import NoiseError

NOISE_DHLEN = C.CRUST_NOISE_DHLEN
NOISE_HASHLEN = C.CRUST_NOISE_HASHLEN
NOISE_KEYLEN = C.CRUST_NOISE_KEYLEN
NOISE_TAGLEN = C.CRUST_NOISE_TAGLEN
NOISE_MAX_MESSAGE = C.CRUST_NOISE_MAX_MESSAGE
NOISE_B2B_STATEBYTES = C.CRUST_NOISE_B2B_STATEBYTES

_NOISE_MESSAGES = {
    C.CRUST_NOISE_EINVAL: "invalid argument",
    C.CRUST_NOISE_ESTATE: "handshake state does not allow this now",
    C.CRUST_NOISE_ESHORT: "message too short for what its pattern carries",
    C.CRUST_NOISE_ETOOBIG: f"message exceeds {C.CRUST_NOISE_MAX_MESSAGE} bytes",
    C.CRUST_NOISE_EDECRYPT: "decryption failed (wrong key, tampering or replay)",
    C.CRUST_NOISE_ELOWORDER: "DH with a low-order public key",
    C.CRUST_NOISE_ENONCE: "nonce space exhausted: rekey or start a new session",
    C.CRUST_NOISE_ENOSODIUM: "libsodium functions not registered (import crust._sodium)",
    C.CRUST_NOISE_ENOTDONE: "split() before the handshake is complete",
    C.CRUST_NOISE_EBUFFER: "output buffer too small",
    C.CRUST_NOISE_ENOREP: "the ephemeral key has no Elligator representative",
}


cdef int _noise_raise(int rc) except -1:
    raise NoiseError(_NOISE_MESSAGES.get(rc, f"noise error {rc}"))


cdef int _noise_buffer(object data, Py_buffer *view) except -1:
    """A read-only view of any bytes-like object; anything else (an int,
    None, a str) is a NoiseError, never a silently built buffer."""
    try:
        PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    except (TypeError, BufferError, ValueError) as exc:
        raise NoiseError("expected a bytes-like object") from exc
    return 0


cdef int _noise_key(object data, Py_buffer *view, str what) except -1:
    """A view of exactly 32 bytes (libsodium reads that many, unchecked)."""
    _noise_buffer(data, view)
    if view.len != 32:
        n = view.len
        PyBuffer_Release(view)
        raise NoiseError(f"{what} must be 32 bytes, got {n}")
    return 0


def noise_use_sodium(uintptr_t scalarmult, uintptr_t scalarmult_base, uintptr_t b2b_init,
                     uintptr_t b2b_update, uintptr_t b2b_final, uintptr_t seal,
                     uintptr_t open, size_t b2b_statebytes):
    """Install libsodium's functions (pointers as ints; crust._sodium)."""
    cdef C.crust_noise_sodium fns
    fns.scalarmult = <C.crust_noise_scalarmult_fn>scalarmult
    fns.scalarmult_base = <C.crust_noise_scalarmult_base_fn>scalarmult_base
    fns.b2b_init = <C.crust_noise_b2b_init_fn>b2b_init
    fns.b2b_update = <C.crust_noise_b2b_update_fn>b2b_update
    fns.b2b_final = <C.crust_noise_b2b_final_fn>b2b_final
    fns.seal = <C.crust_noise_seal_fn>seal
    fns.open = <C.crust_noise_open_fn>open
    fns.b2b_statebytes = b2b_statebytes
    cdef int rc = C.crust_noise_use_sodium(&fns)
    if rc < 0:
        _noise_raise(rc)


def noise_x25519_counts():
    """(DHs, ephemeral public keys) computed by the Noise core in this
    process: what a test counts to show junk costs no Diffie-Hellman."""
    cdef uint64_t dh = 0, ephemeral = 0
    C.crust_noise_x25519_counts(&dh, &ephemeral)
    return dh, ephemeral


def noise_public_key(private):
    cdef Py_buffer v
    cdef uint8_t out[32]
    _noise_key(private, &v, "X25519 private key")
    try:
        rc = C.crust_noise_public_key(out, <const uint8_t *>v.buf)
    finally:
        PyBuffer_Release(&v)
    if rc < 0:
        _noise_raise(rc)
    return PyBytes_FromStringAndSize(<char *>out, 32)


def noise_dh(private, public):
    cdef Py_buffer a, b
    cdef uint8_t out[32]
    cdef int rc
    _noise_key(private, &a, "X25519 private key")
    try:
        _noise_key(public, &b, "X25519 public key")
        try:
            rc = C.crust_noise_dh(out, <const uint8_t *>a.buf, <const uint8_t *>b.buf)
        finally:
            PyBuffer_Release(&b)
    finally:
        PyBuffer_Release(&a)
    if rc < 0:
        _noise_raise(rc)
    result = PyBytes_FromStringAndSize(<char *>out, 32)
    C.crust_noise_wipe(out, 32)
    return result


def noise_hash(data):
    cdef Py_buffer v
    cdef uint8_t out[64]
    cdef int rc
    _noise_buffer(data, &v)
    try:
        rc = C.crust_noise_hash(out, <const uint8_t *>v.buf, <size_t>v.len)
    finally:
        PyBuffer_Release(&v)
    if rc < 0:
        _noise_raise(rc)
    return PyBytes_FromStringAndSize(<char *>out, 64)


def noise_hmac(key, data):
    cdef Py_buffer k, d
    cdef uint8_t out[64]
    cdef int rc
    _noise_buffer(key, &k)
    try:
        _noise_buffer(data, &d)
        try:
            rc = C.crust_noise_hmac(out, <const uint8_t *>k.buf, <size_t>k.len,
                                    <const uint8_t *>d.buf, <size_t>d.len)
        finally:
            PyBuffer_Release(&d)
    finally:
        PyBuffer_Release(&k)
    if rc < 0:
        _noise_raise(rc)
    return PyBytes_FromStringAndSize(<char *>out, 64)


def noise_hkdf(chaining_key, input_key_material, int num_outputs):
    cdef Py_buffer k, d
    cdef uint8_t o1[64]
    cdef uint8_t o2[64]
    cdef uint8_t o3[64]
    cdef uint8_t *third = NULL
    cdef int rc
    if num_outputs == 3:
        third = o3
    if num_outputs != 2 and num_outputs != 3:
        raise NoiseError("HKDF makes 2 or 3 outputs")
    _noise_buffer(chaining_key, &k)
    try:
        _noise_buffer(input_key_material, &d)
        try:
            rc = C.crust_noise_hkdf(<const uint8_t *>k.buf, <size_t>k.len,
                                    <const uint8_t *>d.buf, <size_t>d.len,
                                    o1, o2, third)
        finally:
            PyBuffer_Release(&d)
    finally:
        PyBuffer_Release(&k)
    if rc < 0:
        _noise_raise(rc)
    if num_outputs == 2:
        return (PyBytes_FromStringAndSize(<char *>o1, 64), PyBytes_FromStringAndSize(<char *>o2, 64))
    return (PyBytes_FromStringAndSize(<char *>o1, 64), PyBytes_FromStringAndSize(<char *>o2, 64),
            PyBytes_FromStringAndSize(<char *>o3, 64))


def noise_hkdf_expand(secret, info, Py_ssize_t length):
    """HKDF-Expand (RFC 5869) with HMAC-BLAKE2b: ``length`` bytes."""
    cdef Py_buffer k, d
    cdef int rc
    if length < 1 or length > C.CRUST_NOISE_EXPAND_MAX:
        raise NoiseError(f"HKDF-Expand makes 1 to {C.CRUST_NOISE_EXPAND_MAX} bytes, not {length}")
    out = PyBytes_FromStringAndSize(NULL, length)
    _noise_buffer(secret, &k)
    try:
        _noise_buffer(info, &d)
        try:
            rc = C.crust_noise_hkdf_expand(<const uint8_t *>k.buf, <size_t>k.len,
                                           <const uint8_t *>d.buf, <size_t>d.len,
                                           <uint8_t *>PyBytes_AS_STRING(out), <size_t>length)
        finally:
            PyBuffer_Release(&d)
    finally:
        PyBuffer_Release(&k)
    if rc < 0:
        _noise_raise(rc)
    return out


cdef object _noise_cipher(object key, uint64_t n, object ad, object data, bint encrypt):
    cdef C.crust_noise_cipher cs
    cdef Py_buffer k, a, d
    cdef int rc
    cdef Py_ssize_t out_len
    _noise_key(key, &k, "cipher key")
    try:
        cs.has_key = 1
        cs.n = n
        memcpy(cs.k, k.buf, 32)
    finally:
        PyBuffer_Release(&k)
    try:
        _noise_buffer(ad, &a)
        try:
            _noise_buffer(data, &d)
            try:
                if d.len > C.CRUST_NOISE_MAX_MESSAGE:
                    raise NoiseError(f"message of {d.len} bytes exceeds {C.CRUST_NOISE_MAX_MESSAGE}")
                if encrypt:
                    out_len = d.len + C.CRUST_NOISE_TAGLEN
                else:
                    if d.len < C.CRUST_NOISE_TAGLEN:
                        raise NoiseError(f"ciphertext shorter than the {C.CRUST_NOISE_TAGLEN}-byte tag")
                    out_len = d.len - C.CRUST_NOISE_TAGLEN
                out = PyBytes_FromStringAndSize(NULL, out_len)
                if encrypt:
                    rc = C.crust_noise_encrypt(&cs, <const uint8_t *>a.buf, <size_t>a.len,
                                               <const uint8_t *>d.buf, <size_t>d.len,
                                               <uint8_t *>PyBytes_AS_STRING(out))
                else:
                    rc = C.crust_noise_decrypt(&cs, <const uint8_t *>a.buf, <size_t>a.len,
                                               <const uint8_t *>d.buf, <size_t>d.len,
                                               <uint8_t *>PyBytes_AS_STRING(out))
            finally:
                PyBuffer_Release(&d)
        finally:
            PyBuffer_Release(&a)
    finally:
        C.crust_noise_wipe(&cs, sizeof(cs))
    if rc < 0:
        _noise_raise(rc)
    return out


def noise_encrypt(key, uint64_t n, ad, plaintext):
    """ENCRYPT(k, n, ad, plaintext) (the caller advances n)."""
    return _noise_cipher(key, n, ad, plaintext, True)


def noise_decrypt(key, uint64_t n, ad, ciphertext):
    """DECRYPT(k, n, ad, ciphertext); NoiseError when it does not verify."""
    return _noise_cipher(key, n, ad, ciphertext, False)


def noise_rekey(key):
    cdef C.crust_noise_cipher cs
    cdef Py_buffer k
    _noise_key(key, &k, "cipher key")
    try:
        cs.has_key = 1
        cs.n = 0
        memcpy(cs.k, k.buf, 32)
    finally:
        PyBuffer_Release(&k)
    rc = C.crust_noise_rekey(&cs)
    out = PyBytes_FromStringAndSize(<char *>cs.k, 32)
    C.crust_noise_wipe(&cs, sizeof(cs))
    if rc < 0:
        _noise_raise(rc)
    return out


@cython.final
cdef class NoiseHandshake:
    """One side of a Noise_XX or Noise_IK handshake (crust_noise_hs):
    crust.noise.HandshakeState is the documented wrapper. With ``masked``,
    ephemeral keys travel as Elligator representatives (``tweak`` goes with
    ``e``) and write_message returns None for an ``e`` without one:
    set_ephemeral, then write again."""

    cdef C.crust_noise_hs hs

    def __cinit__(self, int pattern, bint initiator, prologue, s, s_pub, rs, e,
                  bint masked=False, int tweak=0):
        cdef Py_buffer pv, sv, spv, rsv, ev
        cdef const uint8_t *sp = NULL
        cdef const uint8_t *rp = NULL
        cdef int rc
        if pattern != C.CRUST_NOISE_XX and pattern != C.CRUST_NOISE_IK:
            raise NoiseError(f"unsupported handshake pattern {pattern}")
        if not 0 <= tweak <= 255:
            raise NoiseError(f"tweak must be a byte, got {tweak}")
        _noise_buffer(prologue, &pv)
        try:
            _noise_key(s, &sv, "X25519 private key")
            try:
                _noise_key(e, &ev, "X25519 ephemeral private key")
                try:
                    if s_pub is not None:
                        _noise_key(s_pub, &spv, "static public key")
                        sp = <const uint8_t *>spv.buf
                    try:
                        if rs is not None:
                            _noise_key(rs, &rsv, "remote static key")
                            rp = <const uint8_t *>rsv.buf
                        try:
                            if masked:
                                rc = C.crust_noise_init_masked(
                                    &self.hs, <C.crust_noise_pattern>pattern, initiator,
                                    <const uint8_t *>pv.buf, <size_t>pv.len,
                                    <const uint8_t *>sv.buf, sp, rp, <const uint8_t *>ev.buf,
                                    <uint8_t>tweak)
                            else:
                                rc = C.crust_noise_init(
                                    &self.hs, <C.crust_noise_pattern>pattern, initiator,
                                    <const uint8_t *>pv.buf, <size_t>pv.len,
                                    <const uint8_t *>sv.buf, sp, rp, <const uint8_t *>ev.buf)
                        finally:
                            if rp != NULL:
                                PyBuffer_Release(&rsv)
                    finally:
                        if sp != NULL:
                            PyBuffer_Release(&spv)
                finally:
                    PyBuffer_Release(&ev)
            finally:
                PyBuffer_Release(&sv)
        finally:
            PyBuffer_Release(&pv)
        if rc == C.CRUST_NOISE_EINVAL and initiator and rs is None:
            raise NoiseError("IK needs the responder's static key (rs)")
        if rc < 0:
            _noise_raise(rc)

    def __dealloc__(self):
        C.crust_noise_wipe(&self.hs, sizeof(self.hs))

    @property
    def complete(self):
        return C.crust_noise_complete(&self.hs) != 0

    @property
    def is_my_turn(self):
        return C.crust_noise_my_turn(&self.hs) != 0

    @property
    def handshake_hash(self):
        return PyBytes_FromStringAndSize(<char *>self.hs.h, 64)

    @property
    def remote_static(self):
        if not self.hs.has_rs:
            return None
        return PyBytes_FromStringAndSize(<char *>self.hs.rs, 32)

    @property
    def masked(self):
        return self.hs.masked != 0

    def set_ephemeral(self, e, int tweak):
        """Another ephemeral private key (and tweak), before "e" is sent."""
        cdef Py_buffer v
        cdef int rc
        if not 0 <= tweak <= 255:
            raise NoiseError(f"tweak must be a byte, got {tweak}")
        _noise_key(e, &v, "X25519 ephemeral private key")
        try:
            rc = C.crust_noise_set_ephemeral(&self.hs, <const uint8_t *>v.buf, <uint8_t>tweak)
        finally:
            PyBuffer_Release(&v)
        if rc == C.CRUST_NOISE_ESTATE:
            raise NoiseError("the ephemeral key has already been sent")
        if rc < 0:
            _noise_raise(rc)

    def split_keys(self):
        """Split()'s two cipher keys (initiator->responder, responder->initiator)."""
        if not C.crust_noise_complete(&self.hs):
            _noise_raise(C.CRUST_NOISE_ENOTDONE)
        return (PyBytes_FromStringAndSize(<char *>self.hs.k1, 32),
                PyBytes_FromStringAndSize(<char *>self.hs.k2, 32))

    def write_message(self, payload):
        cdef Py_buffer v
        cdef size_t need, out_len = 0
        cdef int rc
        if C.crust_noise_complete(&self.hs):
            raise NoiseError("handshake already complete")
        if not C.crust_noise_my_turn(&self.hs):
            raise NoiseError("not our turn to write: read the peer's message first")
        _noise_buffer(payload, &v)
        try:
            need = C.crust_noise_write_len(&self.hs, <size_t>v.len)
            if <size_t>v.len > C.CRUST_NOISE_MAX_MESSAGE or need > C.CRUST_NOISE_MAX_MESSAGE:
                raise NoiseError(f"handshake message of {max(need, <size_t>v.len)} bytes "
                                 f"exceeds {C.CRUST_NOISE_MAX_MESSAGE}")
            out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>need)
            rc = C.crust_noise_write(&self.hs, <const uint8_t *>v.buf, <size_t>v.len,
                                     <uint8_t *>PyBytes_AS_STRING(out), need, &out_len)
        finally:
            PyBuffer_Release(&v)
        if rc == C.CRUST_NOISE_ENOREP:
            return None
        if rc < 0:
            _noise_raise(rc)
        if out_len != need:  # write_len and write disagree: a bug, not a peer
            raise AssertionError(f"noise write: {out_len} bytes, {need} announced")
        return out

    def read_message(self, message):
        cdef Py_buffer v
        cdef size_t got = 0
        cdef int rc
        cdef PyObject *raw = NULL
        if C.crust_noise_complete(&self.hs):
            raise NoiseError("handshake already complete")
        if C.crust_noise_my_turn(&self.hs):
            raise NoiseError("not our turn to read: write our message first")
        _noise_buffer(message, &v)
        try:
            if v.len > C.CRUST_NOISE_MAX_MESSAGE:
                raise NoiseError(f"handshake message of {v.len} bytes exceeds "
                                 f"{C.CRUST_NOISE_MAX_MESSAGE}")
            # The payload is at most the message: build it in place, shrink after.
            raw = _bytes_new_raw(NULL, v.len)
            rc = C.crust_noise_read(&self.hs, <const uint8_t *>v.buf, <size_t>v.len,
                                    <uint8_t *>_bytes_data_raw(raw), <size_t>v.len, &got)
        finally:
            PyBuffer_Release(&v)
        if rc < 0:
            Py_DECREF(<object>raw)
            _noise_raise(rc)
        _bytes_resize_raw(&raw, <Py_ssize_t>got)
        out = <object>raw
        Py_DECREF(out)
        return out
