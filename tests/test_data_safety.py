"""Nothing is lost: a failed or killed Minari export leaves the dataset it would replace; a clip file is
reused only when what it records matches the run; a full disk or a read-only folder is named.

The exports and collections run as a user runs them (subprocesses) on a real rollout file of the
shipped expert. Full disks and read-only folders are small tmpfs mounts in a mount namespace of the
command's own (``unshare``), so nothing outside the test changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from tiny_runs import refused

from mocapact_envs.datasets.collect import COLLECTION_ATTRIBUTE
from mocapact_envs.files import read_tensors, write_tensors
from mocapact_envs.policies.run_layout import SHIPPED_EXPERTS

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPORT = ["-m", "mocapact_envs.tools.minari_export", "--ref-min-episodes", "1"]
COLLECT = ["-m", "mocapact_envs.tools.collect", "--n-start-rollouts", "1", "--n-rsi-rollouts", "1"]
DATASET_ID = "mocapact/CMU_016_22/expert-v0"


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "1000", "HF_HUB_OFFLINE": "1", **extra}


def run(*arguments, prefix=(), **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, *map(str, arguments)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=environment(**env),
        timeout=300,
    )


def load(root: Path, dataset_id: str = DATASET_ID):
    """The dataset as Minari loads it from ``root``, with the listing of ``root`` (which must not raise)."""
    import minari

    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        return minari.load_dataset(dataset_id), sorted(minari.list_local_datasets())
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def first_actions(root: Path) -> np.ndarray:
    dataset, _ = load(root)
    return next(dataset.iterate_episodes()).actions


# -- Minari export: the old dataset survives ---------------------------------------------------


@pytest.fixture
def exported(shipped_expert_rollouts, tmp_path) -> Path:
    """A Minari root holding the export of the real rollout file."""
    root = tmp_path / "minari"
    result = run(*EXPORT, shipped_expert_rollouts, MINARI_DATASETS_PATH=str(root))
    assert result.returncode == 0, result.stderr
    return root


def test_failed_overwrite_keeps_the_old_dataset(exported, shipped_expert_rollouts, tmp_path):
    """The new export fails midway (its second episode lost its actions): the old dataset is untouched."""
    before = first_actions(exported)
    damaged = tmp_path / "damaged" / shipped_expert_rollouts.name
    damaged.parent.mkdir()
    shutil.copy(shipped_expert_rollouts, damaged)
    with h5py.File(damaged, "a") as h5:
        del h5["CMU_016_22-0-82/1/actions"]
        h5["CMU_016_22-0-82/0/actions"][...] = 0.5  # the first episode would differ, were it written
    error = refused(run(*EXPORT, damaged, "--overwrite", MINARI_DATASETS_PATH=str(exported)))
    assert f"rollout file {damaged}: episode CMU_016_22-0-82/1 has no 'actions'" in error
    dataset, listed = load(exported)
    assert listed == [DATASET_ID] and dataset.total_episodes == 2
    np.testing.assert_array_equal(first_actions(exported), before)
    assert not list(exported.glob(".*")), "the failed export's staging folder was left behind"
    # A successful overwrite does replace it.
    with h5py.File(damaged, "a") as h5:
        h5["CMU_016_22-0-82/1/actions"] = h5["CMU_016_22-0-82/1/mean_actions"][...]
    assert run(*EXPORT, damaged, "--overwrite", MINARI_DATASETS_PATH=str(exported)).returncode == 0
    assert (first_actions(exported) == 0.5).all()
    assert load(exported)[1] == [DATASET_ID] and not list(exported.rglob(".*replaced*"))


def test_killed_overwrite_keeps_the_old_dataset(exported, shipped_expert_rollouts):
    """Killed (SIGKILL) while writing the new dataset: the old one loads, and the next export cleans up."""
    before = first_actions(exported)
    process = subprocess.Popen(
        [sys.executable, *EXPORT, str(shipped_expert_rollouts), "--overwrite"],
        cwd=REPO_ROOT, env=environment(MINARI_DATASETS_PATH=str(exported)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(exported.glob(".mocapact-export-*/mocapact")) and time.monotonic() < deadline:
            assert process.poll() is None, "the export finished before it could be killed"
            time.sleep(0.005)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert list(exported.glob(".mocapact-export-*")), "the kill should land while the new dataset is written"
    dataset, listed = load(exported)
    assert listed == [DATASET_ID] and dataset.total_episodes == 2
    np.testing.assert_array_equal(first_actions(exported), before)
    # The next export removes the killed one's staging folder.
    assert run(*EXPORT, shipped_expert_rollouts, "--overwrite", MINARI_DATASETS_PATH=str(exported)).returncode == 0
    assert not list(exported.glob(".*")) and load(exported)[1] == [DATASET_ID]


def test_bad_version_leaves_no_folder_and_minari_still_lists(exported, shipped_expert_rollouts):
    error = refused(run(*EXPORT, shipped_expert_rollouts, "--version", "-1", MINARI_DATASETS_PATH=str(exported)))
    assert "got -1" in error
    assert not list(exported.rglob("*-v-1*"))
    assert load(exported)[1] == [DATASET_ID]


def test_existing_datasets_are_refused_before_any_is_written(exported, shipped_expert_rollouts, tmp_path):
    """Two clip files, the second's dataset exists: refused before the first is exported."""
    other = tmp_path / "two" / "CMU_009_01.hdf5"
    other.parent.mkdir()
    shutil.copy(shipped_expert_rollouts, other)
    shutil.copy(shipped_expert_rollouts, other.parent / shipped_expert_rollouts.name)
    error = refused(run(*EXPORT, other.parent, MINARI_DATASETS_PATH=str(exported)))
    assert f"Minari dataset {DATASET_ID} already exists; pass --overwrite" in error
    assert load(exported)[1] == [DATASET_ID]


