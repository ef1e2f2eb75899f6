"""The sweep on a real Ray cluster, as a user runs it: `ray start` nodes on loopback with token authentication,
`sweep.py --address`; a lost worker node mid-sweep; failed trials' reasons; addresses that are no (usable) cluster.

Every test here shares one head node (module scope); the fault test adds a worker node and kills it. Every process
the nodes started is stopped by PID when the module ends, whatever happened (LocalCluster.stop)."""

from __future__ import annotations

import ast
import csv
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ray_nodes import LocalCluster, listening_addresses
from test_sweep import SNIPPETS, TINY, final_evaluation

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEP = REPO_ROOT / "baselines" / "ppo_expert" / "sweep.py"

pytestmark = pytest.mark.xdist_group("ray_cluster")


@pytest.fixture(scope="module")
def cluster():
    """A head node (1 CPU) on 127.0.0.1; its nodes' processes all stopped by PID at the end, even on failure."""
    nodes = LocalCluster()
    try:
        nodes.start_head()
        yield nodes
    finally:
        left = nodes.stop()
        assert not left, f"Ray processes still alive after stopping them: {left}"


def sweep(cluster: LocalCluster, root: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 300):
    command = [
        sys.executable, str(SWEEP), "--snippets", *SNIPPETS, "--address", cluster.address,
        "--log-root", str(root / "experts"), "--storage-path", str(root / "sweeps"), *TINY, *extra,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env or cluster.client_env(), capture_output=True, text=True, timeout=timeout
    )


def trial_folders(root: Path) -> list[Path]:
    return sorted((root / "sweeps" / "experts").glob("train_trial_*"))


def reported_steps(trial: Path) -> list[int]:
    path = trial / "progress.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [int(row["env_steps"]) for row in csv.DictReader(f) if row.get("env_steps")]


def trials_running_on(cluster: LocalCluster, node, storage: Path) -> set[Path]:
    """The trial folders (under ``storage``) whose log a process the node's raylet started holds open: its trials.
    (Ray's worker processes lead their own process groups; their parent is the node's.)"""
    found = set()
    for pid in cluster.pids():
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if os.getpgid(parent) != node.pgid:
                continue
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except (OSError, ValueError):  # gone
            continue
        for fd in fds:
            try:
                target = Path(os.readlink(fd))
            except OSError:  # closed meanwhile
                continue
            if target.is_relative_to(storage) and target.name == "trial_stderr.log":
                found.add(target.parent)
    return found


def test_cluster_listens_on_loopback_only(cluster):
    addresses = listening_addresses(cluster.pids())
    assert addresses and all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in addresses), addresses


def test_sweep_on_a_ray_start_cluster_end_to_end(cluster, tmp_path):
    # The nodes have neither MOCAPACT_MOCAP_PATH nor MUJOCO_GL nor this checkout on PYTHONPATH: the sweep sends
    # them (runtime_env env_vars and py_modules).
    result = sweep(cluster, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 snippets: 0 finished, 2 to train in 2 trials" in result.stdout
    rows = json.loads((tmp_path / "sweeps" / "experts" / "results.json").read_text())
    assert [r["snippet"] for r in rows] == list(SNIPPETS)
    assert all(0.0 < r["rsi_norm_length"] <= 1.0 and r["env_steps"] >= 600 for r in rows)
    for trial in trial_folders(tmp_path):
        assert (trial / "trial_stderr.log").is_file() and not (trial / "error.txt").exists()
    # Results and checkpoints land in --storage-path (Tune) and --log-root (the experts), not on the nodes.
    assert all(list(trial.glob("checkpoint_*")) for trial in trial_folders(tmp_path))
    assert all(final_evaluation(tmp_path, s).is_file() for s in SNIPPETS)


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--trial-env", "MOCAPACT_MOCAP_PATH=/nonexistent/cmu-mocap"], "error: mocap path '/nonexistent/cmu-mocap' does not exist"),
        (["--trainer.num-envs", "0"], "error: --num-envs 0: must be a positive number of worlds"),
    ],
    ids=["mocap_missing_on_the_nodes", "bad_trainer_flag"],
)  # fmt: skip
def test_a_failed_trials_reason_reaches_the_driver_and_is_not_retried(cluster, tmp_path, flags, reason):
    result = sweep(cluster, tmp_path, "--snippets", SNIPPETS[0], *flags)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 trial(s) failed:" in result.stderr and "not retried: a retry cannot change it" in result.stderr
    assert reason in result.stderr and "train.py exited 2" in result.stderr
    (row,) = json.loads((tmp_path / "sweeps" / "experts" / "results.json").read_text())
    assert row["missing"].startswith(f"failed: {reason}") and "trial_stderr.log ends:" in row["failure"]
    assert f"| {SNIPPETS[0]} | failed: {reason}" in (tmp_path / "sweeps" / "experts" / "results.md").read_text()
    (trial,) = trial_folders(tmp_path)
    assert reason in (trial / "trial_stderr.log").read_text()
    assert not (trial / "error.txt").exists()  # it ended once, without an error to retry


