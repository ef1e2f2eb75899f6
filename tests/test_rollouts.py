"""Expert rollouts end to end on real clips: train tiny experts, collect, read, resume, export, download.

Everything runs as a user would: the expert trainer and the collector as
subprocesses, datasets read back with h5py, the package's readers, Minari, and
the hub download against a Hugging Face cache built here (offline).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tiny_runs import (  # noqa: E402  (tests/ is on sys.path under pytest)
    CLIPS,
    COLLECT,
    N_RSI,
    N_START,
    REPO_ROOT,
    SEED,
    SNIPPETS,
    datasets_of,
    environment,
    run,
)

import mocapact_envs
from mocapact_envs.datasets import D4RLDataset, ExpertDataset
from mocapact_envs.datasets.collect import RolloutSettings
from mocapact_envs.datasets.rollouts import generalized_advantages
from mocapact_envs.envs.factory import clamp_min_steps
from mocapact_envs.mocap.ids import parse_snippet
from mocapact_envs.tasks.observables import ALL_PROPRIOCEPTIVE, OBSERVATION_SETS

pytestmark = pytest.mark.xdist_group("rollouts")


def clip_paths(folder: Path) -> list[Path]:
    return [folder / f"{clip}.hdf5" for clip in CLIPS]


def test_collection_has_mocapact_layout(rollouts):
    assert sorted(p.name for p in rollouts.iterdir()) == sorted(
        [*(p.name for p in clip_paths(rollouts)), "dataset_metrics.npz"]
    )
    for path in clip_paths(rollouts):
        with h5py.File(path, "r") as h5:
            assert int(h5["n_start_rollouts"][...]) == N_START and int(h5["n_rsi_rollouts"][...]) == N_RSI
            assert h5["ref_steps"][...].tolist() == [1, 2, 3, 4, 5]
            indices = {f"walker/{k}": v[...] for k, v in h5["observable_indices/walker"].items()}
            assert set(indices) == set(ALL_PROPRIOCEPTIVE)
            assert np.array_equal(np.sort(np.concatenate(list(indices.values()))), np.arange(2868))
            for name in ("proprio_mean", "proprio_var"):
                assert h5[f"stats/{name}"].shape == (2868,)
            for name in ("act_mean", "act_var", "mean_act_mean", "mean_act_var"):
                assert h5[f"stats/{name}"].shape == (56,)
            snippets = sorted(k for k in h5 if k.startswith("CMU_"))
            assert snippets == sorted(s for s in SNIPPETS if s.startswith(path.stem))
            rows = 0
            for snippet_id in snippets:
                group = h5[snippet_id]
                early = group["early_termination"][...]
                assert early.shape == (N_START + N_RSI,) and early.dtype == bool
                lengths = []
                for part, count in (("start_metrics", N_START), ("rsi_metrics", N_RSI)):
                    for metric in (
                        "episode_returns",
                        "episode_lengths",
                        "norm_episode_returns",
                        "norm_episode_lengths",
                    ):
                        assert group[f"{part}/{metric}"].shape == (count,)
                    lengths.extend(group[f"{part}/episode_lengths"][...].tolist())
                for episode in range(N_START + N_RSI):
                    data = group[str(episode)]
                    steps = lengths[episode]
                    assert data["observations/proprioceptive"].shape == (steps + 1, 2868)
                    assert data["observations/proprioceptive"].dtype == np.float32
                    for name in ("actions", "mean_actions"):
                        assert data[name].shape == (steps, 56) and data[name].dtype == np.float32
                        assert np.abs(data[name][...]).max() <= 1.0
                    for name in ("rewards", "values", "advantages"):
                        assert data[name].shape == (steps,)
                    expected = generalized_advantages(data["rewards"][...], data["values"][...], 0.95, 0.95)
                    np.testing.assert_allclose(data["advantages"][...], expected, rtol=1e-4, atol=1e-5)
                    time_in_clip = data["observations/proprioceptive"][0, indices["walker/time_in_clip"]]
                    if episode < N_START:  # start rollouts come first and begin at the snippet start
                        assert time_in_clip == pytest.approx(0.0)
                    rows += steps + 1
                # An episode that was not cut short tracked to the snippet's end.
                norm_lengths = np.concatenate(
                    [group["start_metrics/norm_episode_lengths"][...], group["rsi_metrics/norm_episode_lengths"][...]]
                )
                assert np.all(norm_lengths[~early] == pytest.approx(1.0))
                assert np.all(norm_lengths[early] < 1.0)
            assert int(h5["stats/count"][...]) == rows
    metrics = np.load(rollouts / "dataset_metrics.npz")
    assert sorted(metrics["snippet_ids"].tolist()) == sorted(SNIPPETS)
    assert metrics["proprio_mean"].shape == (2868,)


def test_actions_are_noisy_expert_means_and_values_unnormalised(rollouts, experts_root):
    noise, first_steps = [], 0
    for path in clip_paths(rollouts):
        with h5py.File(path, "r") as h5:
            indices = {f"walker/{k}": v[...] for k, v in h5["observable_indices/walker"].items()}
            for snippet_id in (k for k in h5 if k.startswith("CMU_")):
                expert = mocapact_envs.load_expert(experts_root / snippet_id / "0")
                for episode in range(N_START + N_RSI):
                    data = h5[f"{snippet_id}/{episode}"]
                    actions, means = data["actions"][...], data["mean_actions"][...]
                    inside = np.abs(actions) < 1.0  # unclipped entries show the noise as drawn
                    noise.append((actions - means)[inside])
                    first = data["observations/proprioceptive"][0]
                    observation = {key: first[columns] for key, columns in indices.items()}
                    action, _ = expert.predict(observation, deterministic=True)
                    np.testing.assert_allclose(means[0], action, atol=1e-5)
                    assert data["values"][0] == pytest.approx(expert.value(observation), rel=1e-4, abs=1e-5)
                    first_steps += 1
    noise = np.concatenate(noise)
    assert first_steps == len(SNIPPETS) * (N_START + N_RSI)
    assert abs(noise.mean()) < 0.01 and 0.09 < noise.std() < 0.11  # N(0, 0.1)


def test_h5py_reads_as_mocapact_readme(rollouts):
    with h5py.File(rollouts / "CMU_016_22.hdf5", "r") as dset:
        actions = dset["CMU_016_22-0-82/0/actions"][...]
        observations = dset["CMU_016_22-0-82/0/observations/proprioceptive"][...]
    assert actions.shape[1] == 56 and observations.shape == (len(actions) + 1, 2868)


def test_expert_and_d4rl_datasets_read_the_files(rollouts):
    paths = clip_paths(rollouts)
    lengths, early = {}, {}
    for path in paths:
        with h5py.File(path, "r") as h5:
            for snippet_id in (k for k in h5 if k.startswith("CMU_")):
                for episode in range(N_START + N_RSI):
                    lengths[f"{snippet_id}/{episode}"] = len(h5[f"{snippet_id}/{episode}/actions"])
                    early[f"{snippet_id}/{episode}"] = bool(h5[f"{snippet_id}/early_termination"][episode])
    total_steps = sum(lengths.values())

    dataset = ExpertDataset(paths, "high_level", seq_steps=1)
    assert len(dataset) == total_steps
    observation, action, weight = dataset[0]
    assert observation.shape == (1291,) and action.shape == (56,) and weight == 1.0
    with h5py.File(paths[0], "r") as h5:
        np.testing.assert_array_equal(action, h5["CMU_009_01-0-40/0/mean_actions"][0])
    # The dataset's collate function gives what torch's default collate gives, without the second copy.
    windows = ExpertDataset(paths, "high_level", seq_steps=3)
    fast = next(iter(torch.utils.data.DataLoader(windows, batch_size=16, collate_fn=ExpertDataset.collate)))
    default = next(iter(torch.utils.data.DataLoader(windows, batch_size=16)))
    assert [tuple(t.shape) for t in fast] == [(16, 3, 1291), (16, 3, 56), (16, 3)]
    assert all(torch.equal(a, b) for a, b in zip(fast, default, strict=True))

    d4rl = D4RLDataset(paths, "multi_clip_sans_id")
    data = d4rl.get_in_memory_rollouts()
    assert data["observations"].shape == (total_steps, 2847) and data["next_observations"].shape == (total_steps, 2847)
    assert int(data["terminals"].sum()) == sum(early.values())
    assert int(data["timeouts"].sum()) == len(early) - sum(early.values())
    assert not np.any(data["terminals"] & data["timeouts"])


def test_killed_collection_resumes_to_identical_files(rollouts, experts_root, tmp_path):
    """Killed after its first clip file, rerun with one worker: the same files as the two-worker run."""
    output = tmp_path / "resumed"
    command = [sys.executable, *COLLECT, str(experts_root), "--output-dir", str(output), "--seed", str(SEED)]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(output.glob("CMU_*.hdf5")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    first = sorted(output.glob("CMU_*.hdf5"))
    assert len(first) == 1, f"the kill should land after the first clip file, found {first}"
    first_mtime = first[0].stat().st_mtime_ns

    result = run(*command[1:])
    assert f"{first[0].stem}: already collected, skipped" in result.stderr
    assert first[0].stat().st_mtime_ns == first_mtime
    assert not list(output.glob(".*.tmp*")), "the killed run's temporary file was left behind"
    for expected in clip_paths(rollouts):
        got, want = datasets_of(output / expected.name), datasets_of(expected)
        assert got.keys() == want.keys()
        different = [name for name in want if not np.array_equal(got[name], want[name])]
        assert not different, f"{expected.name}: {different[:5]} differ"


def test_collector_rejects_bad_input(experts_root, tmp_path):
    result = run(*COLLECT, experts_root, "--output-dir", tmp_path, "--observables", "everything", check=False)
    assert result.returncode == 2 and "all_proprioceptive" in result.stderr and "everything" in result.stderr
    result = run(*COLLECT, tmp_path / "nowhere", "--output-dir", tmp_path, check=False)
    assert result.returncode == 2 and "nowhere" in result.stderr
    with pytest.raises(ValueError, match="multi_clip_sans_id"):
        RolloutSettings(observables="high_level")
    assert clamp_min_steps(parse_snippet("CMU_009_01-0-40"), 30, (1, 2, 3, 4, 5)) == 29
    assert clamp_min_steps(parse_snippet("CMU_009_02-0-32"), 30, (1, 2, 3, 4, 5)) == 26


@pytest.fixture(scope="module")
def minari_root(rollouts, tmp_path_factory) -> Path:
    """Two exports: all clips as one collection, and one clip on its own."""
    root = tmp_path_factory.mktemp("minari")
    env = environment(MINARI_DATASETS_PATH=str(root))
    run("-m", "mocapact_envs.tools.minari_export", rollouts, "--collection", "tiny", "--ref-min-episodes", 2, env=env)
    run("-m", "mocapact_envs.tools.minari_export", rollouts / "CMU_016_22.hdf5", "--ref-min-episodes", 2, env=env)
    return root


def test_minari_dataset_matches_rollout_files(minari_root, rollouts, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    assert set(minari.list_local_datasets()) == {"mocapact/tiny/expert-v0", "mocapact/CMU_016_22/expert-v0"}
    dataset = minari.load_dataset("mocapact/tiny/expert-v0")
    assert dataset.total_episodes == len(SNIPPETS) * (N_START + N_RSI)
    metadata = dataset.storage.metadata
    for key in ("algorithm_name", "author", "code_permalink", "description", "ref_min_score", "ref_max_score"):
        assert metadata.get(key) is not None, key
    assert metadata["eval_env_spec"] is not None
    dataset.set_seed(0)
    for episode in dataset.sample_episodes(6):
        (info,) = dataset.storage.get_episode_metadata([episode.id])
        with h5py.File(rollouts / info["source_file"], "r") as h5:
            group = h5[f"{info['snippet_id']}/{info['rollout']}"]
            proprio = group["observations/proprioceptive"][...]
            columns = h5["observable_indices/walker/joints_pos"][...]
            np.testing.assert_array_equal(episode.actions, group["actions"][...])
            np.testing.assert_array_equal(episode.rewards, group["rewards"][...].astype(np.float64))
            np.testing.assert_array_equal(episode.observations["walker"]["joints_pos"], proprio[:, columns])
            np.testing.assert_array_equal(episode.infos["mean_actions"][:-1], group["mean_actions"][...])
            early = bool(h5[f"{info['snippet_id']}/early_termination"][info["rollout"]])
        assert bool(episode.terminations[-1]) == early and bool(episode.truncations[-1]) != early
        assert info["random_start"] == (info["rollout"] >= N_START)


def test_minari_recovers_a_matching_environment(minari_root, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    dataset = minari.load_dataset("mocapact/CMU_016_22/expert-v0")
    assert dataset.env_spec.kwargs["clips"] == "CMU_016_22-0-82"
    assert dataset.env_spec.kwargs["observables"] == "all_proprioceptive"
    for eval_env in (False, True):
        env = dataset.recover_environment(eval_env=eval_env)
        try:
            assert env.observation_space == dataset.observation_space
            observation, _ = env.reset(seed=0)
            assert dataset.observation_space.contains(observation)
            observation, *_ = env.step(np.zeros(56, np.float32))
            assert set(observation["walker"]) == {k.split("/")[1] for k in OBSERVATION_SETS["all_proprioceptive"]}
        finally:
            env.close()


# -- hub download (offline, against a Hugging Face cache built here) ----------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_hf_cache(hf_home: Path, repo_folder: str, files: dict[str, bytes]) -> None:
    """Files laid out as huggingface_hub caches them: blobs by hash, a snapshot of links, refs/main."""
    repo = hf_home / "hub" / repo_folder
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_hub_download_offline_from_cache(rollouts, tmp_path):
    rollout_bytes = (rollouts / "CMU_016_22.hdf5").read_bytes()
    hf_home = tmp_path / "hf"
    add_to_hf_cache(
        hf_home,
        "datasets--microsoft--mocapact-data",
        {"sample/small.tar.gz": tar_gz({"small/CMU_016_22.hdf5": rollout_bytes})},
    )
    add_to_hf_cache(hf_home, "models--microsoft--mocapact-models", {"gpt.ckpt": b"checkpoint bytes"})
    env = environment(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    local = tmp_path / "downloads"

    run("-m", "mocapact_envs.tools.download", "rollouts-sample-small", "gpt", "--local-dir", local, env=env)
    assert (local / "small" / "CMU_016_22.hdf5").read_bytes() == rollout_bytes
    assert (local / "gpt.ckpt").read_bytes() == b"checkpoint bytes"
    with h5py.File(local / "small" / "CMU_016_22.hdf5", "r") as h5:
        assert h5["CMU_016_22-0-82/0/actions"].shape[1] == 56
    marker = local / ".mocapact-download" / "microsoft" / "mocapact-data" / "sample" / "small.tar.gz.done"
    assert json.loads(marker.read_text())["extracted_members"] == 1

    # A rerun skips what is unpacked: an extracted file changed since stays as it is.
    (local / "small" / "CMU_016_22.hdf5").write_bytes(b"edited")
    again = run("-m", "mocapact_envs.tools.download", "rollouts-sample-small", "--local-dir", local, env=env)
    assert "already unpacked, skipped" in again.stdout
    assert (local / "small" / "CMU_016_22.hdf5").read_bytes() == b"edited"

    missing = run(
        "-m",
        "mocapact_envs.tools.download",
        "rollouts-small",
        "--parts",
        "2",
        "--local-dir",
        local,
        env=env,
        check=False,
    )
    assert missing.returncode == 2
    for expected in ("microsoft/mocapact-data", "all/small/small_2.tar.gz", "HF_HUB_OFFLINE"):
        assert expected in missing.stderr
    unknown = run(
        "-m", "mocapact_envs.tools.download", "experts-everything", "--local-dir", local, env=env, check=False
    )
    assert unknown.returncode == 2 and "experts-all" in unknown.stderr


def test_hub_extraction_refuses_unsafe_members(tmp_path):
    from mocapact_envs.hub import DownloadError, extract_archive

    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_gz({"../outside.txt": b"x"}))
    with pytest.raises(DownloadError, match="outside.txt"):
        extract_archive(archive, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()
