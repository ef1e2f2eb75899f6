"""The expert zoo end to end: tiny experts trained with the real trainer, exported, loaded by snippet id, rolled
out with mocapact-collect (worker processes or Ray), evaluated, tabulated, exported to Minari; the shipped expert stored compactly."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from tiny_runs import REPO_ROOT, TINY_TRAINING, TRAIN, datasets_of, environment, run, train_tiny_experts

import mocapact_envs
from mocapact_envs.datasets.rollouts import read_rollout_file
from mocapact_envs.mocap import splits
from mocapact_envs.mocap.ids import parse_snippet, read_id_file
from mocapact_envs.policies.run_layout import SHIPPED_EXPERTS, find_zoo_expert, zoo_root
from mocapact_envs.tools import zoo

#: Listed snippet -> what its tiny expert trains on: CMU_016_22-0-82 stands for a snippet cropped to its covered part.
TRAINED_ON = {"CMU_016_22-0-82": "CMU_016_22-0-60", "CMU_009_01-0-40": "CMU_009_01-0-40"}
EVALUATED = "CMU_009_01-0-40"


@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory) -> Path:
    """Two tiny experts trained together, one of them evaluated as the sweep does, exported into a zoo."""
    root = tmp_path_factory.mktemp("zoo_runs")
    train_tiny_experts(TRAINED_ON.values(), root / "runs")
    sys.path.insert(0, str(REPO_ROOT / "baselines" / "ppo_expert"))
    import sweep  # the sweep's own final evaluation writes final_evaluation.json

    args = sweep.Args(log_root=str(root / "runs"), final_rsi_episodes=3, final_start_episodes=2, final_num_envs=1)
    sweep.final_evaluation(args, [EVALUATED])
    (root / "listed.txt").write_text("\n".join(TRAINED_ON) + "\n")
    result = run(
        "-m", "mocapact_envs.tools.zoo", "export", "--runs", root / "runs", "--zoo", root / "zoo",
        "--snippet-list", root / "listed.txt", "--include-unevaluated",
    )  # fmt: skip
    assert "2 experts exported" in result.stdout and "(cropped: trained on CMU_016_22-0-60)" in result.stdout
    return root / "zoo"


@pytest.fixture(scope="module")
def zoo_rollouts(zoo_folder, tmp_path_factory) -> Path:
    """The zoo's small dataset of both snippets, collected by two worker processes."""
    output = tmp_path_factory.mktemp("zoo_rollouts")
    result = run(
        "-m", "mocapact_envs.tools.collect", zoo_folder, "--snippets", *TRAINED_ON, "--small",
        "--output-dir", output, "--workers", "2",
    )  # fmt: skip
    assert "2 clip files" in result.stderr
    return output


def test_export_keeps_what_an_expert_acts_with_and_loads_by_snippet_id(zoo_folder):
    runs = zoo_folder.parent / "runs"
    for listed, trained in TRAINED_ON.items():
        copy, original = zoo_folder / "experts" / listed / "0", runs / trained / "0"
        assert sorted(p.name for p in copy.iterdir()) == sorted(
            ["clip_info.json", "eval_rsi", "evaluations.json"]
            + (["final_evaluation.json"] if listed == EVALUATED else [])
        )
        model_files = sorted(p.name for p in (original / "eval_rsi" / "model").iterdir())
        assert sorted(p.name for p in (copy / "eval_rsi" / "model").iterdir()) == model_files
        info = json.loads((copy / "clip_info.json").read_text())
        assert info["snippet_id"] == trained
        assert info["zoo"]["listed_snippet_id"] == listed and info["zoo"]["cropped"] == (listed != trained)
        assert info["zoo"]["covered_steps"] == [parse_snippet(trained).start, parse_snippet(trained).end]
        assert info["zoo"]["weights"] == {"actor_mean": "float16", "critic": "int8"}
        with safe_open(copy / "eval_rsi" / "model" / "model.safetensors", "pt") as weights:
            dtypes = {key: str(weights.get_tensor(key).dtype) for key in weights.keys()}
        assert dtypes["actor_mean.0.weight"] == "torch.float16" and dtypes["critic.0.weight"] == "torch.int8"

        # By zoo folder or experts folder and listed id; the expert tracks what it was trained on.
        expert = mocapact_envs.load_expert(zoo_folder, snippet_id=listed)
        assert expert.snippet_id == trained
        assert mocapact_envs.load_expert(zoo_folder / "experts", listed).path == copy / "eval_rsi" / "model"
        float32 = mocapact_envs.load_expert(original)
        observations = zoo.check_observations(float32, trained, episodes=3)
        deviation = np.abs(expert.predict(observations)[0] - float32.predict(observations)[0]).max()
        assert deviation <= zoo.ACTION_TOLERANCE and info["zoo"]["max_action_deviation"] <= zoo.ACTION_TOLERANCE

    with pytest.raises(ValueError, match=r"no expert for snippet 'CMU_016_22-0-83'.*Did you mean CMU_016_22-0-82"):
        mocapact_envs.load_expert(zoo_folder, "CMU_016_22-0-83")
    with pytest.raises(FileNotFoundError, match="no expert zoo at"):
        mocapact_envs.load_expert(zoo_folder / "missing", "CMU_016_22-0-82")


