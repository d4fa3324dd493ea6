# Elligator 2 representatives of csrc/elligator.h, bound for
# crust/elligator.py (included by _core.pyx). 32 bytes in through a
# Py_buffer, bytes out. libsodium's crypto_scalarmult_base arrives once,
# from crust/_sodium.py, as for the Noise core.

ELLIGATOR_BYTES = C.CRUST_ELLIGATOR_BYTES

cdef C.crust_elligator_scalarmult_base_fn _elligator_base = NULL


cdef int _elligator_bytes32(object data, Py_buffer *view, str what) except -1:
    """A read-only view of exactly 32 bytes; anything else raises."""
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    if view.len != 32:
        n = view.len
        PyBuffer_Release(view)
        raise ValueError(f"{what} must be 32 bytes, got {n}")
    return 0


def elligator_use_sodium(uintptr_t scalarmult_base):
    """Install crypto_scalarmult_base (its address as an int; crust._sodium)."""
    global _elligator_base
    if scalarmult_base == 0:
        raise ValueError("NULL crypto_scalarmult_base")
    _elligator_base = <C.crust_elligator_scalarmult_base_fn>scalarmult_base


def elligator_map(representative):
    cdef Py_buffer v
    cdef uint8_t out[32]
    _elligator_bytes32(representative, &v, "representative")
    try:
        C.crust_elligator_map(out, <const uint8_t *>v.buf)
    finally:
        PyBuffer_Release(&v)
    return PyBytes_FromStringAndSize(<char *>out, 32)


def elligator_rev(u, int tweak):
    cdef Py_buffer v
    cdef uint8_t out[32]
    cdef int rc
    if not 0 <= tweak <= 255:
        raise ValueError(f"tweak must be a byte, got {tweak}")
    _elligator_bytes32(u, &v, "u-coordinate")
    try:
        rc = C.crust_elligator_rev(out, <const uint8_t *>v.buf, <uint8_t>tweak)
    finally:
        PyBuffer_Release(&v)
    if rc == C.CRUST_ELLIGATOR_ENOREP:
        return None
    return PyBytes_FromStringAndSize(<char *>out, 32)


cdef int _elligator_raise(int rc) except -1:
    if rc == C.CRUST_ELLIGATOR_EINVAL:
        raise RuntimeError("crypto_scalarmult_base not registered (import crust._sodium)")
    raise RuntimeError(f"crypto_scalarmult_base failed (elligator error {rc})")


def elligator_public_key(private):
    cdef Py_buffer v
    cdef uint8_t out[32]
    cdef int rc
    _elligator_bytes32(private, &v, "X25519 private key")
    try:
        rc = C.crust_elligator_public_key(out, <const uint8_t *>v.buf, _elligator_base)
    finally:
        PyBuffer_Release(&v)
    if rc < 0:
        _elligator_raise(rc)
    return PyBytes_FromStringAndSize(<char *>out, 32)


def elligator_key_pair(private, int tweak):
    cdef Py_buffer v
    cdef uint8_t rep[32]
    cdef uint8_t pub[32]
    cdef int rc
    if not 0 <= tweak <= 255:
        raise ValueError(f"tweak must be a byte, got {tweak}")
    _elligator_bytes32(private, &v, "X25519 private key")
    try:
        rc = C.crust_elligator_key_pair(rep, pub, <const uint8_t *>v.buf, <uint8_t>tweak,
                                        _elligator_base)
    finally:
        PyBuffer_Release(&v)
    if rc == C.CRUST_ELLIGATOR_ENOREP:
        return None
    if rc < 0:
        _elligator_raise(rc)
    return (PyBytes_FromStringAndSize(<char *>rep, 32),
            PyBytes_FromStringAndSize(<char *>pub, 32))