# -- collection: a finished file is reused only if it matches ----------------------------------


@pytest.fixture
def collected(shipped_expert_rollouts, tmp_path) -> Path:
    """An output folder holding the real clip file the shipped expert's 1 + 1 rollouts made."""
    output = tmp_path / "rollouts"
    output.mkdir()
    shutil.copy(shipped_expert_rollouts, output)
    return output


def test_matching_clip_file_is_reused(collected):
    mtime = (collected / "CMU_016_22.hdf5").stat().st_mtime_ns
    result = run(*COLLECT, SHIPPED_EXPERTS, "--output-dir", collected)
    assert result.returncode == 0 and "CMU_016_22: already collected, skipped" in result.stderr
    assert (collected / "CMU_016_22.hdf5").stat().st_mtime_ns == mtime


def test_clip_file_of_other_settings_is_refused_by_name(collected):
    path = collected / "CMU_016_22.hdf5"
    flags = ["--act-noise", "0.2", "--ref-steps", "1", "2", "--termination-error-threshold", "0.5", "--seed", "4"]
    error = refused(run(*COLLECT, SHIPPED_EXPERTS, "--output-dir", collected, *flags))
    assert f"{path} exists but " in error and "pass --overwrite to collect it again" in error
    for difference in (
        "act_noise is 0.1 in the file, 0.2 in this run",
        "ref_steps is [1, 2, 3, 4, 5] in the file, [1, 2] in this run",
        "termination_error_threshold is 0.3 in the file, 0.5 in this run",
        "seed is 0 in the file, 4 in this run",
    ):
        assert difference in error
    # --overwrite collects it again, with the new settings recorded.
    assert run(*COLLECT, SHIPPED_EXPERTS, "--output-dir", collected, *flags, "--overwrite").returncode == 0
    with h5py.File(path) as h5:
        recorded = json.loads(h5.attrs[COLLECTION_ATTRIBUTE])
        assert list(h5["ref_steps"][...]) == [1, 2]
    assert (recorded["act_noise"], recorded["seed"], recorded["termination_error_threshold"]) == (0.2, 4, 0.5)


def test_clip_file_of_another_expert_is_refused(collected, tmp_path):
    """The same snippet's expert with other weights (a retrained one) does not reuse the file."""
    experts = tmp_path / "experts"
    shutil.copytree(SHIPPED_EXPERTS / "CMU_016_22-0-82", experts / "CMU_016_22-0-82")
    weights = experts / "CMU_016_22-0-82" / "0" / "eval_rsi" / "model" / "model.safetensors"
    tensors = read_tensors(weights)
    tensors["actor_mean.0.bias"] += 0.01
    write_tensors(weights, tensors)
    error = refused(run(*COLLECT, experts, "--output-dir", collected))
    assert "the expert of CMU_016_22-0-82 differs (the file's sha256:" in error
    assert str(weights.parent) in error


def test_clip_file_without_recorded_settings_is_refused(collected):
    path = collected / "CMU_016_22.hdf5"
    with h5py.File(path, "a") as h5:
        del h5.attrs[COLLECTION_ATTRIBUTE]  # as an older collector's, or MoCapAct's, file
    error = refused(run(*COLLECT, SHIPPED_EXPERTS, "--output-dir", collected))
    assert f"{path} exists but it does not record the settings it was collected with" in error


