# cython: language_level=3, boundscheck=False, wraparound=False
"""The C engine of crust (csrc/crust.h), bound for Python.

This module only translates: Python ints for C integers (times are int
microseconds everywhere), any buffer-protocol object for bytes in (read
through a Py_buffer, never copied at the Python level), ``bytes`` out, and
negative ``CRUST_E*`` codes into the exceptions of :mod:`crust.errors`.
Policy (when to send, what to do on an event) lives in the Python layers
above.

A ``crust_conn`` is not thread-safe and the GIL is released around calls
that can take long, so a Connection refuses to be entered by a second
thread while one is inside it (RuntimeError) instead of corrupting state.
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport PyObject, Py_DECREF, Py_XDECREF
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t, uintptr_t, UINT64_MAX

from crust cimport _crust as C

from operator import index as _index

from crust.errors import (
    ConfigError,
    ConnectionClosed,
    CrustError,
    DatagramDropped,
    InvalidArgument,
    MessageTooLarge,
    NoKeys,
    OutOfMemory,
    ProtocolError,
    WouldBlock,
)

# Raw-pointer views of the bytes API, for building a bytes object in place
# and then shrinking it to what was written (no second copy).
cdef extern from "Python.h":
    PyObject *_bytes_new_raw "PyBytes_FromStringAndSize"(const char *v, Py_ssize_t n) except NULL
    char *_bytes_data_raw "PyBytes_AS_STRING"(PyObject *o)
    # The same, for callbacks that must not raise (NULL and a cleared error).
    PyObject *_bytes_new_noexc "PyBytes_FromStringAndSize"(const char *v, Py_ssize_t n)
    void PyErr_Clear()
    int _bytes_resize_raw "_PyBytes_Resize"(PyObject **o, Py_ssize_t n) except -1

# ---- constants (mirrors of crust.h) ---------------------------------------

VERSION_MAJOR = C.CRUST_VERSION_MAJOR
VERSION_MINOR = C.CRUST_VERSION_MINOR

CID_LEN = C.CRUST_CID_LEN
NUM_PRIO = C.CRUST_NUM_PRIO
KEY_LEN = C.CRUST_KEY_LEN
IV_LEN = C.CRUST_IV_LEN
TAG_LEN = C.CRUST_TAG_LEN
MIN_MTU = C.CRUST_MIN_MTU
FLOOR_MTU = C.CRUST_FLOOR_MTU
MAX_MTU = C.CRUST_MAX_MTU
MAX_PACKET = C.CRUST_MAX_PACKET
SHORT_HEADER_MIN = C.CRUST_SHORT_HEADER_MIN
STREAM_FRAME_HDR = C.CRUST_STREAM_FRAME_HDR
STREAM_MAX_PACKET = C.CRUST_STREAM_MAX_PACKET

OK = C.CRUST_OK
EINVAL = C.CRUST_EINVAL
EWOULDBLOCK = C.CRUST_EWOULDBLOCK
EMSGSIZE = C.CRUST_EMSGSIZE
ECLOSED = C.CRUST_ECLOSED
ENOMEM = C.CRUST_ENOMEM
ENOKEY = C.CRUST_ENOKEY
EDECRYPT = C.CRUST_EDECRYPT
EMALFORMED = C.CRUST_EMALFORMED
EDUPLICATE = C.CRUST_EDUPLICATE
ETOOOLD = C.CRUST_ETOOOLD
ENOTOURS = C.CRUST_ENOTOURS
EPROTO = C.CRUST_EPROTO

AEAD_NULL = C.CRUST_AEAD_NULL
AEAD_CHACHA20_POLY1305 = C.CRUST_AEAD_CHACHA20_POLY1305
AEAD_AES256_GCM = C.CRUST_AEAD_AES256_GCM
AEAD_AEGIS128L = C.CRUST_AEAD_AEGIS128L
AEAD_COUNT = C.CRUST_AEAD_COUNT

CC_BBR = C.CRUST_CC_BBR
CC_CUBIC = C.CRUST_CC_CUBIC
CC_COUNT = C.CRUST_CC_COUNT

EV_NONE = C.CRUST_EV_NONE
EV_MESSAGE = C.CRUST_EV_MESSAGE
EV_MESSAGE_DROPPED = C.CRUST_EV_MESSAGE_DROPPED
EV_SEND_READY = C.CRUST_EV_SEND_READY
EV_PATH_VALIDATED = C.CRUST_EV_PATH_VALIDATED
EV_MTU = C.CRUST_EV_MTU
EV_ALL_ACKED = C.CRUST_EV_ALL_ACKED
EV_CLOSED = C.CRUST_EV_CLOSED
EV_KEY_UPDATE = C.CRUST_EV_KEY_UPDATE
EV_KEYS_NEEDED = C.CRUST_EV_KEYS_NEEDED
EV_CONTROL = C.CRUST_EV_CONTROL

CLOSE_LOCAL = C.CRUST_CLOSE_LOCAL
CLOSE_REMOTE = C.CRUST_CLOSE_REMOTE
CLOSE_IDLE = C.CRUST_CLOSE_IDLE
CLOSE_PROTOCOL = C.CRUST_CLOSE_PROTOCOL
CLOSE_UNREACHABLE = C.CRUST_CLOSE_UNREACHABLE
CLOSE_LOST = C.CRUST_CLOSE_LOST

#: What Connection.poll_events returns a list of: (type, prio, payload,
#: msg_id, reason, code); payload is the message for EV_MESSAGE and EV_CONTROL,
#: else None.
RawEvent = tuple[int, int, bytes | None, int, int, int]

_ERROR_CLASSES = {
    C.CRUST_EINVAL: InvalidArgument,
    C.CRUST_EWOULDBLOCK: WouldBlock,
    C.CRUST_EMSGSIZE: MessageTooLarge,
    C.CRUST_ECLOSED: ConnectionClosed,
    C.CRUST_ENOMEM: OutOfMemory,
    C.CRUST_ENOKEY: NoKeys,
    C.CRUST_EDECRYPT: DatagramDropped,
    C.CRUST_EMALFORMED: DatagramDropped,
    C.CRUST_EDUPLICATE: DatagramDropped,
    C.CRUST_ETOOOLD: DatagramDropped,
    C.CRUST_ENOTOURS: DatagramDropped,
    C.CRUST_EPROTO: ProtocolError,
}

_CC_NAMES = {"bbr": C.CRUST_CC_BBR, "cubic": C.CRUST_CC_CUBIC}

# Copies at least this long run without the GIL; below it, releasing and
# retaking the GIL costs more than the memcpy it would free other threads for.
cdef enum:
    _NOGIL_COPY = 16384
    # Datagrams built per GIL release in datagrams_to_send (on the C stack).
    _TX_BATCH = 16
    # Messages at least this long are assembled in their final bytes object
    # (_msg_alloc): the copy saved outweighs taking the GIL once per message.
    _DIRECT_MIN = 65536


cdef uint8_t *_msg_alloc(void *ctx, uint64_t length, void **handle) noexcept with gil:
    """crust_msg_alloc_fn: a fresh bytes object of ``length`` bytes, its
    reference in *handle. NULL (the engine keeps the message in its own
    buffer) when Python cannot allocate it."""
    if length > <uint64_t>PY_SSIZE_T_MAX:
        return NULL
    cdef PyObject *raw = _bytes_new_noexc(NULL, <Py_ssize_t>length)
    if raw == NULL:
        PyErr_Clear()
        return NULL
    handle[0] = <void *>raw
    return <uint8_t *>_bytes_data_raw(raw)


cdef void _msg_free(void *ctx, void *handle) noexcept with gil:
    """crust_msg_free_fn: drop a bytes object _msg_alloc made."""
    Py_XDECREF(<PyObject *>handle)


def strerror(int code):
    """The core's name for an error code (``crust_strerror``)."""
    return C.crust_strerror(code).decode("utf-8", "replace")


