"""Ray clusters: checking an address before ``ray.init`` waits on it; a Ray of this process's own at nice 0."""

from __future__ import annotations

import os
import socket


def own_ray_at_full_priority(address: str | None) -> None:
    """Before ``ray.init`` starts a Ray of its own here (``address`` unset or ``"local"``): its workers run at nice 0.

    Ray starts workers at nice 15, so beside any other job on the machine they all but stop (two sweep trials got
    6% of a core each beside one training process; a collection timed out). A cluster's own ``ray start`` decides
    for its nodes (``RAY_worker_niceness`` in its environment).
    """
    if address in (None, "local"):
        os.environ.setdefault("RAY_worker_niceness", "0")


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fails in seconds, naming the address, when no Ray cluster answers there (``ray.init`` retries for minutes)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address {address!r} is not host:port (for example 127.0.0.1:6379), 'auto' or 'local'.")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as error:
        raise ValueError(
            f"no Ray cluster answers at --address {address} ({error}). Start one with `ray start --head` "
            "on the head node, or leave --address unset to run on this machine."
        ) from error