# -- full disks and read-only folders ------------------------------------------------------


def namespace_available() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


needs_namespace = pytest.mark.skipif(
    not namespace_available(), reason="needs `unshare -rm` (user and mount namespaces) to mount a small tmpfs"
)


def on_tmpfs(folder: Path, options: str) -> list[str]:
    """A command prefix running the command with a tmpfs (``options``: ``size=300k``, ``ro``) on ``folder``,
    in a mount namespace of its own: the mount goes away with the command."""
    folder.mkdir(parents=True, exist_ok=True)
    return ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o {options} tmpfs "{folder}" && exec "$@"', "sh"]


def read_only_prefix(folder: Path) -> list[str]:
    """A read-only ``folder``: chmod for a user, a read-only mount for root (whom chmod does not stop)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    if not namespace_available():
        pytest.skip("running as root, chmod does not stop writes, and `unshare -rm` is not available")
    return on_tmpfs(folder, "ro")


def test_collect_into_a_read_only_folder_is_refused_first(tmp_path):
    output = tmp_path / "read-only"
    error = refused(run(*COLLECT, SHIPPED_EXPERTS, "--output-dir", output, prefix=read_only_prefix(output)))
    assert f"cannot write in {output}: the folder {output} is not writable" in error


@needs_namespace
def test_collect_onto_a_full_disk_names_it(tmp_path):
    output = tmp_path / "full"
    error = refused(run(*COLLECT, SHIPPED_EXPERTS, "--output-dir", output, prefix=on_tmpfs(output, "size=300k")))
    assert f"cannot write {output / 'CMU_016_22.hdf5'}: the disk holding {output} is full" in error


@needs_namespace
def test_export_onto_a_full_disk_keeps_the_old_dataset(shipped_expert_rollouts, tmp_path):
    """Room for one dataset, not two: the overwrite is refused and the old dataset still loads."""
    root = tmp_path / "minari"
    script = f"""
set -e
"{sys.executable}" {" ".join(EXPORT)} "{shipped_expert_rollouts}" > /dev/null 2>&1
"{sys.executable}" {" ".join(EXPORT)} "{shipped_expert_rollouts}" --overwrite || echo "exit status $?"
"{sys.executable}" -c "import minari; d = minari.load_dataset('{DATASET_ID}'); print('loaded', d.total_episodes)"
"""
    result = subprocess.run(
        [*on_tmpfs(root, "size=2000k"), "sh", "-c", script],
        cwd=REPO_ROOT, capture_output=True, text=True, env=environment(MINARI_DATASETS_PATH=str(root)), timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "exit status 2" in output, output
    assert re.search(
        rf"error: cannot write in {root}: that needs about 1\.\d MB, and the disk holding it has 0\.\d MB free", output
    ), output
    assert "loaded 2" in output


def test_expert_trainer_into_a_read_only_folder_is_refused_first(tmp_path):
    folder = tmp_path / "read-only"
    train = REPO_ROOT / "baselines" / "ppo_expert" / "train.py"
    error = refused(run(train, "--clips", "CMU_016_22-0-82", "--log-root", folder, prefix=read_only_prefix(folder)))
    assert f"cannot write in {folder}: the folder {folder} is not writable" in error


@needs_namespace
def test_expert_trainer_onto_a_full_disk_names_it(tmp_path):
    folder = tmp_path / "full"
    tiny = ["--num-envs", "1", "--num-steps", "64", "--minibatch-size", "64", "--total-timesteps", "64"]
    train = REPO_ROOT / "baselines" / "ppo_expert" / "train.py"
    # 200k holds the run folder's first files but not the first evaluation's models (about 2 MB).
    result = run(train, "--clips", "CMU_016_22-0-40", "--log-root", folder, *tiny, "--eval-rsi-episodes", "1",
                 "--eval-start-episodes", "1", "--no-progress-bar", prefix=on_tmpfs(folder, "size=200k"))  # fmt: skip
    assert "the disk holding" in refused(result) and "is full" in refused(result)


def test_convert_output_into_a_read_only_folder_is_named(mocap_folder, tmp_path):
    folder = tmp_path / "read-only"
    prefix = read_only_prefix(folder)
    error = refused(
        run("-m", "mocapact_envs.tools.convert_clips", mocap_folder, "--clips", "CMU_016_22", "--output", folder / "clips.h5",
            prefix=prefix)
    )  # fmt: skip
    assert f"cannot write in {folder}: the folder {folder} is not writable" in error
