# The masked short header of csrc/header_mask.h (docs/design/0083), bound
# for its tests (tests/unit/test_header_mask.py); nothing sends masked
# packets yet. Buffers in, new bytes out: the C works in place on a fresh
# copy (a bytes object nothing else holds yet).

HM_KEY_LEN = C.CRUST_HM_KEY_LEN
HM_PN_OFFSET = C.CRUST_HM_PN_OFFSET
HM_SAMPLE_OFFSET = C.CRUST_HM_SAMPLE_OFFSET
HM_SAMPLE_LEN = C.CRUST_HM_SAMPLE_LEN
HM_MIN_PACKET = C.CRUST_HM_MIN_PACKET
HM_MASKED_MAX = C.CRUST_HM_MASKED_MAX


cdef bytes _hm_copy(object packet):
    cdef bytes b = bytes(packet)
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(b), len(b))


cdef bytes _hm_key(object key):
    cdef bytes k = bytes(key)
    if len(k) != C.CRUST_HM_KEY_LEN:
        raise ValueError(f"header mask key must be {C.CRUST_HM_KEY_LEN} bytes, got {len(k)}")
    return k


def header_mask(key, packet):
    """The packet masked under key (the receiving endpoint's); ValueError
    for a packet shorter than HM_MIN_PACKET."""
    cdef bytes k = _hm_key(key)
    cdef bytes out = _hm_copy(packet)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    cdef int rc = C.crust_header_mask(<const uint8_t *>k, p, <size_t>len(out))
    if rc == C.CRUST_EMALFORMED:
        raise ValueError(f"packet of {len(out)} bytes: masking needs {C.CRUST_HM_MIN_PACKET}")
    if rc < 0:
        _raise(rc, "header_mask")
    return out


def header_unmask(key, packet):
    """(unmasked packet, connection id, packet-number length), or None for
    a packet shorter than HM_MIN_PACKET (the receiver drops it)."""
    cdef bytes k = _hm_key(key)
    cdef bytes out = _hm_copy(packet)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    cdef uint8_t cid[C.CRUST_CID_LEN]
    cdef int rc = C.crust_header_unmask(<const uint8_t *>k, p, <size_t>len(out), cid)
    if rc == C.CRUST_EMALFORMED:
        return None
    if rc < 0:
        _raise(rc, "header_unmask")
    return out, PyBytes_FromStringAndSize(<char *>cid, C.CRUST_CID_LEN), rc