cdef int _raise(int code, str what) except -1:
    exc = _ERROR_CLASSES.get(code, CrustError)(f"{what}: {strerror(code)} ({code})")
    exc.code = code
    raise exc


# ---- configuration -----------------------------------------------------------

# The fields (_CONFIG_FIELDS, _config_put, the _ConfigFields properties) are
# generated from csrc/crust_config_fields.h by scripts/gen_config.py.
include "_config.pxi"


def _config_error(str field, str message):
    exc = ConfigError(message)
    exc.field = field
    exc.code = C.CRUST_EINVAL
    return exc


cdef uint64_t _coerce_field(str name, object value) except? 0xFFFFFFFFFFFFFFFF:
    limit = 1 << _CONFIG_FIELDS[name]
    if name == "cc" and isinstance(value, str):
        try:
            return _CC_NAMES[value.lower()]
        except KeyError:
            raise _config_error(
                name, f"Config.cc must be one of {sorted(_CC_NAMES)} or an int, got {value!r}"
            ) from None
    try:
        v = _index(value)
    except TypeError:
        raise TypeError(
            f"Config.{name} must be an int, not {type(value).__name__}"
        ) from None
    if v < 0 or v >= limit:
        raise _config_error(name, f"Config.{name} = {v} is outside 0..{limit - 1}")
    return v


