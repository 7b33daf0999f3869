"""Small helpers for the local services that the tests and deploy/local-cluster.sh start (SeaweedFS, a Ray
head): free ports, and running one until it is signalled. Standard library only: these run as small
processes, without the model code that tests.helpers imports."""

from __future__ import annotations

import random
import signal
import socket
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int, taken: set[int] = frozenset()) -> list[int]:
    """`count` different free ports, none of them in `taken` (two calls of free_port may hand out one twice)."""
    ports: set[int] = set()
    while len(ports) < count:
        port = free_port()
        if port not in taken:
            ports.add(port)
    return sorted(ports)


def free_port_range(size: int, low: int = 20000, high: int = 32000) -> int:
    """The first port of `size` + 1 consecutive free ports, below the kernel's ephemeral range (from 32768),
    where free_port's picks land: Ray refuses to start when its worker ports overlap another component's."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(low, high - size)
        if all(_bindable(port) for port in range(base, base + size + 1)):
            return base
    raise RuntimeError(f"no {size + 1} consecutive free ports between {low} and {high}")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run_until_signalled(alive: Callable[[], bool], stop: Callable[[], None]) -> int:
    """Wait while `alive()` until SIGTERM or SIGINT, then `stop()` (deploy/local-cluster.sh's services)."""
    signalled: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: signalled.append(1))
    signal.signal(signal.SIGINT, lambda *_: signalled.append(1))
    try:
        while not signalled and alive():
            time.sleep(0.5)
    finally:
        stop()
    return 0
