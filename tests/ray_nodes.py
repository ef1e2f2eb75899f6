"""Local Ray clusters for the tests, as a user starts them with `ray start`: every node on 127.0.0.1 only, token
authentication on, and every process a node started stopped by its PID, whatever the test did."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")
# `ray start` for a node that joins a head on loopback: Ray replaces 127.0.0.1 (in --address and
# --node-ip-address) by the machine's outward address, where a loopback head does not listen, and refuses to join
# a cluster when told to keep loopback addresses (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); this keeps them as given.
JOIN_ON_LOOPBACK = """
import sys
import ray._private.ray_constants as constants
import ray._private.services as services
constants.ENABLE_RAY_CLUSTER = True
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
sys.argv = ["ray", "start", *sys.argv[1:]]
main()
"""
#: Settings trials must get from the sweep, not from the nodes (the sweep sends them in its runtime_env).
NOT_ON_NODES = ("MOCAPACT_MOCAP_PATH", "MOCAPACT_CACHE_DIR", "MUJOCO_GL", "HF_HUB_OFFLINE", "PYTHONPATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_with(marker: str) -> list[int]:
    """PIDs of the processes whose environment holds ``marker`` (every process a test cluster started)."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone, or a zombie
            continue
    return found


def listening_addresses(pids: list[int]) -> list[str]:
    """Local addresses the given processes listen on (TCP), from `ss -ltnp`."""
    output = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    wanted = {f"pid={pid}," for pid in pids}
    return [line.split()[3] for line in output.splitlines() if any(w in line for w in wanted)]


@dataclass
class Node:
    pgid: int  # `ray start` ran as a session leader: every process it started has its process group
    log: Path


@dataclass
class LocalCluster:
    """A head and worker nodes on 127.0.0.1, started with `ray start` at nice 10, stopped by PID in :meth:`stop`."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rt", dir="/tmp")))
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    marker: str = field(default_factory=lambda: f"MOCAPACT_TEST_RAY_CLUSTER={secrets.token_hex(8)}")
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_env(self, **extra: str) -> dict[str, str]:
        """A driver's environment: the cluster's token, and the mocap and rendering settings trials need."""
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "HF_HUB_OFFLINE": "1",
                "MUJOCO_GL": "egl", **extra}  # fmt: skip

    def node_env(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name not in NOT_ON_NODES}
        name, value = self.marker.split("=")
        return {
            **env,
            name: value,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # loopback addresses stay loopback
            "RAY_worker_niceness": "0",  # trials at the nodes' nice 10, not 10 + 15
            "RAY_USAGE_STATS_ENABLED": "0",
            # A lost node is declared dead within about 3 s instead of 15.
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }

    def _start(self, command: list[str], name: str) -> Node:
        log = self.root / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                ["nice", "-n", "10", *command, "--num-cpus", "1", "--disable-usage-stats",
                 "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port())],
                env=self.node_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        node = Node(pgid=process.pid, log=log)
        self.nodes.append(node)  # stopped in stop() even if the start fails
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            raise RuntimeError(f"`ray start` for the {name} exited {code}:\n{log.read_text()[-3000:]}")
        return node

    def start_head(self) -> Node:
        return self._start(
            [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
             "--ray-client-server-port", str(free_port()), "--include-dashboard", "false",
             "--temp-dir", str(self.root / "ray")],
            "head",
        )  # fmt: skip

    def add_worker(self) -> Node:
        return self._start(
            [sys.executable, "-c", JOIN_ON_LOOPBACK, "--address", self.address, "--node-ip-address", "127.0.0.1"],
            f"worker{len(self.nodes)}",
        )

    def pids(self, node: Node | None = None) -> list[int]:
        if node is None:
            return processes_with(self.marker)
        return [pid for pid in processes_with(self.marker) if _pgid(pid) == node.pgid]

    def kill(self, node: Node) -> None:
        """The node lost: SIGKILL to its process group (its raylet, agents and the workers running trials)."""
        os.killpg(node.pgid, signal.SIGKILL)

    def stop(self) -> list[int]:
        """Every process of the cluster stopped by PID (SIGTERM, then SIGKILL); the PIDs still alive after (none)."""
        for node in self.nodes:
            try:
                os.killpg(node.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in processes_with(self.marker):  # a process that left its group
            _signal(pid, signal.SIGTERM)
        deadline = time.time() + 3  # the GCS, raylet and monitor take over 10 s to end on SIGTERM
        while processes_with(self.marker) and time.time() < deadline:
            time.sleep(0.2)
        for pid in processes_with(self.marker):
            _signal(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while processes_with(self.marker) and time.time() < deadline:
            time.sleep(0.2)
        left = processes_with(self.marker)
        if not left:
            shutil.rmtree(self.root, ignore_errors=True)
        return left


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
