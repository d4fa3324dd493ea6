"""Type stubs for crust._core (the Cython binding of csrc/crust.h)."""

import socket
from typing import Final, TypeAlias

from typing_extensions import Buffer

VERSION_MAJOR: Final[int]
VERSION_MINOR: Final[int]

CID_LEN: Final[int]
NUM_PRIO: Final[int]
KEY_LEN: Final[int]
IV_LEN: Final[int]
TAG_LEN: Final[int]
MIN_MTU: Final[int]
FLOOR_MTU: Final[int]
MAX_MTU: Final[int]
MAX_PACKET: Final[int]
SHORT_HEADER_MIN: Final[int]
STREAM_FRAME_HDR: Final[int]
STREAM_MAX_PACKET: Final[int]

OK: Final[int]
EINVAL: Final[int]
EWOULDBLOCK: Final[int]
EMSGSIZE: Final[int]
ECLOSED: Final[int]
ENOMEM: Final[int]
ENOKEY: Final[int]
EDECRYPT: Final[int]
EMALFORMED: Final[int]
EDUPLICATE: Final[int]
ETOOOLD: Final[int]
ENOTOURS: Final[int]
EPROTO: Final[int]

AEAD_NULL: Final[int]
AEAD_CHACHA20_POLY1305: Final[int]
AEAD_AES256_GCM: Final[int]
AEAD_AEGIS128L: Final[int]
AEAD_COUNT: Final[int]

CC_BBR: Final[int]
CC_CUBIC: Final[int]
CC_COUNT: Final[int]

EV_NONE: Final[int]
EV_MESSAGE: Final[int]
EV_MESSAGE_DROPPED: Final[int]
EV_SEND_READY: Final[int]
EV_PATH_VALIDATED: Final[int]
EV_MTU: Final[int]
EV_ALL_ACKED: Final[int]
EV_CLOSED: Final[int]
EV_KEY_UPDATE: Final[int]
EV_KEYS_NEEDED: Final[int]
EV_CONTROL: Final[int]

CLOSE_LOCAL: Final[int]
CLOSE_REMOTE: Final[int]
CLOSE_IDLE: Final[int]
CLOSE_PROTOCOL: Final[int]
CLOSE_UNREACHABLE: Final[int]
CLOSE_LOST: Final[int]

#: (type, prio, payload, msg_id, reason, code); payload only for EV_MESSAGE;
#: for EV_MESSAGE_DROPPED, code is the dropped message's length.
RawEvent: TypeAlias = tuple[int, int, bytes | None, int, int, int]

def strerror(code: int) -> str: ...

class Config:
    def __init__(
        self,
        *,
        max_message_size: int = ...,
        send_buffer: int = ...,
        recv_window: int = ...,
        initial_mtu: int = ...,
        max_mtu: int = ...,
        ack_frequency: int = ...,
        max_ack_delay_us: int = ...,
        initial_rtt_us: int = ...,
        idle_timeout_us: int = ...,
        keepalive_us: int = ...,
        lost_timeout_us: int = ...,
        drop_deadline_us: int = ...,
        drop_min_prio: int = ...,
        cc: int | str = ...,
        pacing: int = ...,
        initial_cwnd_pkts: int = ...,
        rekey_interval_us: int = ...,
        rekey_packets: int = ...,
        stream_transport: int = ...,
    ) -> None: ...
    max_message_size: int
    send_buffer: int
    recv_window: int
    initial_mtu: int
    max_mtu: int
    ack_frequency: int
    max_ack_delay_us: int
    initial_rtt_us: int
    idle_timeout_us: int
    keepalive_us: int
    lost_timeout_us: int
    drop_deadline_us: int
    drop_min_prio: int
    @property
    def cc(self) -> int: ...
    @cc.setter
    def cc(self, value: int | str) -> None: ...
    pacing: int
    initial_cwnd_pkts: int
    rekey_interval_us: int
    rekey_packets: int
    stream_transport: int
    def as_dict(self) -> dict[str, int]: ...
    def replace(self, **changes: int | str) -> Config: ...
    def __eq__(self, other: object) -> bool: ...
    __hash__: None  # type: ignore[assignment]

