"""Ray clusters: checking an address before ``ray.init`` waits on it (reachable, Ray's, the same token); a Ray of
this process's own at nice 0; loopback clusters; what trials on a cluster need from this process (``runtime_env``);
a trial's stderr in a file."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

#: Ray Client's port, what ``ray://host`` without one means.
RAY_CLIENT_PORT = 10001
# An HTTP/2 client's opening (its preface and an empty SETTINGS frame): Ray's GCS and Ray Client servers speak
# gRPC, so they answer with a SETTINGS frame; another service (a web server, ssh, redis) does not.
HTTP2_OPENING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
HTTP2_SETTINGS_FRAME = 0x04
ADDRESS_FORMS = "host:port (the head's GCS, e.g. 127.0.0.1:6379), ray://host:port (Ray Client), 'auto' or 'local'"
#: Ray's switch that keeps loopback addresses as they are: unset (Linux), Ray replaces 127.0.0.1 by the machine's
#: outward address, where a head started with ``--node-ip-address 127.0.0.1`` does not listen.
RAY_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: What trials on a cluster need from the driver's environment: where the clips are and where conversions are
#: cached, how MuJoCo renders, that the hub is offline, and Hugging Face's cache folders.
TRIAL_ENV_VARIABLES = (
    "MOCAPACT_MOCAP_PATH",
    "MOCAPACT_CACHE_DIR",
    "XDG_CACHE_HOME",
    "MUJOCO_GL",
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "MOCAPACT_TRACEBACK",
)
#: Of those, the paths: sent absolute, as trials need not share the driver's working directory.
TRIAL_ENV_PATHS = ("MOCAPACT_MOCAP_PATH", "MOCAPACT_CACHE_DIR", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE")


def own_ray_at_full_priority(address: str | None) -> None:
    """Before ``ray.init`` starts a Ray of its own here (``address`` unset or ``"local"``): its workers run at nice 0,
    and it listens on 127.0.0.1 only.

    Ray starts workers at nice 15, so beside any other job on the machine they all but stop (two sweep trials got
    6% of a core each beside one training process; a collection timed out). A cluster's own ``ray start`` decides
    for its nodes (``RAY_worker_niceness`` in its environment). A Ray of one process's own serves only that process,
    but Ray binds its servers on every interface and names them by the machine's outward address unless told to keep
    to loopback (:data:`RAY_LOOPBACK_SWITCH`).
    """
    if address in (None, "local"):
        os.environ.setdefault("RAY_worker_niceness", "0")
        keep_loopback_addresses("127.0.0.1")


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
            with stderr_to_file(Path(os.devnull)):  # Ray's C++ client logs its failed attempt there
                GcsClient(address=f"{host}:{port}")
        except Exception as error:  # Ray raises its own RpcError, whose module differs between versions
            if type(error).__name__ == "AuthenticationError":
                raise ValueError(auth_mismatch(address)) from error
            raise ValueError(not_ray.format(f"no Ray GCS: {error}")) from error


def auth_mismatch(address: str) -> str:
    """What to set when the cluster at ``address`` refused this process's token (Ray's token authentication)."""
    mode = os.environ.get("RAY_AUTH_MODE")
    here = (
        "RAY_AUTH_MODE is unset here, so no token was sent"
        if not mode
        else f"RAY_AUTH_MODE={mode} here, so no token was sent"
        if mode.lower() != "token"
        else "RAY_AUTH_MODE=token here, but the token sent is not the cluster's"
    )
    return (
        f"the Ray cluster at --address {address} uses token authentication and refused this process ({here}). "
        "Set RAY_AUTH_MODE=token and the cluster's token: RAY_AUTH_TOKEN=TOKEN, or RAY_AUTH_TOKEN_PATH=FILE, or the "
        "file ~/.ray/auth_token (`ray get-auth-token` on the head node prints it), as on every node of the cluster."
    )


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (host:port or ray://host:port) names this machine's loopback interface."""
    if address in (None, "auto", "local"):
        return False
    host = address.partition("://")[2] if "://" in address else address
    host = host.rpartition(":")[0] if host.count(":") == 1 or host.startswith("[") else host
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keep_loopback_addresses(address: str | None) -> None:
    """Before this process connects to a cluster on loopback: Ray keeps 127.0.0.1 instead of replacing it by the
    machine's outward address (where a head started with ``--node-ip-address 127.0.0.1`` does not listen)."""
    if is_loopback(address):
        os.environ[RAY_LOOPBACK_SWITCH] = "0"
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:  # Ray read the switch when it was imported
            constants.ENABLE_RAY_CLUSTER = False


def trial_env_vars(overrides: Mapping[str, str] = {}) -> dict[str, str]:
    """The settings of :data:`TRIAL_ENV_VARIABLES` this process has (paths absolute), then ``overrides``: what
    trials on a cluster get in ``runtime_env`` (they start from the environment of the node's ``ray start``)."""
    env = {name: os.environ[name] for name in TRIAL_ENV_VARIABLES if os.environ.get(name)}
    for name in TRIAL_ENV_PATHS:
        if name in env:
            env[name] = str(Path(env[name]).expanduser().resolve())
    return {**env, **overrides}


def parse_env_settings(settings: tuple[str, ...] | list[str], flag: str) -> dict[str, str]:
    """``NAME=VALUE`` items (a flag's values) as a mapping; a malformed one is a ``ValueError`` naming it."""
    parsed = {}
    for item in settings:
        name, separator, value = item.partition("=")
        if not separator or not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise ValueError(f"{flag} {item!r}: expected NAME=VALUE, e.g. MOCAPACT_MOCAP_PATH=/data/cmu-mocap.")
        parsed[name] = value
    return parsed


@contextlib.contextmanager
def stderr_to_file(path: Path) -> Iterator[Path]:
    """This process's stderr (Python's and its libraries', file descriptor 2) appended to ``path`` meanwhile: a
    Ray trial's output where the driver can read it, instead of a worker log on whichever node ran it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab", buffering=0) as log:
            os.dup2(log.fileno(), 2)
            try:
                yield path
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def tail(path: Path, lines: int = 20, max_chars: int = 4000) -> str:
    """The last ``lines`` non-blank lines of a text file (at most ``max_chars``), "" if there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * max_chars))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept)[-max_chars:]


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