def _config_from_dict(dict fields):
    return Config(**fields)


cdef class Config(_ConfigFields):
    """Tunables of one connection (``crust_config``); sizes in bytes, times
    in microseconds. Every field is a keyword; the defaults are the core's
    (``crust_config_default``). Values are checked by the core's
    ``crust_config_validate``: a bad one raises ConfigError naming the field.
    """

    def __cinit__(self):
        C.crust_config_default(&self.c)

    def __init__(self, **fields):
        C.crust_config_default(&self.c)
        for name, value in fields.items():
            if name not in _CONFIG_FIELDS:
                raise TypeError(f"Config() got an unexpected keyword argument {name!r}")
            _config_put(&self.c, name, _coerce_field(name, value))
        self._validate()

    cdef int _validate(self) except -1:
        cdef const char *field = NULL
        if C.crust_config_validate(&self.c, &field) == C.CRUST_OK:
            return 0
        name = field.decode("utf-8", "replace") if field != NULL else "?"
        value = getattr(self, name, None) if name in _CONFIG_FIELDS else None
        raise _config_error(name, f"invalid Config.{name} = {value}")

    cdef int _set(self, str name, object value) except -1:
        cdef C.crust_config saved = self.c
        _config_put(&self.c, name, _coerce_field(name, value))
        try:
            self._validate()
        except BaseException:
            self.c = saved
            raise
        return 0

    def as_dict(self):
        """Every field, in crust_config order."""
        return {name: getattr(self, name) for name in _CONFIG_FIELDS}

    def replace(self, **changes):
        """A new Config with ``changes`` applied to a copy of this one."""
        fields = self.as_dict()
        fields.update(changes)
        return Config(**fields)

    def __eq__(self, other):
        if not isinstance(other, Config):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None

    def __repr__(self):
        default = Config()
        changed = ", ".join(
            f"{name}={value!r}"
            for name, value in self.as_dict().items()
            if getattr(default, name) != value
        )
        return f"Config({changed})"

    def __reduce__(self):
        return (_config_from_dict, (self.as_dict(),))


# ---- connections ------------------------------------------------------------

cdef bytes _cid(object value, str what):
    if isinstance(value, int):
        raise TypeError(f"{what} must be a bytes-like object, not int")
    data = memoryview(value).tobytes()
    if len(data) != C.CRUST_CID_LEN:
        raise ValueError(f"{what} must be {C.CRUST_CID_LEN} bytes, got {len(data)}")
    return data


cdef unsigned _prio(object priority) except? 0xFFFFFFFF:
    try:
        p = _index(priority)
    except TypeError:
        raise TypeError(f"priority must be an int, not {type(priority).__name__}") from None
    if p < 0 or p >= C.CRUST_NUM_PRIO:
        exc = InvalidArgument(f"priority must be 0..{C.CRUST_NUM_PRIO - 1}, got {p}")
        exc.code = C.CRUST_EINVAL
        raise exc
    return p


cdef const uint8_t *_fixed(object value, Py_ssize_t size, str what, list keep) except NULL:
    # Keys and IVs: copied to bytes (a few dozen bytes, once per key change).
    if isinstance(value, int):
        raise TypeError(f"{what} must be a bytes-like object, not int")
    data = memoryview(value).tobytes()
    if len(data) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(data)}")
    keep.append(data)
    return <const uint8_t *>PyBytes_AS_STRING(data)


# Connections created and not yet freed (live_connections()).
cdef Py_ssize_t _live_connections = 0