def test_trials_the_cluster_cannot_hold_are_refused(cluster, tmp_path):
    started = time.perf_counter()
    result = sweep(cluster, tmp_path, "--cpus-per-trial", "2")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "--cpus-per-trial 2: the cluster's largest node (1 nodes, 1 CPUs in all) has 1 CPUs" in result.stderr
    assert time.perf_counter() - started < 120
    assert not (tmp_path / "experts").exists()


def timed_check(address: str, env: dict[str, str]) -> tuple[float, str]:
    """check_ray_address in a process of its own: the seconds it took (imports excluded) and its error."""
    code = (
        "import time; from mocapact_envs.training.ray_cluster import check_ray_address\n"
        "t = time.perf_counter()\n"
        f"try:\n    check_ray_address({address!r}); message = 'accepted'\n"
        "except ValueError as error:\n    message = str(error)\n"
        "print(f'{time.perf_counter() - t:.2f}'); print(message)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seconds, message = result.stdout.split("\n", 1)
    return float(seconds), message.strip()


def test_addresses_that_are_no_usable_cluster_fail_within_10_seconds_with_the_cause(cluster, tmp_path):
    env = {name: value for name, value in cluster.client_env().items() if not name.startswith("RAY_AUTH")}
    wrong = {**cluster.client_env(), "RAY_AUTH_TOKEN": "0" * 64}
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, says nothing
    web = socket.create_server(("127.0.0.1", 0))  # answers, but not gRPC
    held = []

    def answer():
        while True:
            try:
                connection, _ = web.accept()
            except OSError:
                return
            held.append(connection)
            connection.recv(1024)
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    with socket.socket() as bound:  # bound, not listening: nothing answers
        bound.bind(("127.0.0.1", 0))
        cases = {
            "unreachable": (f"127.0.0.1:{bound.getsockname()[1]}", env, "no Ray cluster answers at --address"),
            "silent": (f"127.0.0.1:{silent.getsockname()[1]}", env, "within 5 s"),
            "not_ray": (f"127.0.0.1:{web.getsockname()[1]}", env, "answers, but not as a Ray cluster"),
            "no_token": (cluster.address, env, "uses token authentication and refused this process (RAY_AUTH_MODE "
                         "is unset here, so no token was sent). Set RAY_AUTH_MODE=token and the cluster's token"),
            "wrong_token": (cluster.address, wrong, "RAY_AUTH_MODE=token here, but the token sent is not the cluster's"),
            "the_cluster": (cluster.address, cluster.client_env(), "accepted"),
        }  # fmt: skip
        for name, (address, case_env, expected) in cases.items():
            seconds, message = timed_check(address, case_env)
            assert expected in message and seconds < 10, (name, seconds, message)
    silent.close()
    web.close()
    # The sweep itself says so, before Ray's own connection attempts (which spend 20 s and log 20 warnings).
    result = sweep(cluster, tmp_path, env=env, timeout=180)
    assert result.returncode == 2 and "Set RAY_AUTH_MODE=token and the cluster's token" in result.stderr
    assert "Traceback" not in result.stderr and "gcs_client" not in result.stderr, result.stderr


def test_a_lost_worker_node_mid_sweep_its_trial_resumes_on_the_head_from_its_checkpoint(cluster, tmp_path):
    worker = cluster.add_worker()
    # Eight evaluations each (every 256 steps to 2048): time to lose the node while its trial trains. The head's
    # trial may finish first (the new node sets up the runtime_env before its trial starts; seen in CI).
    budget = ["--trainer.total-timesteps", "2048", "--max-concurrent", "2"]
    command = [
        sys.executable, str(SWEEP), "--snippets", *SNIPPETS, "--address", cluster.address,
        "--log-root", str(tmp_path / "experts"), "--storage-path", str(tmp_path / "sweeps"), *TINY, *budget,
    ]  # fmt: skip
    output = tmp_path / "sweep.log"
    with open(output, "w") as log:
        driver = subprocess.Popen(command, cwd=REPO_ROOT, env=cluster.client_env(), stdout=log, stderr=log)
    try:
        # Both trials checkpointed (one on each 1-CPU node; a trial writes its checkpoint to the storage itself, the
        # driver's progress.csv lags) and the worker's still training (its trial's log open there): then the worker
        # node is lost, raylet, agents and trial. The head's trial may have finished by then.
        deadline, on_worker = time.time() + 240, set()
        while time.time() < deadline and driver.poll() is None:
            trials = trial_folders(tmp_path)
            if len(trials) == 2 and all(list(t.glob("checkpoint_*")) for t in trials):
                on_worker = trials_running_on(cluster, worker, tmp_path / "sweeps")
                if on_worker:
                    break
            time.sleep(0.1)
        assert driver.poll() is None, "the sweep ended before both trials reported:\n" + output.read_text()[-3000:]
        assert len(on_worker) == 1, f"the worker node's trials once both had a checkpoint: {on_worker}"
        lost_snippets = json.loads((next(iter(on_worker)) / "params.json").read_text())["snippets"]
        cluster.kill(worker)
        assert not any(final_evaluation(tmp_path, s).is_file() for s in lost_snippets)  # lost mid-training
        code = driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    text = output.read_text()
    assert code == 0, text[-4000:]
    assert not cluster.pids(worker)
    # One trial lost its node and was retried; it went on from its last checkpoint (its steps never go back).
    failed = [t for t in trial_folders(tmp_path) if (t / "error.txt").exists()]
    assert failed == list(on_worker), text[-4000:]
    error = (failed[0] / "error.txt").read_text()
    # Ray says the node died, or (seen first, on an idle machine) that the actor's socket closed.
    assert any(cause in error for cause in ("ActorDiedError", "ActorUnavailableError", "node has died")), error
    steps = reported_steps(failed[0])
    assert steps == sorted(set(steps)) and steps[-1] >= 2048, steps
    # Every snippet trained once, to its budget: one run folder, its evaluations in order, the final evaluation.
    for snippet in SNIPPETS:
        run = final_evaluation(tmp_path, snippet).parent
        evaluations = [e["global_step"] for e in json.loads((run / "evaluations.json").read_text())]
        assert evaluations == sorted(set(evaluations)) and evaluations[-1] >= 2048, (snippet, evaluations)
        assert json.loads(final_evaluation(tmp_path, snippet).read_text())["env_steps"] >= 2048
    rows = json.loads((tmp_path / "sweeps" / "experts" / "results.json").read_text())
    assert all("rsi_norm_length" in r for r in rows)


def test_a_ray_of_the_sweeps_own_listens_on_loopback_only():
    # The sweep's (and collect's) embedded Ray serves only its process: Ray would bind it on every interface.
    name, value = "MOCAPACT_TEST_EMBEDDED_RAY", secrets.token_hex(8)
    code = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from mocapact_envs.training.ray_cluster import own_ray_at_full_priority
own_ray_at_full_priority(None)
import ray
ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, num_cpus=1)
assert ray.get(ray.remote(lambda: 1).remote()) == 1
from ray_nodes import listening_addresses, processes_with
print(listening_addresses([os.getpid(), *processes_with({name + "=" + value!r})]))
ray.shutdown()
"""
    env = {**os.environ, name: value}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    addresses = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert addresses and all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in addresses), addresses
