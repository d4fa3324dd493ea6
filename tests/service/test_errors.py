"""The exceptions: all in ``crust.errors``, all ``CrustError``s, and
``Service.connect`` failing with ``ConnectError``/``ConnectTimeout`` that
carry each attempt's failure. Also the fixed vocabularies of
``crust.paths``."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import socket

import crust
import crust.errors
from crust import CloseReason, ConnectError, ConnectTimeout, Identity, Service, ServiceConfig
from crust.events import LostPeer
from crust.paths import PATHS

QUIET = {"gossip": False, "beacon": False, "cache_size": 0, "backup_port": False}


def _all_modules() -> list[str]:
    # crust.__main__ runs the command line when imported.
    return [
        m.name
        for m in pkgutil.walk_packages(crust.__path__, "crust.")
        if m.name != "crust.__main__"
    ]


def test_every_crust_exception_lives_in_crust_errors() -> None:
    found = {}
    for name in _all_modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, crust.errors.CrustError) and obj.__module__.startswith("crust"):
                found[obj.__name__] = obj
    assert len(found) > 20
    for name, cls in found.items():
        assert cls.__module__ == "crust.errors", f"{name} is defined in {cls.__module__}"
        assert name in crust.errors.__all__, name
        assert cls.__doc__, f"{name} is undocumented"


def test_errors_derive_from_crust_error_and_the_standard_class_that_fits() -> None:
    for name in crust.errors.__all__:
        obj = getattr(crust.errors, name)
        if name != "Attempt":
            assert issubclass(obj, crust.errors.CrustError), name
    assert issubclass(ConnectError, ConnectionError)
    assert issubclass(ConnectTimeout, ConnectError) and issubclass(ConnectTimeout, TimeoutError)
    assert issubclass(crust.errors.InvalidPeerId, ValueError)
    assert issubclass(crust.errors.ListenerError, OSError)


def test_connect_errors_carry_each_attempt() -> None:
    async def main() -> None:
        cfg = ServiceConfig(identity=Identity.generate(), **QUIET)
        async with Service(cfg) as a:
            # Nothing listens: TCP is refused, UDP gets no answer.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
                silent.bind(("127.0.0.1", 0))
                port = silent.getsockname()[1]
                try:
                    await a.connect(("127.0.0.1", port), timeout=1.0)
                except ConnectError as e:
                    refused = e
                else:
                    raise AssertionError("connected to nothing")
        assert not isinstance(refused, ConnectTimeout)
        assert {at.how for at in refused.attempts} == {"tcp", "udp"}
        assert any(isinstance(at.error, OSError) for at in refused.attempts)
        assert str(refused).startswith(f"connect to 127.0.0.1:{port} failed: ")

        udp_only = ServiceConfig(identity=Identity.generate(), tcp=False, **QUIET)
        async with Service(udp_only) as b:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
                silent.bind(("127.0.0.1", 0))
                try:
                    await b.connect(("127.0.0.1", silent.getsockname()[1]), timeout=1.0)
                except ConnectTimeout as e:
                    timed_out = e
                else:
                    raise AssertionError("connected to nothing")
        assert [at.how for at in timed_out.attempts] == ["udp"]
        assert isinstance(timed_out.attempts[0].error, TimeoutError)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_close_reasons_are_named() -> None:
    from crust import node

    words = [*node._CLOSE_REASONS.values(), *node._CODE_REASONS.values()]
    for text in words:
        assert CloseReason.of(text) is not CloseReason.OTHER, text
        assert CloseReason.of(text).value == text
    # Transports add details after the words.
    assert CloseReason.of("TCP connection closed (EOF)") is CloseReason.TCP_CLOSED
    assert CloseReason.of("relay closed: gone") is CloseReason.RELAY_CLOSED
    assert CloseReason.of("closed (17)") is CloseReason.OTHER
    assert f"{CloseReason.BLACKLISTED}" == str(CloseReason.BLACKLISTED) == "blacklisted"
    assert LostPeer(None, "blacklisted").kind is CloseReason.BLACKLISTED  # type: ignore[arg-type]
    assert PATHS == ("direct-tcp", "direct-udp", "punched-udp", "punched-tcp", "relayed")
