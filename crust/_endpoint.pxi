# Endpoint: one UDP socket, many connections (csrc/crust_endpoint.h).
# Included by _core.pyx, so it shares that module's names (C, Connection,
# _raise, ...).
#
# Addresses are the socket module's tuples: (host, port) on an AF_INET
# socket, (host, port, flowinfo, scope_id) on an AF_INET6 one, whose hosts
# may also be IPv4 (they are mapped to ::ffff:a.b.c.d). Hosts must be
# numeric: an endpoint never resolves names (that could block).

from libc.errno cimport ENOMEM, errno
from libc.stdlib cimport free, malloc
from libc.string cimport memset

import socket as _socket


cdef C.socklen_t _sockaddr_from_py(object addr, int family,
                                   C.sockaddr_storage *ss) except 0:
    if not isinstance(addr, tuple) or not 2 <= len(addr) <= 4:
        raise TypeError(f"address must be a (host, port[, flowinfo, scope_id]) tuple, "
                        f"not {addr!r}")
    host = addr[0]
    if not isinstance(host, str):
        raise TypeError(f"address host must be a str, not {type(host).__name__}")
    port = _index(addr[1])
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port}")
    memset(ss, 0, sizeof(C.sockaddr_storage))
    cdef C.sockaddr_in *sin = <C.sockaddr_in *>ss
    cdef C.sockaddr_in6 *sin6 = <C.sockaddr_in6 *>ss
    cdef uint8_t *a6
    cdef bytes h
    if family == C.AF_INET:
        if len(addr) != 2:
            raise ValueError(f"an AF_INET address is (host, port), not {addr!r}")
        h = host.encode("ascii", "replace")
        if C.inet_pton(C.AF_INET, h, &sin.sin_addr) != 1:
            raise ValueError(f"{host!r} is not a numeric IPv4 address")
        sin.sin_family = C.AF_INET
        sin.sin_port = C.htons(port)
        return sizeof(C.sockaddr_in)
    flowinfo = _index(addr[2]) if len(addr) > 2 else 0
    scope_id = _index(addr[3]) if len(addr) > 3 else 0
    if not 0 <= flowinfo < (1 << 20) or not 0 <= scope_id < (1 << 32):
        raise ValueError(f"flowinfo or scope_id out of range in {addr!r}")
    if "%" in host:
        host, _, zone = host.partition("%")
        scope_id = int(zone) if zone.isdigit() else _socket.if_nametoindex(zone)
    h = host.encode("ascii", "replace")
    a6 = <uint8_t *>&sin6.sin6_addr
    if C.inet_pton(C.AF_INET6, h, a6) != 1:
        # An IPv6 socket reaches IPv4 peers at their mapped address.
        if C.inet_pton(C.AF_INET, h, a6 + 12) != 1:
            raise ValueError(f"{host!r} is not a numeric IPv6 or IPv4 address")
        a6[10] = 0xff
        a6[11] = 0xff
    sin6.sin6_family = C.AF_INET6
    sin6.sin6_port = C.htons(port)
    sin6.sin6_flowinfo = C.htonl(flowinfo)
    sin6.sin6_scope_id = scope_id
    return sizeof(C.sockaddr_in6)


cdef object _sockaddr_to_py(const C.sockaddr_storage *ss, C.socklen_t length):
    cdef char text[C.INET6_ADDRSTRLEN + 1]
    cdef const C.sockaddr_in *sin = <const C.sockaddr_in *>ss
    cdef const C.sockaddr_in6 *sin6 = <const C.sockaddr_in6 *>ss
    if ss.ss_family == C.AF_INET and length >= sizeof(C.sockaddr_in):
        C.inet_ntop(C.AF_INET, &sin.sin_addr, text, sizeof(text))
        return (text.decode("ascii"), C.ntohs(sin.sin_port))
    if ss.ss_family == C.AF_INET6 and length >= sizeof(C.sockaddr_in6):
        C.inet_ntop(C.AF_INET6, &sin6.sin6_addr, text, sizeof(text))
        host = text.decode("ascii")
        if sin6.sin6_scope_id:
            # As the socket module writes link-local addresses.
            try:
                host += "%" + _socket.if_indextoname(sin6.sin6_scope_id)
            except OSError:
                host += f"%{sin6.sin6_scope_id}"
        return (host, C.ntohs(sin6.sin6_port), C.ntohl(sin6.sin6_flowinfo),
                sin6.sin6_scope_id)
    return None


