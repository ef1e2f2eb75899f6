"""Multi-clip distillation on real rollouts: train, resume, evaluate, export, reuse the decoder."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tiny_runs import COLLECT, N_RSI, N_START, REPO_ROOT, SEED, SNIPPETS, environment, run, train_tiny_experts

from mocapact_envs.datasets import ExpertDataset
from mocapact_envs.evaluation.protocol import EXPERT_LABEL, evaluate_units
from mocapact_envs.mocap.ids import amc_file_clip_id, parse_snippet, read_id_file
from mocapact_envs.policies.expert_files import load_expert
from mocapact_envs.policies.low_level import LowLevelPolicy
from mocapact_envs.policies.multiclip import MultiClipPolicy, MultiClipPolicyConfig
from mocapact_envs.training.run_folder import load_checkpoint

pytestmark = pytest.mark.xdist_group("rollouts")
TRAIN = REPO_ROOT / "baselines" / "distill" / "train.py"
EVALUATE = REPO_ROOT / "baselines" / "distill" / "evaluate.py"
TINY = ["--hidden-size", "32", "--batch-size", "8", "--seq-steps", "5", "--eval-episodes", "1", "--eval-snippets", "2"]
#: A snippet of MoCapAct's list on one of its validation clips (36 steps), beside the session's training-clip snippets.
VALIDATION_SNIPPET = "CMU_009_05-0-36"


def test_npmp_trains_resumes_evaluates_and_exports(rollouts, tmp_path):
    run_dir = tmp_path / "npmp"
    first = run(TRAIN, "--rollouts", rollouts, "--run-dir", run_dir, *TINY, "--total-steps", "20", "--eval-every", "10",
                "--checkpoint-every", "10")  # fmt: skip
    assert "done" in first.stdout
    assert load_checkpoint(run_dir)["step"] == 20
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    second = run(TRAIN, "--rollouts", rollouts, "--run-dir", run_dir, *TINY, "--total-steps", "30", "--eval-every", "10",
                 "--checkpoint-every", "10")  # fmt: skip
    assert "resuming" in second.stdout and "at step 20" in second.stdout
    assert load_checkpoint(run_dir)["step"] == 30

    policy = MultiClipPolicy.load(run_dir / "best")
    assert policy.config.kind == "npmp" and len(policy.config.trained_snippets) == 4
    decoder = LowLevelPolicy.load(run_dir / "best" / "low_level_policy")
    base = np.random.default_rng(0).normal(size=(3, 205)).astype(np.float32)
    latent = np.random.default_rng(1).normal(size=(3, 60)).astype(np.float32)
    np.testing.assert_allclose(decoder.act(base, latent), policy.decoder.act(base, latent), rtol=1e-6)

    metrics_path = tmp_path / "metrics.json"
    video = tmp_path / "npmp.mp4"
    run(EVALUATE, "--policy", run_dir / "best", "--modes", "train", "--episodes", "1", "--output-json", metrics_path,
        "--video", video)  # fmt: skip
    metrics = json.loads(metrics_path.read_text())["modes"]["train"]["policies"][str(run_dir / "best")]
    assert set(metrics["snippets"]) == set(policy.config.trained_snippets)
    for result in metrics["snippets"].values():
        for kind in ("start", "rsi"):
            assert 0 < result[kind]["mean_norm_episode_length"] <= 1.0
    assert video.stat().st_size > 10_000

    # The exported decoder drives a transfer task through the low-level action wrapper.
    drive = run("-c", (
        "import gymnasium as gym, numpy as np, mocapact_envs\n"
        f"env = gym.make('mocapact/GoToTarget-v0', low_level_policy=r'{run_dir / 'best' / 'low_level_policy'}')\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert env.action_space.shape == (60,), env.action_space\n"
        "for _ in range(5):\n"
        "    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())\n"
        "print('drove', sum(v.size for v in obs.values()))\n"
    ))  # fmt: skip
    assert "drove 227" in drive.stdout


def test_kill_checkpoints_the_last_whole_step_and_the_run_goes_on(rollouts, tmp_path):
    run_dir = tmp_path / "killed"
    command = [sys.executable, str(TRAIN), "--rollouts", str(rollouts), "--run-dir", str(run_dir), *TINY,
               "--total-steps", "100000", "--eval-every", "100000", "--checkpoint-every", "5"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment(), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoint" / "state.pt").is_file():  # it trains: a first checkpoint is written
        assert process.poll() is None and time.monotonic() < deadline, "the run never wrote a checkpoint"
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 130, stdout
    step = load_checkpoint(run_dir)["step"]
    assert step >= 5 and f"stopped by SIGTERM at step {step}" in stdout
    again = run(TRAIN, "--rollouts", rollouts, "--run-dir", run_dir, *TINY, "--total-steps", str(step + 3),
                "--eval-every", "100000")  # fmt: skip
    assert f"at step {step}" in again.stdout and load_checkpoint(run_dir)["step"] == step + 3


def test_mlp_policy_trains(rollouts, tmp_path):
    run(TRAIN, "--rollouts", rollouts, "--run-dir", tmp_path, "--policy", "mlp", "--weighting", "awr", *TINY,
        "--total-steps", "10", "--eval-every", "10")  # fmt: skip
    assert MultiClipPolicy.load(tmp_path / "best").config.kind == "mlp"
    assert not (tmp_path / "best" / "low_level_policy").exists()


@pytest.mark.parametrize("kind", ["npmp", "mlp"])
def test_loss_falls_on_real_rollouts(rollouts, kind):
    torch.manual_seed(0)
    dataset = ExpertDataset([rollouts], "high_level", seq_steps=5)
    sizes = tuple(s.stop - s.start for s in dataset.observable_slices.values())
    policy = MultiClipPolicy(
        MultiClipPolicyConfig(kind=kind, observation_keys=dataset.observable_keys, observation_sizes=sizes,
                              encoder_hidden_sizes=(64, 64), decoder_hidden_sizes=(64,) * 3, mlp_hidden_sizes=(64,) * 3)
    )  # fmt: skip
    policy.set_observation_statistics(dataset.obs_mean, dataset.obs_std)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    batch = [torch.from_numpy(x) for x in dataset.batch(np.arange(0, len(dataset), max(1, len(dataset) // 32)))]
    losses = []
    for _ in range(40):
        loss, _ = policy.sequence_loss(*batch, kl_weight=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_bad_policy_kind_is_named():
    with pytest.raises(ValueError, match="unknown policy kind 'vae'.*npmp, mlp"):
        MultiClipPolicyConfig(kind="vae", observation_sizes=(1,) * 12)


# -- MoCapAct's split: train on the training clips, evaluate in its modes ----------------------


@pytest.fixture(scope="module")
def validation_experts(tmp_path_factory, mocap_folder) -> Path:
    """A tiny expert on a snippet of one of MoCapAct's validation clips, trained as a user trains one."""
    validation = read_id_file(mocap_folder / "clip_lists" / "mocapact_val_clips.txt")
    assert parse_snippet(VALIDATION_SNIPPET).clip_id in validation
    assert not {parse_snippet(s).clip_id for s in SNIPPETS} & set(validation)
    root = tmp_path_factory.mktemp("validation_experts")
    train_tiny_experts([VALIDATION_SNIPPET], root)
    return root


