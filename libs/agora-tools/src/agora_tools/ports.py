"""Ports for ``agora up`` that never collide with what the machine already uses.

The standard ports (4222, 5432, 6379, 8000) may well be taken by other software, so no port is
assumed free: each candidate is bound once as a test. Service ports are taken from below the
kernel's ephemeral range, because outgoing connections draw their source ports from that range and
one of them could take a service's port while the service restarts.
"""

from __future__ import annotations

import socket
import sys
import zlib
from collections.abc import Callable, Collection
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Below this sit the ports people choose by hand (8000, 8080, 5432, 9000...).
LOWEST_SERVICE_PORT = 10000
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")

PortCheck = Callable[[int], bool]


class NoFreePort(RuntimeError):
    """No free port was found."""


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server could listen on ``host:port`` now (tested by binding it)."""
    # Without SO_REUSEADDR the test also fails on a port with connections lingering in
    # TIME_WAIT, which is the cautious answer.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' source ports."""
    try:
        low, high = (int(part) for part in _EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        # No /proc (macOS, BSD): the IANA range those systems use.
        return (49152, 65535) if sys.platform != "linux" else (32768, 60999)
    return low, high


def service_port_window() -> tuple[int, int]:
    """The ports services are given: from 10000 to just below the ephemeral range."""
    low, high = ephemeral_range()
    if low - 1 > LOWEST_SERVICE_PORT + 100:
        return LOWEST_SERVICE_PORT, low - 1
    # The ephemeral range was moved down to cover most ports; take what lies above it.
    return max(high + 1, LOWEST_SERVICE_PORT), 65535


def scan_start(seed: str, window: tuple[int, int]) -> int:
    """Where to start looking for ports: fixed for one directory, so a system keeps its ports
    from one start to the next, and different for two directories, so two systems started at
    the same moment do not race for the same ports."""
    low, high = window
    return low + zlib.crc32(seed.encode()) % (high - low + 1)


def pick_ports(
    count: int,
    *,
    start: int,
    window: tuple[int, int],
    avoid: Collection[int] = (),
    is_free: PortCheck = port_is_free,
) -> list[int]:
    """``count`` distinct free ports in ``window``, scanning upwards from ``start`` and wrapping
    around, skipping ``avoid`` and every port that cannot be bound."""
    low, high = window
    if not low <= start <= high:
        raise ValueError(f"start {start} is outside the window {low}-{high}")
    chosen: list[int] = []
    size = high - low + 1
    for offset in range(size):
        if len(chosen) == count:
            break
        port = low + (start - low + offset) % size
        if port not in avoid and is_free(port):
            chosen.append(port)
    if len(chosen) < count:
        raise NoFreePort(f"only {len(chosen)} of {count} ports are free in {low}-{high}")
    return chosen


def gateway_port(
    requested: int | None,
    *,
    default: int,
    is_free: PortCheck = port_is_free,
    nearby: int = 100,
) -> int:
    """The gateway's port: ``requested`` if given (an error when taken: the user asked for it),
    else ``default`` when free, else the first free port just above it."""
    if requested is not None:
        if not is_free(requested):
            raise NoFreePort(f"port {requested} is taken: choose another with --port")
        return requested
    for port in range(default, min(default + nearby, 65535) + 1):
        if is_free(port):
            return port
    raise NoFreePort(f"ports {default}-{default + nearby} are all taken: choose one with --port")