@cython.auto_pickle(False)
@cython.final
cdef class Connection:
    """One end of one connection (``crust_conn``). Sans-IO: feed it
    datagrams, take datagrams from it, drain its events, and call
    :meth:`handle_timer` at :meth:`get_timer`. Every ``now`` is a monotonic
    time in int microseconds that never goes backwards.
    """

    cdef C.crust_conn *_c
    # True while a call runs without the GIL (see the module docstring).
    cdef bint _busy
    cdef readonly bytes local_cid
    cdef readonly bytes remote_cid
    # The Endpoint this connection was added to (crust/_endpoint.pxi), or
    # None. While in one, the connection is the endpoint's to drive: direct
    # calls are refused during a drive, and each one marks the connection
    # for the endpoint's next flush.
    cdef Endpoint _endpoint
    # Events receive_stream drained early (a large message completed in
    # mid-chunk, see there); poll_events returns them first.
    cdef list _early_events
    # Application messages the drains may still take (set_message_budget);
    # -1: no limit.
    cdef Py_ssize_t _msg_budget

    def __cinit__(self):
        self._c = NULL
        self._busy = False
        self._early_events = None
        self._msg_budget = -1

    def __init__(self, local_cid, remote_cid, uint64_t now, Config config=None):
        if self._c != NULL:
            raise RuntimeError("Connection.__init__ called twice")
        self.local_cid = _cid(local_cid, "local_cid")
        self.remote_cid = _cid(remote_cid, "remote_cid")
        cdef const C.crust_config *cfg = NULL
        if config is not None:
            cfg = &config.c
        self._c = C.crust_conn_new(
            cfg,
            <const uint8_t *>PyBytes_AS_STRING(self.local_cid),
            <const uint8_t *>PyBytes_AS_STRING(self.remote_cid),
            now,
        )
        if self._c == NULL:
            raise OutOfMemory("crust_conn_new failed: out of memory")
        global _live_connections
        _live_connections += 1
        # Large messages are assembled in the bytes object the application
        # gets: the engine writes each packet's data there, no copy out.
        C.crust_conn_set_msg_alloc(self._c, _msg_alloc, _msg_free, NULL, _DIRECT_MIN)

    def __dealloc__(self):
        global _live_connections
        if self._c != NULL:
            C.crust_conn_free(self._c)
            self._c = NULL
            _live_connections -= 1

    cdef inline int _ready(self) except -1:
        if self._c == NULL:
            raise RuntimeError("Connection is not initialised")
        if self._busy:
            raise RuntimeError("Connection is in use by another thread")
        if self._endpoint is not None:
            self._endpoint._touch(self)
        return 0

    # Around every call that releases the GIL: the endpoint must not drive
    # the connection meanwhile, so it counts such calls.
    cdef inline void _enter(self) noexcept:
        self._busy = True
        if self._endpoint is not None:
            self._endpoint._inside += 1

    cdef inline void _leave(self) noexcept:
        self._busy = False
        if self._endpoint is not None:
            self._endpoint._inside -= 1

    def __repr__(self):
        return f"<crust._core.Connection {self.local_cid.hex()}->{self.remote_cid.hex()}>"

    # -- keys --

    def set_keys(self, unsigned phase, int aead, tx_key, tx_iv, rx_key, rx_iv):
        """Install packet keys into key-phase slot ``phase`` (0 or 1): the
        current keys when it is the slot in use, else the next generation's
        (install them when EV_KEYS_NEEDED asks; see crust_conn_set_keys)."""
        self._ready()
        if aead < 0 or aead >= C.CRUST_AEAD_COUNT:
            exc = InvalidArgument(f"unknown AEAD id {aead}")
            exc.code = C.CRUST_EINVAL
            raise exc
        keep = []
        cdef const uint8_t *tk = _fixed(tx_key, C.CRUST_KEY_LEN, "tx_key", keep)
        cdef const uint8_t *ti = _fixed(tx_iv, C.CRUST_IV_LEN, "tx_iv", keep)
        cdef const uint8_t *rk = _fixed(rx_key, C.CRUST_KEY_LEN, "rx_key", keep)
        cdef const uint8_t *ri = _fixed(rx_iv, C.CRUST_IV_LEN, "rx_iv", keep)
        cdef int rc = C.crust_conn_set_keys(self._c, phase, <C.crust_aead_id>aead,
                                            tk, ti, rk, ri)
        if rc < 0:
            _raise(rc, "set_keys")

    def update_keys(self, uint64_t now):
        """Start a key update now (NoKeys unless the next keys are installed)."""
        self._ready()
        cdef int rc = C.crust_conn_update_keys(self._c, now)
        if rc < 0:
            _raise(rc, "update_keys")

    # -- sending --

    def send(self, data, priority=0, *, uint64_t now, bint control=False):
        """Queue one message (any buffer-protocol object; copied by the core,
        so ``data`` is free on return). Returns its message id. A ``control``
        message arrives as EV_CONTROL instead of EV_MESSAGE."""
        cdef unsigned prio = _prio(priority)
        if control:
            prio |= C.CRUST_SEND_CONTROL
        cdef Py_buffer view
        cdef uint64_t msg_id = 0
        cdef int rc
        self._ready()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len >= _NOGIL_COPY:
                self._enter()
                try:
                    with nogil:
                        rc = C.crust_conn_send(self._c, now, <const uint8_t *>view.buf,
                                               <size_t>view.len, prio, &msg_id)
                finally:
                    self._leave()
            else:
                rc = C.crust_conn_send(self._c, now, <const uint8_t *>view.buf,
                                       <size_t>view.len, prio, &msg_id)
        finally:
            PyBuffer_Release(&view)
        if rc < 0:
            _raise(rc, "send")
        return msg_id

    def send_capacity(self):
        """Bytes :meth:`send` would accept right now."""
        self._ready()
        return C.crust_conn_send_capacity(self._c)

    def datagrams_to_send(self, uint64_t now, Py_ssize_t max_datagrams=64):
        """Up to ``max_datagrams`` datagrams ready to go out now."""
        cdef uint8_t buf[_TX_BATCH * C.CRUST_MAX_PACKET]
        cdef size_t lens[_TX_BATCH]
        cdef Py_ssize_t n, i, batch
        cdef size_t got
        cdef bint bad = False
        if max_datagrams < 0:
            raise ValueError("max_datagrams must be >= 0")
        self._ready()
        out = []
        while max_datagrams > 0:
            batch = _TX_BATCH if max_datagrams > _TX_BATCH else max_datagrams
            n = 0
            self._enter()
            try:
                with nogil:
                    while n < batch:
                        got = C.crust_conn_poll_transmit(
                            self._c, now, buf + n * C.CRUST_MAX_PACKET, C.CRUST_MAX_PACKET)
                        if got == 0:
                            break
                        if got > C.CRUST_MAX_PACKET:
                            bad = True
                            break
                        lens[n] = got
                        n += 1
            finally:
                self._leave()
            if bad:
                raise RuntimeError("crust_conn_poll_transmit overran its buffer")
            for i in range(n):
                out.append(PyBytes_FromStringAndSize(
                    <char *>buf + i * C.CRUST_MAX_PACKET, <Py_ssize_t>lens[i]))
            if n < batch:
                break
            max_datagrams -= n
        return out

    def transmit_into(self, uint64_t now, buf, Py_ssize_t slot, Py_ssize_t max_datagrams=64):
        """Build datagrams straight into the writable buffer ``buf``, the
        i-th at offset ``i * slot``; returns their lengths. ``slot`` must be
        at least MAX_PACKET."""
        cdef Py_buffer view
        cdef Py_ssize_t n = 0, i, j, limit
        cdef size_t got
        cdef size_t lens[_TX_BATCH]
        cdef uint8_t *base
        cdef bint bad = False
        if slot < C.CRUST_MAX_PACKET:
            raise ValueError(f"slot must be at least {C.CRUST_MAX_PACKET}, got {slot}")
        if max_datagrams < 0:
            raise ValueError("max_datagrams must be >= 0")
        self._ready()
        out = []
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
        try:
            limit = view.len // slot
            if limit > max_datagrams:
                limit = max_datagrams
            base = <uint8_t *>view.buf
            while n < limit:
                i = 0
                self._enter()
                try:
                    with nogil:
                        while i < _TX_BATCH and n + i < limit:
                            got = C.crust_conn_poll_transmit(
                                self._c, now, base + (n + i) * slot, C.CRUST_MAX_PACKET)
                            if got == 0:
                                break
                            if got > C.CRUST_MAX_PACKET:
                                bad = True
                                break
                            lens[i] = got
                            i += 1
                finally:
                    self._leave()
                if bad:
                    raise RuntimeError("crust_conn_poll_transmit overran its slot")
                for j in range(i):
                    out.append(lens[j])
                n += i
                if i < _TX_BATCH:
                    break
        finally:
            PyBuffer_Release(&view)
        return out

    # -- back-pressure from the application --

    def set_manual_credit(self, bint on):
        """With manual credit on, an application message stays charged to
        the flow-control window after :meth:`poll_events` took it, until
        :meth:`release` gives its bytes back (the event's ``code`` slot says
        how many): the window then bounds what the caller holds for its
        application, as well as what the core holds."""
        self._ready()
        C.crust_conn_set_manual_credit(self._c, on)

    def release(self, uint64_t nbytes):
        """Give ``nbytes`` of taken messages back to the window (manual
        credit). True when that reopened the window: transmit soon, the
        peer is told."""
        self._ready()
        return C.crust_conn_release(self._c, nbytes) != 0

    def set_message_budget(self, Py_ssize_t n):
        """Let :meth:`poll_events` take at most ``n`` more application
        messages (-1: any number). Past that, complete messages stay queued
        in the core, compact and charged to the window, and yield no event
        until the budget is raised again (then poll the events)."""
        if n < -1:
            raise ValueError("message budget must be >= -1")
        self._ready()
        self._msg_budget = n
        C.crust_conn_hold_messages(self._c, n == 0)

    @property
    def message_budget(self):
        """Application messages :meth:`poll_events` may still take (-1: no limit)."""
        return self._msg_budget

    # -- stream transports (TCP) --

    def receive_stream(self, data, uint64_t now):
        """Process bytes read from a stream transport (``crust_conn_recv_stream``):
        any chunk of the stream, each packet framed by a 2-byte big-endian
        length. Returns the bytes consumed: every whole frame, except that
        it stops before a frame holding a long-header (handshake) packet.
        The caller keeps the rest (a partial frame, or that handshake frame,
        which it handles itself) and passes it again with what follows. A
        rejected packet closes the connection (a stream cannot resend it):
        see the stats and the EV_CLOSED event; bad bytes never raise."""
        cdef Py_buffer view
        cdef size_t consumed = 0
        cdef size_t total = 0
        cdef int rc
        self._ready()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            while True:
                self._enter()
                try:
                    with nogil:
                        rc = C.crust_conn_recv_stream(
                            self._c, now, <const uint8_t *>view.buf + total,
                            <size_t>view.len - total, &consumed)
                finally:
                    self._leave()
                total += consumed
                if rc != C.CRUST_MSG_READY:
                    break
                # A message assembled in its own bytes object is complete:
                # take it now (its event is kept for poll_events), so the
                # next one in this chunk is assembled in place as well.
                if self._early_events is None:
                    self._early_events = []
                self._drain_events(self._early_events)
        finally:
            PyBuffer_Release(&view)
        return total

    def stream_to_send(self, uint64_t now, Py_ssize_t max_bytes=262144):
        """Framed packets ready to go out now, at most ``max_bytes`` of them
        (``crust_conn_poll_stream``), as one bytes object to write to the
        stream; empty when there is nothing to send. Give at least
        STREAM_FRAME_HDR + STREAM_MAX_PACKET for full-size packets."""
        cdef PyObject *raw
        cdef uint8_t *dst
        cdef size_t used = 0
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self._ready()
        raw = _bytes_new_raw(NULL, max_bytes)
        dst = <uint8_t *>_bytes_data_raw(raw)
        self._enter()
        try:
            with nogil:
                used = C.crust_conn_poll_stream(self._c, now, dst, <size_t>max_bytes)
        finally:
            self._leave()
        if used > <size_t>max_bytes:
            Py_XDECREF(raw)
            raise RuntimeError("crust_conn_poll_stream overran its buffer")
        # Shrink in place: the object is ours alone (refcount 1). On failure
        # the function frees it and raises.
        _bytes_resize_raw(&raw, <Py_ssize_t>used)
        out = <object>raw
        Py_DECREF(out)
        return out

    # -- receiving --

    def receive_datagram(self, data, uint64_t now):
        """Process one datagram. Returns 0, or the negative CRUST_E* code of
        why it was dropped; bad bytes never raise."""
        cdef Py_buffer view
        cdef int rc
        self._ready()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        self._enter()
        try:
            with nogil:
                rc = C.crust_conn_recv(self._c, now, <const uint8_t *>view.buf,
                                       <size_t>view.len)
        finally:
            self._leave()
            PyBuffer_Release(&view)
        return rc

    def poll_events(self):
        """Drain the events: a list of (type, prio, payload, msg_id, reason,
        code). payload is the message for EV_MESSAGE and EV_CONTROL, else
        None."""
        self._ready()
        events = self._early_events
        if events is None:
            events = []
        else:
            self._early_events = None
        self._drain_events(events)
        return events

    cdef _drain_events(self, list events):
        cdef C.crust_event ev
        cdef int64_t got
        cdef void *handle = NULL
        cdef uint64_t taken = 0
        cdef char *dst
        cdef bytes payload
        while C.crust_conn_poll_event(self._c, &ev):
            payload = None
            if (ev.type == C.CRUST_EV_MESSAGE or ev.type == C.CRUST_EV_CONTROL) and \
                    C.crust_conn_take_message(self._c, ev.prio, &handle, &taken):
                # Assembled in place (_msg_alloc): the bytes object is ready.
                payload = <bytes>handle
                Py_DECREF(payload)  # the reference _msg_alloc made is now ours
                if taken != ev.len:
                    raise RuntimeError(
                        f"crust_conn_take_message gave {taken} bytes, event said {ev.len}")
            elif ev.type == C.CRUST_EV_MESSAGE or ev.type == C.CRUST_EV_CONTROL:
                if ev.len > <uint64_t>PY_SSIZE_T_MAX:
                    raise OutOfMemory(f"message of {ev.len} bytes does not fit in memory")
                # The message is read straight into the bytes object that is
                # handed to the caller: one copy out of the core, no more.
                payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>ev.len)
                dst = PyBytes_AS_STRING(payload)
                if ev.len >= _NOGIL_COPY:
                    self._enter()
                    try:
                        with nogil:
                            got = C.crust_conn_read_message(
                                self._c, ev.prio, <uint8_t *>dst, <size_t>ev.len)
                    finally:
                        self._leave()
                else:
                    got = C.crust_conn_read_message(
                        self._c, ev.prio, <uint8_t *>dst, <size_t>ev.len)
                if got < 0:
                    _raise(<int>got, "read_message")
                if <uint64_t>got != ev.len:
                    raise RuntimeError(
                        f"crust_conn_read_message returned {got} bytes, event said {ev.len}")
            # A dropped message has no payload and no close code: its length
            # rides in the code slot, so the tuple keeps one shape; so does
            # the window charge of an application message (set_manual_credit).
            if ev.type == C.CRUST_EV_MESSAGE:
                code = C.crust_conn_message_charge(ev.len)
                if self._msg_budget > 0:
                    self._msg_budget -= 1
                    if self._msg_budget == 0:
                        C.crust_conn_hold_messages(self._c, 1)
            elif ev.type == C.CRUST_EV_MESSAGE_DROPPED:
                code = ev.len
            else:
                code = ev.code
            events.append((ev.type, ev.prio, payload, ev.msg_id, ev.reason, code))

    # -- time --

    def get_timer(self):
        """When :meth:`handle_timer` must next be called, or None."""
        self._ready()
        cdef uint64_t t = C.crust_conn_next_timeout(self._c)
        return None if t == UINT64_MAX else t

    def handle_timer(self, uint64_t now):
        """Run the timers due at ``now``; harmless when called early."""
        self._ready()
        self._enter()
        try:
            with nogil:
                C.crust_conn_handle_timeout(self._c, now)
        finally:
            self._leave()

    # -- lifecycle --

    def close(self, uint64_t now, uint64_t code=0, bint graceful=True):
        """Close; graceful delivers queued messages first. ``code`` reaches
        the peer's CLOSED event."""
        self._ready()
        cdef int rc = C.crust_conn_close(self._c, now, code, graceful)
        if rc < 0:
            _raise(rc, "close")

    def quiet_until_heard(self):
        """Send nothing until the peer's first packet arrives (the responder
        of an IK handshake over UDP: ``crust_conn_quiet_until_heard``)."""
        self._ready()
        C.crust_conn_quiet_until_heard(self._c)

    @property
    def keepalive_us(self):
        """Microseconds between keepalives (0: none); settable on a live
        connection (``crust_conn_set_keepalive``)."""
        self._ready()
        return C.crust_conn_keepalive(self._c)

    @keepalive_us.setter
    def keepalive_us(self, uint64_t value):
        self._ready()
        C.crust_conn_set_keepalive(self._c, value)

    def probe_path(self, uint64_t now):
        """Send a PATH_CHALLENGE; EV_PATH_VALIDATED follows when answered."""
        self._ready()
        cdef int rc = C.crust_conn_probe_path(self._c, now)
        if rc < 0:
            _raise(rc, "probe_path")

    def path_unreachable(self, uint64_t now):
        """The network said the peer's address is unreachable (an ICMP
        error): probe it; unanswered, the connection closes with
        CLOSE_UNREACHABLE. True when a probe started (see crust.h)."""
        self._ready()
        return C.crust_conn_path_unreachable(self._c, now) == 1

    def stats(self):
        """Every crust_stats field, by name."""
        cdef C.crust_stats st
        self._ready()
        C.crust_conn_get_stats(self._c, &st)
        return st

    def memory(self):
        """Bytes of heap the connection holds now."""
        self._ready()
        return C.crust_conn_memory(self._c)

    @property
    def is_closed(self):
        """True once the connection is closed and drained: drop it then."""
        self._ready()
        return C.crust_conn_is_closed(self._c) != 0

    @property
    def refused(self):
        """Datagrams that failed authentication or parsing so far
        (``rx_dropped_decrypt + rx_dropped_malformed``), without building
        the whole :meth:`stats` dict."""
        cdef C.crust_stats st
        self._ready()
        C.crust_conn_get_stats(self._c, &st)
        return st.rx_dropped_decrypt + st.rx_dropped_malformed