@pytest.fixture(scope="module")
def split_run(rollouts, validation_experts, tmp_path_factory):
    """The distillation of the session's rollouts and the validation-clip expert's, as a user runs it."""
    validation_rollouts = tmp_path_factory.mktemp("validation_rollouts")
    run(*COLLECT, validation_experts, "--output-dir", validation_rollouts, "--seed", SEED)
    run_dir = tmp_path_factory.mktemp("split_run")
    result = run(TRAIN, "--rollouts", rollouts, validation_rollouts, "--run-dir", run_dir, *TINY,
                 "--total-steps", "10", "--eval-every", "10")  # fmt: skip
    return run_dir, validation_rollouts, result.stdout


def test_training_leaves_out_validation_clip_rollouts(split_run, rollouts):
    run_dir, validation_rollouts, stdout = split_run
    policy = MultiClipPolicy.load(run_dir / "best")
    assert set(policy.config.trained_snippets) == set(SNIPPETS)
    assert policy.config.held_out_snippets == (VALIDATION_SNIPPET,)
    assert f"left out 1 snippets on MoCapAct's validation clips (held out): {VALIDATION_SNIPPET}" in stdout

    # Without the filter the same files do train on the validation clip; with it, its file is left out
    # whole, so the observation statistics are those of the training clips' files alone.
    everything = ExpertDataset([rollouts, validation_rollouts], "high_level")
    assert VALIDATION_SNIPPET in everything.files.snippet_norm_returns
    split = ExpertDataset([rollouts, validation_rollouts], "high_level", exclude_clips={"CMU_009_05"})
    training_only = ExpertDataset([rollouts], "high_level")
    assert split.files.excluded_snippets == [VALIDATION_SNIPPET]
    assert split.files.paths == training_only.files.paths
    np.testing.assert_array_equal(split.obs_mean, training_only.obs_mean)
    assert not np.array_equal(everything.obs_mean, training_only.obs_mean)