class Connection:
    @property
    def local_cid(self) -> bytes: ...
    @property
    def remote_cid(self) -> bytes: ...
    def __init__(
        self, local_cid: Buffer, remote_cid: Buffer, now: int, config: Config | None = None
    ) -> None: ...
    def set_keys(
        self,
        phase: int,
        aead: int,
        tx_key: Buffer,
        tx_iv: Buffer,
        rx_key: Buffer,
        rx_iv: Buffer,
    ) -> None: ...
    def update_keys(self, now: int) -> None: ...
    def send(
        self, data: Buffer, priority: int = 0, *, now: int, control: bool = False
    ) -> int: ...
    def send_capacity(self) -> int: ...
    def set_manual_credit(self, on: bool) -> None: ...
    def release(self, nbytes: int) -> bool: ...
    def set_message_budget(self, n: int) -> None: ...
    @property
    def message_budget(self) -> int: ...
    def datagrams_to_send(self, now: int, max_datagrams: int = 64) -> list[bytes]: ...
    def transmit_into(
        self, now: int, buf: Buffer, slot: int, max_datagrams: int = 64
    ) -> list[int]: ...
    def receive_stream(self, data: Buffer, now: int) -> int: ...
    def stream_to_send(self, now: int, max_bytes: int = 262144) -> bytes: ...
    def receive_datagram(self, data: Buffer, now: int) -> int: ...
    def poll_events(self) -> list[RawEvent]: ...
    def get_timer(self) -> int | None: ...
    def handle_timer(self, now: int) -> None: ...
    def close(self, now: int, code: int = 0, graceful: bool = True) -> None: ...
    def quiet_until_heard(self) -> None: ...
    @property
    def keepalive_us(self) -> int: ...
    @keepalive_us.setter
    def keepalive_us(self, value: int) -> None: ...
    def probe_path(self, now: int) -> None: ...
    def path_unreachable(self, now: int) -> bool: ...
    def stats(self) -> dict[str, int]: ...
    def memory(self) -> int: ...
    @property
    def is_closed(self) -> bool: ...
    @property
    def refused(self) -> int: ...

def live_connections() -> int: ...
def register_aead(aead_id: int, seal_ptr: int, open_ptr: int) -> None: ...
def aead_available(aead_id: int) -> bool: ...
def packet_cid(data: Buffer) -> bytes | None: ...
def bench_pair(a: Connection, b: Connection, nbytes: int, msg_len: int) -> tuple[int, int]: ...
def bench_aead(aead_id: int, pkt_len: int, count: int) -> tuple[int, int]: ...

#: A socket-module address: (host, port), or (host, port, flowinfo, scope_id)
#: on an AF_INET6 socket. Hosts are numeric.
SockAddr: TypeAlias = tuple[str, int] | tuple[str, int, int, int]

class Endpoint:
    def __init__(
        self,
        sock: socket.socket,
        *,
        batch: int = 32,
        gso: bool = True,
        gro: bool = True,
        route_unknown_cids: bool = False,
        long_header_prefix: bytes = b"",
        route_stun: bool = False,
    ) -> None: ...
    def __len__(self) -> int: ...
    def add(self, conn: Connection, addr: SockAddr) -> None: ...
    def remove(self, conn: Connection) -> None: ...
    def peer(self, conn: Connection) -> SockAddr: ...
    def close(self) -> None: ...
    def drive(self, now: int) -> int | None: ...
    def flush(self, now: int) -> int | None: ...
    def send_raw(self, data: Buffer, addr: SockAddr) -> None: ...
    def ready(self) -> list[Connection]: ...
    def unrouted(self) -> list[tuple[bytes, SockAddr]]: ...
    def path_changes(self) -> list[tuple[Connection, SockAddr]]: ...
    def junk_sources(self) -> list[tuple[SockAddr, int]]: ...
    def stats(self) -> dict[str, int]: ...
    @property
    def counters(self) -> tuple[int, int]: ...
    def fileno(self) -> int: ...
    @property
    def want_write(self) -> bool: ...
    @property
    def gso_enabled(self) -> bool: ...
    @property
    def gro_enabled(self) -> bool: ...