# ---- module-level functions -------------------------------------------------

def live_connections():
    """Engine connections (``crust_conn``) alive in this process now: a
    leak check for long-running nodes (``Service.stats()["live"]``)."""
    return _live_connections


def register_aead(int aead_id, uintptr_t seal_ptr, uintptr_t open_ptr):
    """Install libsodium's combined-mode encrypt/decrypt (function pointers
    as ints) for an AEAD. crust._sodium does this at import."""
    if aead_id < 0 or aead_id >= C.CRUST_AEAD_COUNT:
        exc = InvalidArgument(f"unknown AEAD id {aead_id}")
        exc.code = C.CRUST_EINVAL
        raise exc
    cdef int rc = C.crust_aead_register(<C.crust_aead_id>aead_id,
                                        <C.crust_aead_seal_fn>seal_ptr,
                                        <C.crust_aead_open_fn>open_ptr)
    if rc < 0:
        _raise(rc, "register_aead")


def aead_available(int aead_id):
    """True when connections can use this AEAD."""
    if aead_id < 0 or aead_id >= C.CRUST_AEAD_COUNT:
        return False
    return C.crust_aead_available(<C.crust_aead_id>aead_id) != 0


def packet_cid(data):
    """The destination connection id of a short-header packet, or None."""
    cdef Py_buffer view
    cdef uint8_t cid[C.CRUST_CID_LEN]
    cdef int rc
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        rc = C.crust_packet_cid(<const uint8_t *>view.buf, <size_t>view.len, cid)
    finally:
        PyBuffer_Release(&view)
    if rc != 0:
        return None
    return PyBytes_FromStringAndSize(<char *>cid, C.CRUST_CID_LEN)