@pytest.fixture(scope="module")
def few_clips_mocap(tmp_path_factory, mocap_folder) -> Path:
    """A mocap folder of real clips with subjects 9, 16 and 141 only (141's clips are outside dm_control's ALL),
    so the 'extra' mode has three short clips to run rather than the shared folder's 17."""
    folder = tmp_path_factory.mktemp("few_clips_mocap")
    for subject in ("09", "16", "141"):
        (folder / "subjects" / subject).mkdir(parents=True)
        for source in (mocap_folder / "subjects" / subject).iterdir():
            (folder / "subjects" / subject / source.name).symlink_to(source)
    (folder / "clip_lists").symlink_to(mocap_folder / "clip_lists")
    return folder


def test_evaluate_in_mocapact_modes_writes_json_and_plot(
    split_run, experts_root, validation_experts, few_clips_mocap, mocap_folder, tmp_path
):
    run_dir, _, _ = split_run
    policy = MultiClipPolicy.load(run_dir / "best")
    metrics_path, plot = tmp_path / "modes.json", tmp_path / "ratios.png"
    env = environment(MOCAPACT_MOCAP_PATH=str(few_clips_mocap))
    run(EVALUATE, "--policy", run_dir / "best", "--labels", "npmp", "--experts", experts_root, validation_experts,
        "--modes", "train", "val", "extra", "--episodes", "1", "--output-json", metrics_path, "--plot", plot,
        "--workers", "2", env=env)  # fmt: skip
    report = json.loads(metrics_path.read_text())
    modes = report["modes"]
    assert set(modes) == {"train", "val", "extra"}
    assert set(modes["train"]["snippets"]) == set(policy.config.trained_snippets)
    assert modes["val"]["snippets"] == [VALIDATION_SNIPPET]

    # Extra: every clip of the folder outside dm_control's ALL, whole (its last step about frames / 3.6).
    all_clips = set(read_id_file(mocap_folder / "clip_lists" / "ALL.txt"))
    amc_files = {amc_file_clip_id(p): p for p in few_clips_mocap.glob("subjects/*/*.amc")}
    outside = {clip for clip in amc_files if clip not in all_clips}
    extra = [parse_snippet(s) for s in modes["extra"]["snippets"]]
    assert outside and {s.clip_id for s in extra} == outside
    frames = {
        row.split("\t")[0]: int(row.split("\t")[2]) for row in (mocap_folder / "clips.tsv").read_text().splitlines()[1:]
    }
    for snippet in extra:
        assert snippet.start == 0 and abs(snippet.end - frames[snippet.clip_id] / 3.6) < 2

    for mode, entry in modes.items():
        results = entry["policies"]["npmp"]
        assert set(results["snippets"]) == set(entry["snippets"])
        for result in results["snippets"].values():
            for kind in ("start", "rsi"):
                assert 0 < result[kind]["mean_norm_episode_length"] <= 1.0
        # Experts ran where the folders hold one: the session's four and the validation-clip expert.
        expected_experts = set() if mode == "extra" else set(entry["snippets"])
        assert set(entry["experts"]["snippets"]) == expected_experts == set(results["ratios"])
        for snippet, ratio in results["ratios"].items():
            expert = entry["experts"]["snippets"][snippet]
            for kind in ("start", "rsi"):
                own = results["snippets"][snippet][kind]["mean_norm_episode_length"]
                assert ratio[kind] == pytest.approx(own / expert[kind]["mean_norm_episode_length"])
        for kind in ("start", "rsi") if results["ratios"] else ():
            own = np.mean([results["snippets"][s][kind]["mean_norm_episode_length"] for s in results["ratios"]])
            theirs = np.mean(
                [entry["experts"]["snippets"][s][kind]["mean_norm_episode_length"] for s in results["ratios"]]
            )
            assert results["ratio_of_means"][kind] == pytest.approx(own / theirs)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000

    # Two worker processes gave what this process gives alone: each run is seeded alike.
    snippet = modes["train"]["snippets"][-1]
    alone = evaluate_units(
        {"npmp": str(run_dir / "best")}, {}, [("npmp", snippet)], 1, ref_steps=policy.config.ref_steps
    )
    assert alone["npmp"][snippet] == modes["train"]["policies"]["npmp"]["snippets"][snippet]


def test_reuse_takes_an_earlier_reports_results_and_evaluates_only_the_changed_snippets(
    split_run, experts_root, tmp_path
):
    run_dir, _, _ = split_run
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    common = ["--policy", run_dir / "best", "--labels", "npmp", "--experts", experts_root, "--modes", "train"]
    run(EVALUATE, *common, "--episodes", "1", "--output-json", first)
    earlier = json.loads(first.read_text())["modes"]["train"]
    changed = earlier["snippets"][0]
    result = run(
        EVALUATE, *common, "--episodes", "1", "--reuse", first, "--reevaluate", changed, "--output-json", second
    )
    assert "evaluating 2 runs" in result.stdout  # the changed snippet's policy and expert runs, nothing else
    again = json.loads(second.read_text())
    assert again["reused"]["reevaluated"] == [changed]
    # Reused results stand as recorded; the changed snippet, evaluated again under the same seed, comes back too.
    assert again["modes"]["train"]["policies"]["npmp"] == earlier["policies"]["npmp"]
    assert again["modes"]["train"]["experts"] == earlier["experts"]
    other = run(EVALUATE, *common, "--reuse", first, "--episodes", "2", "--output-json", second, check=False)
    assert other.returncode == 2 and "evaluated with other settings (episodes" in other.stderr