@cython.auto_pickle(False)
@cython.final
@cython.no_gc_clear
cdef class Endpoint:
    """One UDP socket carrying many connections (``crust_endpoint``).

    ``sock`` must be a non-blocking AF_INET or AF_INET6 datagram socket,
    normally bound; the Endpoint keeps a reference to it and never closes it.
    Call :meth:`drive` when the socket is readable or when the time it last
    returned has come; then take :meth:`ready` connections' events,
    :meth:`unrouted` datagrams (handshakes) and :meth:`path_changes`. After
    using a connection directly (send, close...), call :meth:`flush`. When
    :attr:`want_write` is true, wait for the socket to be writable and call
    :meth:`flush`.

    Short-header datagrams for a connection id not in the endpoint can never
    start a handshake: they are dropped and counted in C
    (``rx_dropped_unknown_cid``), unless ``route_unknown_cids`` is true,
    when they join the unrouted datagrams too. Those that come within
    100 ms of a handshake datagram are held a moment instead (up to 32): a
    dialler's first packets can arrive with its final handshake message,
    before the connection is added; the next :meth:`drive` or
    :meth:`flush` after :meth:`add` delivers them (``rx_held``,
    ``rx_held_delivered``, ``rx_held_expired``). With ``long_header_prefix``
    (up to 8 bytes; crust's handshake: version and network tag), long-header
    datagrams whose bytes from the second on do not start with it are
    dropped and counted in C as well (``rx_dropped_foreign``). With
    ``route_stun``, STUN messages (RFC 8489 header) become unrouted too, so a
    STUN client can run on the listening socket.

    Added connections stay referenced until :meth:`remove` or :meth:`close`.
    While in an Endpoint a connection refuses calls during a drive or flush
    running in another thread (RuntimeError), as the Endpoint refuses to
    drive while one of its connections is inside a call.
    """

    cdef C.crust_endpoint *_ep
    cdef object _sock
    cdef int _fd
    cdef int _family
    # crust_conn address -> Connection: maps what the C side reports back
    # to the objects, and keeps them alive while the C side points at them.
    cdef dict _conns
    # True while drive/flush run without the GIL.
    cdef bint _busy
    # Calls of this endpoint's connections running without the GIL.
    cdef Py_ssize_t _inside
    cdef uint8_t *_buf
    cdef size_t _buf_len

    def __cinit__(self):
        self._ep = NULL
        self._buf = NULL
        self._conns = {}

    def __init__(self, sock, *, int batch=32, bint gso=True, bint gro=True,
                 bint route_unknown_cids=False, bytes long_header_prefix=b"",
                 bint route_stun=False):
        if self._ep != NULL:
            raise RuntimeError("Endpoint.__init__ called twice")
        family = sock.family
        if family not in (_socket.AF_INET, _socket.AF_INET6) or sock.type != _socket.SOCK_DGRAM:
            raise ValueError(f"Endpoint needs an AF_INET or AF_INET6 UDP socket, got {sock!r}")
        if sock.gettimeout() != 0.0:
            raise ValueError("Endpoint needs a non-blocking socket: call sock.setblocking(False)")
        if not 1 <= batch <= 1024:
            raise ValueError(f"batch must be 1..1024, got {batch}")
        if long_header_prefix is None or len(long_header_prefix) > 8:
            raise ValueError("long_header_prefix must be bytes, at most 8 of them")
        cdef C.crust_endpoint_config cfg
        C.crust_endpoint_config_default(&cfg)
        cfg.batch = batch
        cfg.gso = gso
        cfg.gro = gro
        cfg.route_unknown_cids = route_unknown_cids
        cfg.route_stun = route_stun
        cfg.lh_prefix_len = <uint32_t>len(long_header_prefix)
        for i in range(cfg.lh_prefix_len):
            cfg.lh_prefix[i] = long_header_prefix[i]
        self._fd = sock.fileno()
        self._family = family
        self._buf_len = cfg.unrouted_max_len
        self._buf = <uint8_t *>malloc(self._buf_len)
        if self._buf == NULL:
            raise MemoryError()
        self._ep = C.crust_endpoint_new(self._fd, &cfg)
        if self._ep == NULL:
            if errno == ENOMEM:
                raise OutOfMemory("crust_endpoint_new failed: out of memory")
            raise ValueError(f"crust_endpoint_new refused the socket {sock!r}")
        self._sock = sock

    def __dealloc__(self):
        # Every connection still in _conns points back here, so none can be
        # left with a reference to us once we are being freed: only the C
        # side remains to free (it never touches the connections).
        if self._ep != NULL:
            C.crust_endpoint_free(self._ep)
            self._ep = NULL
        free(self._buf)
        self._buf = NULL

    cdef int _check(self, bint conns) except -1:
        if self._ep == NULL:
            raise RuntimeError("Endpoint is closed")
        if self._busy:
            raise RuntimeError("Endpoint is in use by another thread")
        if conns and self._inside:
            raise RuntimeError("a Connection of this Endpoint is in use by another thread")
        return 0

    cdef int _check_socket(self) except -1:
        # A closed socket's fd number may already belong to something else.
        if self._sock.fileno() != self._fd:
            raise OSError(f"the Endpoint's socket was closed ({self._sock!r})")
        return 0

    cdef int _touch(self, Connection conn) except -1:
        if self._busy:
            raise RuntimeError(
                "Connection is in use by its Endpoint (a drive or flush in another thread)")
        C.crust_endpoint_touch(self._ep, conn._c)
        return 0

    def __repr__(self):
        state = "closed" if self._ep == NULL else f"{len(self._conns)} connections"
        return f"<crust._core.Endpoint fd={self._fd} {state}>"

    def __len__(self):
        return len(self._conns)

    # -- connections --

    def add(self, Connection conn not None, addr):
        """Route ``conn``'s datagrams through this endpoint; its peer is at
        ``addr``. The endpoint references ``conn`` until :meth:`remove`."""
        cdef C.sockaddr_storage ss
        self._check(True)
        conn._ready()
        if conn._endpoint is not None:
            raise ValueError(f"{conn!r} is already in an Endpoint")
        cdef C.socklen_t length = _sockaddr_from_py(addr, self._family, &ss)
        cdef int rc = C.crust_endpoint_add(self._ep, conn._c, <C.sockaddr *>&ss, length)
        if rc == C.CRUST_EINVAL:
            exc = InvalidArgument(
                f"another connection with local_cid {conn.local_cid.hex()} is in this Endpoint")
            exc.code = rc
            raise exc
        if rc < 0:
            _raise(rc, "Endpoint.add")
        conn._endpoint = self
        self._conns[<uintptr_t>conn._c] = conn

    def remove(self, Connection conn not None):
        """Stop routing for ``conn`` (its datagrams become unrouted) and drop
        the endpoint's reference; it can be used on its own again."""
        self._check(True)
        if conn._endpoint is not self:
            raise ValueError(f"{conn!r} is not in this Endpoint")
        if conn._busy:
            raise RuntimeError("Connection is in use by another thread")
        C.crust_endpoint_remove(self._ep, conn._c)
        conn._endpoint = None
        del self._conns[<uintptr_t>conn._c]

    def peer(self, Connection conn not None):
        """``conn``'s current peer address (it follows NAT rebinding)."""
        cdef C.sockaddr_storage ss
        cdef C.socklen_t length = 0
        self._check(False)
        if conn._endpoint is not self:
            raise ValueError(f"{conn!r} is not in this Endpoint")
        C.crust_endpoint_peer(self._ep, conn._c, &ss, &length)
        return _sockaddr_to_py(&ss, length)

    def close(self):
        """Release every connection and the C endpoint (not the socket).
        Idempotent."""
        if self._ep == NULL:
            return
        self._check(True)
        for conn in self._conns.values():
            (<Connection>conn)._endpoint = None
        self._conns.clear()
        C.crust_endpoint_free(self._ep)
        self._ep = NULL

    # -- I/O --

    def drive(self, uint64_t now):
        """Receive everything waiting, run due timers, send what the
        connections have. Returns when to drive again (int microseconds) if
        the socket stays quiet, or None."""
        cdef uint64_t t
        self._check(True)
        self._check_socket()
        self._busy = True
        try:
            with nogil:
                t = C.crust_endpoint_drive(self._ep, now)
        finally:
            self._busy = False
        return None if t == UINT64_MAX else t

    def flush(self, uint64_t now):
        """Send what connections have queued since the last drive (and what
        waited for a full socket buffer). Returns the next deadline as
        :meth:`drive` does."""
        cdef uint64_t t
        self._check(True)
        self._check_socket()
        self._busy = True
        try:
            with nogil:
                t = C.crust_endpoint_flush(self._ep, now)
        finally:
            self._busy = False
        return None if t == UINT64_MAX else t

    def send_raw(self, data, addr):
        """Send one datagram as it is (a handshake packet) to ``addr``."""
        cdef C.sockaddr_storage ss
        cdef Py_buffer view
        cdef int rc
        self._check(False)
        self._check_socket()
        cdef C.socklen_t length = _sockaddr_from_py(addr, self._family, &ss)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            rc = C.crust_endpoint_send_raw(self._ep, <const uint8_t *>view.buf,
                                           <size_t>view.len, <C.sockaddr *>&ss, length)
        finally:
            PyBuffer_Release(&view)
        if rc < 0:
            _raise(rc, "Endpoint.send_raw")

    # -- what a drive leaves --

    def ready(self):
        """Connections that have events now (each once): poll them."""
        cdef C.crust_conn *c
        self._check(False)
        out = []
        while True:
            c = C.crust_endpoint_next_ready(self._ep)
            if c == NULL:
                break
            out.append(self._conns[<uintptr_t>c])
        return out

    def unrouted(self):
        """Datagrams for no connection here (long-header handshake packets;
        unknown connection ids with ``route_unknown_cids``): a list of
        (data, addr)."""
        cdef C.sockaddr_storage ss
        cdef C.socklen_t length
        cdef int64_t n
        self._check(False)
        out = []
        while True:
            n = C.crust_endpoint_next_unrouted(self._ep, self._buf, self._buf_len, &ss, &length)
            if n <= 0:
                if n < 0:
                    _raise(<int>n, "Endpoint.unrouted")
                break
            out.append((PyBytes_FromStringAndSize(<char *>self._buf, <Py_ssize_t>n),
                        _sockaddr_to_py(&ss, length)))
        return out

    def path_changes(self):
        """Connections whose peer moved (NAT rebinding): a list of
        (Connection, new addr). Each was switched to the new address and a
        path validation started (EV_PATH_VALIDATED follows)."""
        cdef C.sockaddr_storage ss
        cdef C.socklen_t length
        cdef C.crust_conn *c
        self._check(False)
        out = []
        while C.crust_endpoint_next_path_change(self._ep, &c, &ss, &length):
            out.append((self._conns[<uintptr_t>c], _sockaddr_to_py(&ss, length)))
        return out

    def junk_sources(self):
        """Where failed datagrams came from since the last call: a list of
        (addr, count). Junk, and packets with a live connection id from
        another address than its peer's; never counted against a peer."""
        cdef C.sockaddr_storage ss
        cdef C.socklen_t length
        cdef uint64_t count
        self._check(False)
        out = []
        while C.crust_endpoint_next_junk_source(self._ep, &ss, &length, &count):
            out.append((_sockaddr_to_py(&ss, length), count))
        return out

    # -- introspection --

    def stats(self):
        """Every crust_endpoint_stats counter, by name."""
        cdef C.crust_endpoint_stats st
        self._check(False)
        C.crust_endpoint_get_stats(self._ep, &st)
        return st

    @property
    def counters(self):
        """``(rx_datagrams, activity)`` from :meth:`stats`, cheaply: read
        after every drive to tell an idle node from a busy one."""
        cdef uint64_t rx, act
        self._check(False)
        C.crust_endpoint_counters(self._ep, &rx, &act)
        return rx, act

    def fileno(self):
        return self._fd

    @property
    def want_write(self):
        """True while datagrams wait for the socket buffer: wait until the
        socket is writable, then :meth:`flush`."""
        self._check(False)
        return C.crust_endpoint_want_write(self._ep) != 0

    @property
    def gso_enabled(self):
        """True while sends use UDP GSO (asked for, offered by the kernel,
        never refused since)."""
        self._check(False)
        return C.crust_endpoint_gso_enabled(self._ep) != 0

    @property
    def gro_enabled(self):
        """True when receives use UDP GRO."""
        self._check(False)
        return C.crust_endpoint_gro_enabled(self._ep) != 0