def bench_pair(Connection a not None, Connection b not None, uint64_t nbytes,
               size_t msg_len):
    """Move ``nbytes`` of ``msg_len``-byte messages from a to b over a
    perfect in-memory link. Returns (packets a->b, elapsed_ns)."""
    cdef uint64_t elapsed = 0
    cdef int64_t rc
    if a is b:
        raise ValueError("bench_pair needs two distinct connections")
    a._ready()
    b._ready()
    a._enter()
    b._enter()
    try:
        with nogil:
            rc = C.crust_bench_pair(a._c, b._c, nbytes, msg_len, &elapsed)
    finally:
        a._leave()
        b._leave()
    if rc < 0:
        _raise(<int>rc, "bench_pair")
    return rc, elapsed


def bench_aead(int aead_id, size_t pkt_len, uint64_t count):
    """Seal and open ``count`` packets of ``pkt_len`` bytes with the AEAD
    alone. Returns (packets, elapsed_ns)."""
    cdef uint64_t elapsed = 0
    cdef int64_t rc
    if aead_id < 0 or aead_id >= C.CRUST_AEAD_COUNT:
        exc = InvalidArgument(f"unknown AEAD id {aead_id}")
        exc.code = C.CRUST_EINVAL
        raise exc
    with nogil:
        rc = C.crust_bench_aead(<C.crust_aead_id>aead_id, pkt_len, count, &elapsed)
    if rc < 0:
        _raise(<int>rc, "bench_aead")
    return rc, elapsed


def bench_header_mask(size_t pkt_len, uint64_t count):
    """Mask and unmask ``count`` packets of ``pkt_len`` bytes (the masked
    short header alone, csrc/header_mask.h). Returns (packets, elapsed_ns)."""
    cdef uint64_t elapsed = 0
    cdef int64_t rc
    with nogil:
        rc = C.crust_bench_header_mask(pkt_len, count, &elapsed)
    if rc < 0:
        _raise(<int>rc, "bench_header_mask")
    return rc, elapsed


include "_endpoint.pxi"
include "_noise.pxi"
include "_elligator.pxi"
include "_header_mask.pxi"