def test_evaluate_names_bad_modes_and_missing_validation_experts(split_run, experts_root, tmp_path):
    run_dir, _, _ = split_run
    bad_mode = run(EVALUATE, "--policy", run_dir / "best", "--modes", "test", check=False)
    assert bad_mode.returncode != 0 and "test" in bad_mode.stderr
    assert all(choice in bad_mode.stderr for choice in ("train", "val", "extra"))
    no_validation = run(EVALUATE, "--policy", run_dir / "best", "--modes", "val", "--experts", experts_root,
                        check=False)  # fmt: skip
    assert no_validation.returncode == 2
    assert f"expert folders {experts_root} hold no snippet on MoCapAct's validation clips" in no_validation.stderr

    # A policy that does not record its training snippets has no 'train' mode.
    trained = MultiClipPolicy.load(run_dir / "best")
    unrecorded = MultiClipPolicy(dataclasses.replace(trained.config, trained_snippets=()))
    unrecorded.load_state_dict(trained.state_dict())
    unrecorded.save(tmp_path / "unrecorded")
    no_train = run(EVALUATE, "--policy", tmp_path / "unrecorded", "--modes", "train", check=False)
    assert no_train.returncode == 2
    assert "does not record the snippets it trained on" in no_train.stderr
    assert "choices: train, val, extra" in no_train.stderr


def test_experts_sample_under_the_policies_protocol(experts_root):
    """``experts_sample``: each expert samples its actions as the policies do, seeded alike wherever it runs."""
    snippet = "CMU_009_01-0-40"
    experts = {snippet: str(experts_root / snippet / "0")}

    def returns(sample: bool) -> dict:
        result = evaluate_units({}, experts, [(EXPERT_LABEL, snippet)], 2, ref_steps=(1, 2, 3, 4, 5),
                                experts_sample=sample)  # fmt: skip
        return {kind: summary["mean_episode_return"] for kind, summary in result[EXPERT_LABEL][snippet].items()}

    sampled = returns(True)
    assert sampled == returns(True)
    assert sampled != returns(False)


def test_student_driven_rollouts_label_the_drivers_states(split_run, experts_root, tmp_path):
    """DAgger's data: the distilled policy acts, the snippet's expert labels every state it reaches."""
    run_dir, _, _ = split_run
    driver, snippet, clip = run_dir / "best", "CMU_009_01-0-40", "CMU_009_01"
    policy, expert = MultiClipPolicy.load(driver), load_expert(experts_root / snippet / "0")
    output = tmp_path / "driven"
    collect = [
        *COLLECT,
        experts_root,
        "--clips",
        clip,
        "--output-dir",
        output,
        "--seed",
        SEED,
        "--driver-policy",
        driver,
    ]
    run(*collect, "--driver-deterministic")
    with h5py.File(output / f"{clip}.hdf5", "r") as h5:
        assert h5.attrs["driver_policy"] == f"{driver} (deterministic)"
        indices = {f"walker/{k}": v[...] for k, v in h5["observable_indices/walker"].items()}
        for episode in range(N_START + N_RSI):
            data = h5[f"{snippet}/{episode}"]
            states = data["observations/proprioceptive"][:-1]
            observations = {key: states[:, columns] for key, columns in indices.items()}
            # Replayed on the recorded states, the driver gives the recorded actions ...
            latent, replayed = None, []
            for step in range(len(states)):
                here = {key: value[step : step + 1] for key, value in observations.items()}
                action, latent = policy.act(policy.flatten_observation(here), latent, deterministic=True)
                replayed.append(action[0])
            np.testing.assert_allclose(data["actions"][...], np.stack(replayed), atol=1e-5)
            # ... and the labels are the expert's means on those states, not the driver's actions.
            labels, _ = expert.predict(observations, deterministic=True)
            np.testing.assert_allclose(data["mean_actions"][...], labels, atol=1e-5)
            assert np.abs(data["actions"][...] - labels).mean() > 0.01

    # The folder records its driver: a rerun with another one is refused by name.
    other = run(*collect, check=False)
    assert other.returncode == 2
    assert "driver_deterministic is True in the file, False in this run" in " ".join(other.stderr.split())
