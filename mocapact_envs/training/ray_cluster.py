"""Ray clusters: checking an address before ``ray.init`` waits on it; a Ray of this process's own at nice 0."""

from __future__ import annotations

import os
import socket

#: Ray Client's port, what ``ray://host`` without one means.
RAY_CLIENT_PORT = 10001
# An HTTP/2 client's opening (its preface and an empty SETTINGS frame): Ray's GCS and Ray Client servers speak
# gRPC, so they answer with a SETTINGS frame; another service (a web server, ssh, redis) does not.
HTTP2_OPENING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
HTTP2_SETTINGS_FRAME = 0x04
ADDRESS_FORMS = "host:port (the head's GCS, e.g. 127.0.0.1:6379), ray://host:port (Ray Client), 'auto' or 'local'"


def own_ray_at_full_priority(address: str | None) -> None:
    """Before ``ray.init`` starts a Ray of its own here (``address`` unset or ``"local"``): its workers run at nice 0.

    Ray starts workers at nice 15, so beside any other job on the machine they all but stop (two sweep trials got
    6% of a core each beside one training process; a collection timed out). A cluster's own ``ray start`` decides
    for its nodes (``RAY_worker_niceness`` in its environment).
    """
    if address in (None, "local"):
        os.environ.setdefault("RAY_worker_niceness", "0")


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fails in seconds, naming the address, when no Ray cluster answers there (``ray.init`` retries for minutes,
    and waits on a port that accepts connections but is not Ray's for longer still)."""
    if address in ("auto", "local"):
        return
    scheme, separator, rest = address.partition("://")
    if separator and scheme != "ray":
        raise ValueError(f"--address {address!r} is no Ray address ({scheme}:// is not Ray's); use {ADDRESS_FORMS}.")
    host_port = rest if separator else address
    if separator and ":" not in host_port:
        host, port = host_port, str(RAY_CLIENT_PORT)
    else:
        host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--address {address!r} is no Ray address; use {ADDRESS_FORMS}.")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as connection:
            if os.environ.get("RAY_USE_TLS", "0") in ("1", "true", "True"):
                return  # a TLS cluster answers only after a TLS handshake; reaching it is all that is checked
            connection.settimeout(timeout)
            connection.sendall(HTTP2_OPENING)
            reply = b""
            while len(reply) < 9:
                chunk = connection.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except TimeoutError as error:
        raise ValueError(
            f"no Ray cluster answers at --address {address} within {timeout:g} s (the host is unreachable, or "
            "something there accepted the connection and said nothing). Start one with `ray start --head` on the "
            "head node, or leave --address unset to run on this machine."
        ) from error
    except OSError as error:
        raise ValueError(
            f"no Ray cluster answers at --address {address} ({error}). Start one with `ray start --head` "
            "on the head node, or leave --address unset to run on this machine."
        ) from error
    not_ray = (
        f"--address {address} answers, but not as a Ray cluster ({{}}): is it another service's port? "
        "`ray start --head` prints the cluster's address (its GCS port is 6379 by default)."
    )
    if len(reply) < 9 or reply[3] != HTTP2_SETTINGS_FRAME:
        raise ValueError(not_ray.format("no gRPC handshake"))
    if not separator:
        # A gRPC server; Ray's own client tells whether it is a GCS (at once, where it is another gRPC service).
        try:
            from ray._raylet import GcsClient
        except ImportError:  # another Ray version: the handshake is all that is checked
            return
        try:
            GcsClient(address=f"{host}:{port}")
        except Exception as error:  # Ray raises its own RpcError, whose module differs between versions
            raise ValueError(not_ray.format(f"no Ray GCS: {error}")) from error


def local_cpus() -> int:
    """The CPUs a Ray started here counts (cgroup limits included, as Ray counts them)."""
    try:
        from ray._private.utils import get_num_cpus

        return int(get_num_cpus())
    except (ImportError, AttributeError):  # another Ray version: the machine's count
        return os.cpu_count() or 1


def check_cpus_per_trial(cpus_per_trial: float, available: float, where: str) -> None:
    """Raises ``ValueError`` when a trial asks for more CPUs than ``where`` has: Ray would leave it PENDING forever."""
    if cpus_per_trial > available:
        raise ValueError(
            f"--cpus-per-trial {cpus_per_trial:g}: {where} has {available:g} CPUs, so no trial could ever start; "
            f"choose a value in (0, {available:g}]."
        )