def test_zoo_experts_roll_out_with_collect_and_evaluate(zoo_folder, zoo_rollouts, tmp_path):
    with read_rollout_file(zoo_rollouts / "CMU_016_22.hdf5") as h5:
        assert [k for k in h5.keys() if k.startswith("CMU_")] == ["CMU_016_22-0-60"]
        assert (int(h5["n_start_rollouts"][...]), int(h5["n_rsi_rollouts"][...])) == (10, 10)
        assert len(h5["CMU_016_22-0-60/start_metrics/episode_lengths"][...]) == 10
    assert (zoo_rollouts / "CMU_009_01.hdf5").is_file()

    bad = run(
        "-m", "mocapact_envs.tools.collect", zoo_folder, "--snippets", "CMU_016_22-0-8", "--output-dir", tmp_path,
        check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "No expert for CMU_016_22-0-8." in bad.stderr and "CMU_016_22-0-82" in bad.stderr

    out = tmp_path / "evaluation"
    run(
        REPO_ROOT / "baselines" / "ppo_expert" / "evaluate.py", zoo_folder / "experts" / "CMU_016_22-0-82" / "0",
        "--rsi-episodes", "2", "--start-episodes", "1", "--num-envs", "1", "--no-video", "--no-plot",
        "--out-dir", out,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clip"] == "CMU_016_22-0-60"
    assert metrics["summary"]["eval_rsi"]["episodes"] == 2 and metrics["summary"]["eval_start"]["episodes"] == 1


def test_table_from_final_evaluations(zoo_folder, mocap_folder):
    clip_lists = mocap_folder / "clip_lists"
    shutil.copy(REPO_ROOT / "zoo" / "README.md", zoo_folder / "README.md")
    run("-m", "mocapact_envs.tools.zoo", "table", "--zoo", zoo_folder, "--clip-lists", clip_lists)
    readme = (zoo_folder / "README.md").read_text()
    assert "`mocapact-zoo table` writes the table here" not in readme and "## Commands" in readme
    rows = {row["snippet"]: row for row in json.loads((zoo_folder / "table.json").read_text())}
    final = json.loads((zoo_folder / "experts" / EVALUATED / "0" / "final_evaluation.json").read_text())
    evaluated = rows[EVALUATED]
    assert evaluated["rsi_norm_length"] == round(final["eval_rsi"]["mean_norm_episode_length"], 3)
    assert evaluated["start_norm_return"] == round(final["eval_start"]["mean_norm_episode_return"], 3)
    assert evaluated["rsi_episodes"] == 3 and evaluated["steps"] == 41
    assert evaluated["start_mean_length"] == round(final["eval_start"]["mean_episode_length"], 1)
    locomotion = set(read_id_file(clip_lists / splits.LOCOMOTION_LIST))
    validation = set(read_id_file(clip_lists / splits.VALIDATION_LIST))
    for snippet, row in rows.items():
        expected = [k for k, yes in (("locomotion", snippet in locomotion), ("validation", snippet[:10] in validation)) if yes]  # fmt: skip
        assert row["kind"] == (", ".join(expected) or "-")
    assert "| CMU_016_22-0-82 (cropped: trained on 0-60) |" in readme and "not evaluated" in readme
    # Every listed snippet has a row: those without an expert say so, and the summary counts them by length.
    held = {snippet for snippet, row in rows.items() if row.get("trained", True)}
    listed = set(read_id_file(clip_lists / splits.ZOO_SNIPPET_LIST))
    assert set(rows) == listed | held and len(held) == 2
    assert f"| {sorted(listed - held)[0]} |" in readme and "not trained yet" in readme
    assert f"{len(listed - held)} listed snippets not trained yet" in readme
    assert re.search(r"up to 50 steps: 1 of \d+ evaluated, median 0\.\d{3}", readme)
    for figure in ("distributions.png", "tracked_steps.png"):
        assert (zoo_folder / "figures" / figure).read_bytes()[:4] == b"\x89PNG"


def score(run_dir: Path) -> tuple[float, float]:
    """The mean normalized length from both starts, then the mean normalized return, read from the final evaluation."""
    final = json.loads((run_dir / "final_evaluation.json").read_text())
    kinds = (final["eval_rsi"], final["eval_start"])
    return tuple(sum(k[f"mean_norm_episode_{m}"] for k in kinds) / 2 for m in ("length", "return"))


def test_a_retrain_replaces_only_the_experts_it_beats_and_the_table_keeps_the_previous_figures(
    zoo_folder, mocap_folder, tmp_path
):
    zoo_v2, clip_lists, listed = tmp_path / "zoo", mocap_folder / "clip_lists", zoo_folder.parent / "listed.txt"
    shutil.copytree(zoo_folder, zoo_v2)
    shutil.copy(REPO_ROOT / "zoo" / "README.md", zoo_v2 / "README.md")
    run("-m", "mocapact_envs.tools.zoo", "table", "--zoo", zoo_v2, "--clip-lists", clip_lists)
    previous = tmp_path / "table_v1.json"
    shutil.copy(zoo_v2 / "table.json", previous)
    old_rows = {row["snippet"]: row for row in json.loads(previous.read_text())}

    # The retrain: seed 1 of both snippets, evaluated as the sweep evaluates.
    runs, flags = tmp_path / "runs_v2", list(TINY_TRAINING)
    flags[flags.index("--seed") + 1] = "1"
    run(TRAIN, "--clips", *TRAINED_ON.values(), *flags, "--log-root", runs)
    sys.path.insert(0, str(REPO_ROOT / "baselines" / "ppo_expert"))
    import sweep

    sweep_args = sweep.Args(log_root=str(runs), seed=1, final_rsi_episodes=3, final_start_episodes=2, final_num_envs=1)
    sweep.final_evaluation(sweep_args, list(TRAINED_ON.values()))

    export = ["-m", "mocapact_envs.tools.zoo", "export", "--zoo", zoo_v2, "--snippet-list", listed, "--only-better"]
    result = run(*export, "--runs", runs)
    # The zoo's CMU_016_22 expert was never evaluated, so the evaluated retrain replaces it; CMU_009_01's goes to the
    # higher score of the two real evaluations.
    assert sorted(p.name for p in (zoo_v2 / "experts" / "CMU_016_22-0-82").iterdir()) == ["1"]
    new_wins = score(runs / EVALUATED / "1") > score(zoo_folder / "experts" / EVALUATED / "0")
    assert sorted(p.name for p in (zoo_v2 / "experts" / EVALUATED).iterdir()) == (["1"] if new_wins else ["0"])
    assert f"{EVALUATED}: {'replaces' if new_wins else 'keeps'} " in result.stdout
    assert f"{2 if new_wins else 1} experts exported" in result.stdout
    assert f"{0 if new_wins else 1} current experts kept (not beaten)" in result.stdout
    # Exported again, the runs now in the zoo tie with themselves and change nothing.
    again = run(*export, "--runs", runs, zoo_folder.parent / "runs")
    assert re.search(r"0 experts exported .*, [12] current experts kept \(not beaten\)", again.stdout), again.stdout
    assert sorted(p.name for p in (zoo_v2 / "experts" / EVALUATED).iterdir()) == (["1"] if new_wins else ["0"])

    run("-m", "mocapact_envs.tools.zoo", "table", "--zoo", zoo_v2, "--clip-lists", clip_lists, "--previous", previous)
    rows = {row["snippet"]: row for row in json.loads((zoo_v2 / "table.json").read_text())}
    assert rows[EVALUATED]["previous_rsi_norm_length"] == old_rows[EVALUATED]["rsi_norm_length"]
    assert rows[EVALUATED]["previous_start_norm_return"] == old_rows[EVALUATED]["start_norm_return"]
    assert "previous_rsi_norm_length" not in rows["CMU_016_22-0-82"]  # its previous expert had no evaluation
    readme = (zoo_v2 / "README.md").read_text()
    assert "previous zoo: norm. length, random starts" in readme
    on_same = re.search(r"On the 1 snippets the previous zoo also evaluated, this zoo: From random starts: "
                        r"normalized length median ([0-9.]+) .* The previous zoo: From random starts: normalized "
                        r"length median ([0-9.]+) ", readme)  # fmt: skip
    assert on_same, readme
    assert float(on_same[1]) == round(rows[EVALUATED]["rsi_norm_length"], 3)
    assert float(on_same[2]) == round(old_rows[EVALUATED]["rsi_norm_length"], 3)

    missing = run(
        "-m", "mocapact_envs.tools.zoo", "table", "--zoo", zoo_v2, "--previous", tmp_path / "no.json", check=False
    )
    assert missing.returncode == 2 and f"previous table {tmp_path / 'no.json'} does not exist" in missing.stderr
    malformed = tmp_path / "malformed.json"
    for content, why in (
        ({"snippet": EVALUATED}, "not a list of rows"),
        ([{"rsi": 1}], "row 0 has no snippet"),
        ([{"snippet": EVALUATED, "rsi_norm_length": "0.9"}], f"{EVALUATED}'s rsi_norm_length is '0.9', not a number"),
    ):
        malformed.write_text(json.dumps(content))
        table = ["-m", "mocapact_envs.tools.zoo", "table", "--zoo", zoo_v2, "--clip-lists", clip_lists]
        result = run(*table, "--previous", malformed, check=False)
        assert result.returncode == 2 and f"is not a zoo's table.json: {why}." in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    both = run(*export, "--runs", runs, "--include-unevaluated", check=False)
    assert both.returncode == 2 and "--only-better compares final evaluations" in both.stderr


def test_a_retrain_is_weighed_against_the_seed_the_zoo_loads_and_a_cropped_run_finds_its_zoo_snippet(
    zoo_folder, tmp_path
):
    # The zoo holds seeds 2 and 10 of a snippet: it loads 2 (the smallest number; "10" sorts first as text). Seed 2
    # is made worse than the run to export, seed 10 as good: weighed against seed 2, the run replaces both.
    zoo_copy = tmp_path / "zoo"
    shutil.copytree(zoo_folder, zoo_copy)
    seeds = zoo_copy / "experts" / EVALUATED
    (seeds / "0").rename(seeds / "2")
    shutil.copytree(seeds / "2", seeds / "10")
    final = json.loads((seeds / "2" / "final_evaluation.json").read_text())
    for kind in ("eval_rsi", "eval_start"):
        final[kind] |= {"mean_norm_episode_length": 0.0, "mean_norm_episode_return": 0.0}
    (seeds / "2" / "final_evaluation.json").write_text(json.dumps(final))
    assert find_zoo_expert(zoo_copy, EVALUATED).seed == "2"

    listed = zoo_folder.parent / "listed.txt"
    result = run(
        "-m", "mocapact_envs.tools.zoo", "export", "--zoo", zoo_copy, "--snippet-list", listed, "--only-better",
        "--runs", zoo_folder.parent / "runs",
    )  # fmt: skip
    assert f"{EVALUATED}: replaces {seeds / '2'} " in result.stdout, result.stdout
    assert sorted(p.name for p in seeds.iterdir()) == ["0"]
    assert find_zoo_expert(zoo_copy, EVALUATED).seed == "0"

    # A cropped run that the snippet list does not name goes under the zoo's snippet that holds its trained part.
    runs, cropped = tmp_path / "runs", TRAINED_ON["CMU_016_22-0-82"]
    shutil.copytree(zoo_folder.parent / "runs" / cropped, runs / cropped)
    sys.path.insert(0, str(REPO_ROOT / "baselines" / "ppo_expert"))
    import sweep

    args = sweep.Args(log_root=str(runs), final_rsi_episodes=3, final_start_episodes=2, final_num_envs=1)
    sweep.final_evaluation(args, [cropped])
    (tmp_path / "only_one.txt").write_text(EVALUATED + "\n")
    result = run(
        "-m", "mocapact_envs.tools.zoo", "export", "--zoo", zoo_copy, "--snippet-list", tmp_path / "only_one.txt",
        "--only-better", "--runs", runs,
    )  # fmt: skip
    assert "CMU_016_22-0-82: replaces " in result.stdout and "(cropped: trained on CMU_016_22-0-60)" in result.stdout
    assert not (zoo_copy / "experts" / cropped).exists()
    assert (zoo_copy / "experts" / "CMU_016_22-0-82" / "0" / "final_evaluation.json").is_file()


def test_minari_export_of_two_zoo_snippets_loads_and_its_env_steps(zoo_rollouts, mocap_folder, tmp_path, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    result = run(
        "-m", "mocapact_envs.tools.minari_export", zoo_rollouts, "--zoo", "small", "--ref-min-episodes", "2",
        env=environment(MINARI_DATASETS_PATH=str(tmp_path / "minari")),
    )  # fmt: skip
    assert "mocapact/zoo/small-v0: 40 episodes" in result.stderr
    dataset = minari.load_dataset("mocapact/zoo/small-v0")
    assert dataset.total_episodes == 40
    episodes = list(dataset.storage.get_episode_metadata(range(dataset.total_episodes)))
    assert sorted({m["snippet_id"] for m in episodes}) == sorted(TRAINED_ON.values())
    metadata = dataset.storage.metadata
    assert str(mocap_folder.resolve()) in metadata["reference_source"]
    env = dataset.recover_environment()
    assert sorted(env.spec.kwargs["clips"]) == sorted(TRAINED_ON.values())
    assert env.spec.kwargs["reference_digest"] == metadata["reference_digest"]
    observation, _ = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    episode = next(dataset.iterate_episodes())
    observation, reward, terminated, truncated, _ = env.step(episode.actions[0])
    assert np.isfinite(reward) and env.observation_space.contains(observation)
    env.close()

    mismatch = run(
        "-m", "mocapact_envs.tools.minari_export", zoo_rollouts, "--zoo", "large",
        env=environment(MINARI_DATASETS_PATH=str(tmp_path / "minari")), check=False,
    )  # fmt: skip
    assert mismatch.returncode == 2 and "not the large preset's 100 + 100" in mismatch.stderr


def test_shipped_expert_stored_compactly_acts_as_its_float32_original(tmp_path):
    shipped = next(SHIPPED_EXPERTS.glob("*/0"))
    exported = zoo.export_expert(shipped, tmp_path / "zoo")
    original_weights = shipped / "eval_rsi" / "model" / "model.safetensors"
    copy_weights = exported.expert.run_dir / "eval_rsi" / "model" / "model.safetensors"
    # A 2 x 256 actor-critic: float16 policy and int8 critic take under 40% of float32; 84 fit in 40 MB.
    assert copy_weights.stat().st_size < 0.4 * original_weights.stat().st_size
    assert exported.size_bytes * 84 < 40e6
    assert exported.storage == zoo.DEFAULT_STORAGE
    original = mocapact_envs.load_expert(shipped)
    copy = mocapact_envs.load_expert(tmp_path / "zoo", exported.expert.listed_id)
    observations = zoo.check_observations(original, original.snippet_id, episodes=4)
    assert np.abs(copy.predict(observations)[0] - original.predict(observations)[0]).max() <= zoo.ACTION_TOLERANCE
    values = original.value(observations)
    assert np.abs(copy.value(observations) - values).max() <= 0.05 * np.abs(values).mean()


def test_collect_on_ray_writes_what_worker_processes_write(zoo_folder, tmp_path):
    collect = ["-m", "mocapact_envs.tools.collect", zoo_folder, "--snippets", EVALUATED]
    collect += ["--n-start-rollouts", "1", "--n-rsi-rollouts", "1"]
    on_ray = run(*collect, "--output-dir", tmp_path / "ray", "--address", "local")
    assert "Ray tasks (local)" in on_ray.stderr and "1 clip files" in on_ray.stderr
    run(*collect, "--output-dir", tmp_path / "local")
    ray_file, local_file = (datasets_of(tmp_path / where / "CMU_009_01.hdf5") for where in ("ray", "local"))
    assert ray_file.keys() == local_file.keys()
    for key, values in local_file.items():
        np.testing.assert_array_equal(ray_file[key], values, err_msg=key)
    # A finished clip is not collected again.
    assert "already collected, skipped" in run(*collect, "--output-dir", tmp_path / "ray", "--address", "local").stderr


def test_trained_snippets_find_the_listed_snippet_that_holds_them():
    from mocapact_envs.mocap.ids import parse_snippet
    from mocapact_envs.tools.zoo import listed_ids_by_trained

    listed = ["CMU_009_10-0-33", "CMU_032_02-0-117", "CMU_016_22-0-82", "CMU_009_12-0-210", "CMU_009_12-177-387"]
    trained = ["CMU_009_10-2-33", "CMU_032_02-0-87", "CMU_016_22-0-82", "CMU_009_12-180-300", "CMU_009_12-180-209"]
    assert listed_ids_by_trained(map(parse_snippet, trained), listed) == {
        "CMU_009_10-2-33": "CMU_009_10-0-33",  # broken first steps cropped off
        "CMU_032_02-0-87": "CMU_032_02-0-117",  # cropped to the converted clip's end
        "CMU_016_22-0-82": "CMU_016_22-0-82",
        "CMU_009_12-180-300": "CMU_009_12-177-387",
        "CMU_009_12-180-209": "CMU_009_12-180-209",  # inside both overlapping snippets: no one holder
    }


def test_zoo_multiclip_policy_ships_its_decoder_and_reproduces_its_evaluation(tmp_path):
    import torch

    from mocapact_envs.evaluation.protocol import evaluate_units
    from mocapact_envs.policies.low_level import SHIPPED_LOW_LEVEL_POLICY, LowLevelPolicy
    from mocapact_envs.policies.multiclip import MultiClipPolicy

    folder = zoo_root() / zoo.MULTICLIP_FOLDER / "npmp_bc"
    policy = MultiClipPolicy.load(folder)
    shipped = LowLevelPolicy.load(SHIPPED_LOW_LEVEL_POLICY)
    assert shipped.config.extra["source"] == "zoo/multiclip/npmp_bc"
    decoder = policy.decoder.state_dict()
    assert all(torch.equal(tensor, decoder[name]) for name, tensor in shipped.state_dict().items())

    report = json.loads((folder / zoo.MULTICLIP_EVALUATION_FILE).read_text())
    train = report["modes"]["train"]
    assert set(train["snippets"]) == set(policy.config.trained_snippets)
    assert not set(policy.config.trained_snippets) & set(report["modes"]["val"]["snippets"]), "val is held out"
    label = report["zoo_policy_label"]
    recorded = train["policies"][label]["snippets"]
    # The shortest training snippet again, under the same protocol and seed: the recorded figures come back.
    snippet = min(recorded, key=lambda s: parse_snippet(s).end - parse_snippet(s).start)
    again = evaluate_units(
        {label: str(folder)}, {}, [(label, snippet)], report["episodes"], ref_steps=policy.config.ref_steps
    )
    for kind in ("start", "rsi"):
        assert again[label][snippet][kind]["mean_norm_episode_length"] == pytest.approx(
            recorded[snippet][kind]["mean_norm_episode_length"], abs=0.05
        )
    # The experts beside it ran too, and the policy keeps most of their random-start length on that snippet.
    assert train["policies"][label]["ratios"][snippet]["rsi"] > 0.5

    # Shipping again writes the same files (to a scratch zoo and a scratch decoder folder).
    target = zoo.add_multiclip_policy(folder, "copy", folder / zoo.MULTICLIP_EVALUATION_FILE, tmp_path, False, label)
    assert (target / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="plain folder name"):
        zoo.add_multiclip_policy(folder, "../escape", None, tmp_path)
    with pytest.raises(ValueError, match="label 'nope' is not one of .*bc"):
        zoo.add_multiclip_policy(folder, "copy", folder / zoo.MULTICLIP_EVALUATION_FILE, tmp_path, False, "nope")
