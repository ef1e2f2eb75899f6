"""Ray clusters: checking an address before ``ray.init`` waits on it."""

from __future__ import annotations

import socket


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
