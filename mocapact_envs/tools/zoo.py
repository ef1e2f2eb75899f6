"""The expert zoo: one compact clip expert per MoCapAct snippet, in MoCapAct's layout.

    zoo/
      README.md                    the table and figures (``mocapact-zoo table``), the commands
      figures/                     distributions of the experts' evaluations, frames with the ghost
      experts/<snippet>/<seed>/    one expert per listed snippet id (``mocapact-zoo export``)
      multiclip/<name>/            a multi-clip policy distilled from the experts (``mocapact-zoo multiclip``)
        clip_info.json             the snippet it was trained on; ``"zoo"``: the listed id, the covered
                                   steps, how the weights are stored and what that costs in accuracy
        eval_rsi/model/            config.json (with the snippet and digest of its reference actions, which
                                   load from the mocap source), model.safetensors (compact), normalizer.safetensors
        evaluations.json           the training run's evaluations
        final_evaluation.json      MoCapAct's evaluation (1,000 random starts, 100 snippet starts)

An expert in the zoo holds what it needs to act and to be judged: no optimiser
state, checkpoint, TensorBoard log or ``eval_start`` model. Its policy network is
stored as float16 and its critic (which only the rollouts' values need) as int8
with a float32 scale per row (:func:`mocapact_envs.policies.expert_files.compact_weights`);
the normaliser and the reference actions stay float32. With a 2 x 256 actor-critic
over 206 inputs an expert takes about 0.43 MB (390 kB of weights), 84 experts about
36 MB, where float16 throughout would take 46 MB and float32 88 MB (zoo/README.md). Export checks each copy against its float32 original on the
observations of 10 of its random-start episodes (MoCapAct's ``eval_rsi``), records
the largest action and value change in ``clip_info.json``, and keeps the policy
float32 when its actions move more than ``--action-tolerance`` (1e-3).

Snippets that run past the end of their converted clip are trained on the part it
covers, and snippets with broken converted steps at an end without them (the sweep's
``--crop-uncovered``): their folder keeps the listed id, their ``clip_info.json`` names
the snippet trained, which rollouts and evaluation track.

    mocapact-zoo export --runs runs/zoo --zoo zoo
    mocapact-zoo table --zoo zoo
    mocapact-zoo list --zoo zoo
    mocapact-zoo frames --zoo zoo --snippets CMU_016_22-0-82 CMU_009_12-0-210
    mocapact-zoo multiclip --policy runs/npmp_bc/best --name npmp_bc --evaluation compare.json --label bc \
        --ship-decoder

``multiclip/<name>/`` holds a multi-clip policy distilled from the zoo's rollouts
(config.json, model.safetensors) and its evaluation (``evaluation.json``);
``--ship-decoder`` also copies its NPMP decoder to
``mocapact_envs/pretrained/low_level_policy``, what ``low_level_policy="pretrained"`` loads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mocapact_envs.files import read_json, read_tensors, replace_atomically, write_json, write_tensors
from mocapact_envs.mocap.ids import Snippet, parse_snippet, read_id_file
from mocapact_envs.mocap.splits import (
    LOCOMOTION_LIST,
    ZOO_SNIPPET_LIST,
    clip_list,
    default_clip_lists,
    validation_clips,
)
from mocapact_envs.policies.expert_files import CONFIG_FILE, WEIGHTS_FILE, compact_weights, expand_weights
from mocapact_envs.policies.relay import RELAY_FORMAT_NAME, RelayExpert
from mocapact_envs.policies.run_layout import (
    CLIP_INFO_FILE,
    DEFAULT_ZOO,
    EXPERTS_FOLDER,
    ZOO_ENV_VAR,
    ZOO_INFO_KEY,
    ZooExpert,
    experts_folder,
    find_zoo_expert,
    read_clip_info,
    zoo_experts,
    zoo_root,
)
from mocapact_envs.tasks.tracking_settings import TrackingSettings

FINAL_EVALUATION_FILE = "final_evaluation.json"
EVALUATIONS_FILE = "evaluations.json"
#: What a zoo expert keeps of its run folder besides eval_rsi/model.
RUN_FILES = (CLIP_INFO_FILE, EVALUATIONS_FILE, FINAL_EVALUATION_FILE)
#: How the zoo stores each network: the policy as float16 (if accurate enough), the critic as int8.
DEFAULT_STORAGE = {"actor_mean": "float16", "critic": "int8"}
ACTION_TOLERANCE = 1e-3
CHECK_EPISODES, CHECK_SEED = 10, 0
README_FILE = "README.md"
TABLE_START, TABLE_END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"
DISTRIBUTIONS_FIGURE = "figures/distributions.png"
TRACKED_STEPS_FIGURE = "figures/tracked_steps.png"
FRAMES_FIGURE = "figures/frames.png"


# -- export -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedExpert:
    expert: ZooExpert
    size_bytes: int
    storage: dict[str, str]
    max_action_deviation: float
    max_value_deviation: float


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_observations(expert, snippet_id: str, episodes: int = CHECK_EPISODES) -> dict[str, np.ndarray]:
    """Observations (a batch) of the expert's own random-start episodes, as MoCapAct's ``eval_rsi`` runs them."""
    from mocapact_envs.evaluation.protocol import ExpertActor, make_eval_vec_env, run_episodes

    seen, actor = [], ExpertActor(expert)

    def act(observation):
        seen.append({key: np.array(value) for key, value in observation.items()})
        return actor(observation)

    envs = make_eval_vec_env(snippet_id, "eval_rsi", num_envs=1)
    try:
        run_episodes(envs, act, episodes, seed=CHECK_SEED)
    finally:
        envs.close()
    return {key: np.concatenate([o[key] for o in seen]) for key in seen[0]}


def weight_folders(model_dir: Path) -> list[str]:
    """The folders of a model holding weights: the model folder itself, or each window of a relay."""
    config = read_json(model_dir / CONFIG_FILE)
    if config.get("format") == RELAY_FORMAT_NAME:
        return [window["folder"] for window in config["windows"]]
    return ["."]


def with_weights(original, stored: dict[str, dict[str, Any]]):
    """A copy of a loaded expert (or relay) acting with ``stored`` weights (by :func:`weight_folders` folder)."""
    from mocapact_envs.policies.expert_files import Expert
    from mocapact_envs.policies.expert_networks import ExpertActorCritic

    def copy(expert, weights: dict[str, Any]) -> Expert:
        network = ExpertActorCritic.from_config(expert.config["network"])
        network.load_state_dict(expand_weights(weights))
        return Expert(
            network,
            expert.obs_normalizer,
            expert.observation_keys,
            expert.value_scale,
            expert.config,
            reference_actions=expert.reference_actions,
        )

    if isinstance(original, RelayExpert):
        folders = [window["folder"] for window in original.config["windows"]]
        windows = [copy(e, stored[f]) for e, f in zip(original.experts, folders, strict=True)]
        return RelayExpert(original.plan, windows, original.config)
    return copy(original, stored["."])


def storage_check(model_dir: Path, stored: dict[str, dict[str, Any]], observations: dict[str, np.ndarray]):
    """Largest change of the (clipped, absolute) action and of the value (reward units) that storing the
    weights as ``stored`` (by :func:`weight_folders` folder) makes over ``observations``."""
    from mocapact_envs.policies.expert_files import load_our_expert

    original = load_our_expert(model_dir)
    copy = with_weights(original, stored)
    actions = np.abs(original.predict(observations)[0] - copy.predict(observations)[0]).max()
    values = np.abs(original.value(observations) - copy.value(observations)).max()
    return float(actions), float(values)


def export_expert(
    run_dir: str | Path,
    zoo: str | Path | None = None,
    listed_snippet_id: str | None = None,
    storage: dict[str, str] | None = None,
    action_tolerance: float = ACTION_TOLERANCE,
) -> ExportedExpert:
    """Copies what an expert run needs to act and be judged into ``<zoo>/experts/<listed id>/<seed>/``.

    ``listed_snippet_id``: the id the snippet is listed under when the run trained on the part of it the
    converted clip covers (same clip and start, an earlier end); unset: the run's own snippet. An existing
    copy is replaced. Weights are stored as ``storage`` says (:data:`DEFAULT_STORAGE`); a policy whose
    actions would move more than ``action_tolerance`` stays float32.
    """
    run_dir = Path(run_dir)
    info_path, model_dir = run_dir / CLIP_INFO_FILE, run_dir / "eval_rsi" / "model"
    if not info_path.is_file() or not (model_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{run_dir} is not an expert run of ours: it needs {CLIP_INFO_FILE} and eval_rsi/model/{CONFIG_FILE}."
        )
    snippet = read_clip_info(info_path)
    listed = parse_snippet(listed_snippet_id) if listed_snippet_id else snippet
    if not is_part_of(snippet, listed):
        raise ValueError(f"{run_dir} tracks {snippet.id}, which is not {listed.id} or a cropped part of it.")
    storage = dict(DEFAULT_STORAGE if storage is None else storage)
    weights = {folder: read_tensors(model_dir / folder / WEIGHTS_FILE) for folder in weight_folders(model_dir)}
    stored = {folder: compact_weights(w, storage) for folder, w in weights.items()}
    from mocapact_envs.policies.expert_files import load_our_expert

    observations = check_observations(load_our_expert(model_dir), snippet.id)
    action_deviation, value_deviation = storage_check(model_dir, stored, observations)
    if action_deviation > action_tolerance and storage.get("actor_mean") != "float32":
        storage["actor_mean"] = "float32"
        stored = {folder: compact_weights(w, storage) for folder, w in weights.items()}
        action_deviation, value_deviation = storage_check(model_dir, stored, observations)

    target = experts_folder_for_writing(zoo) / listed.id / run_dir.name
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staged_model = staging / "eval_rsi" / "model"
        shutil.copytree(model_dir, staged_model, ignore=shutil.ignore_patterns(WEIGHTS_FILE, "tmp*", ".*"))
        for folder, tensors in stored.items():
            write_tensors(staged_model / folder / WEIGHTS_FILE, tensors)
        for name in (EVALUATIONS_FILE, FINAL_EVALUATION_FILE):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, staging / name)
        info = read_json(info_path)
        info[ZOO_INFO_KEY] = {
            "listed_snippet_id": listed.id,
            "trained_on": snippet.id,
            "cropped": listed.id != snippet.id,
            "covered_steps": [snippet.start, snippet.end],
            "weights": storage,
            "max_action_deviation": action_deviation,
            "max_value_deviation": value_deviation,
            "deviation_check": f"against float32 over {len(next(iter(observations.values())))} observations of "
            f"{CHECK_EPISODES} random-start episodes",
            "training": training_settings(run_dir),
        }
        write_json(staging / CLIP_INFO_FILE, info)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    expert = ZooExpert(listed.id, target, snippet)
    return ExportedExpert(expert, folder_size(target), storage, action_deviation, value_deviation)


#: The trainer's settings a zoo expert records (from its run's ``args.json``): what tells presets apart.
TRAINING_SETTINGS = ("preset", "action_parameterization", "num_envs", "snippet_start_envs", "total_timesteps")


def training_settings(run_dir: Path) -> dict[str, Any]:
    """The run's :data:`TRAINING_SETTINGS`; a run from before snippet-start worlds had none (0)."""
    path = run_dir / "args.json"
    if not path.is_file():
        return {}
    args = read_json(path)
    return {"snippet_start_envs": 0} | {key: args[key] for key in TRAINING_SETTINGS if args.get(key) is not None}


def experts_folder_for_writing(zoo: str | Path | None) -> Path:
    folder = zoo_root(zoo)
    return folder if folder.name == EXPERTS_FOLDER else folder / EXPERTS_FOLDER


def is_part_of(part: Snippet, whole: Snippet) -> bool:
    """Whether ``part`` is ``whole`` or a cropped part of it: the same clip, within its steps (ends resolved)."""
    if part.id == whole.id:
        return True
    return (
        part.clip_id == whole.clip_id
        and None not in (part.end, whole.end)
        and whole.start <= part.start <= part.end <= whole.end
    )


def listed_ids_by_trained(trained: Iterable[Snippet], listed: Sequence[str]) -> dict[str, str]:
    """The listed snippet id of each trained snippet: itself when listed, else the one listed snippet of its clip
    that holds it (it was cropped: to the covered part, or without broken steps at an end); otherwise itself."""
    by_clip: dict[str, list[Snippet]] = {}
    for snippet in map(parse_snippet, listed):
        by_clip.setdefault(snippet.clip_id, []).append(snippet)
    mapping = {}
    for snippet in trained:
        same_clip = by_clip.get(snippet.clip_id, [])
        holders = [s for s in same_clip if s.id != snippet.id and is_part_of(snippet, s)]
        listed_here = any(s.id == snippet.id for s in same_clip)
        mapping[snippet.id] = holders[0].id if len(holders) == 1 and not listed_here else snippet.id
    return mapping


# -- the table and figures ----------------------------------------------------------------


def snippet_kinds(snippet_id: str, clip_lists: Path | None) -> str:
    """``locomotion`` (MoCapAct's locomotion snippets), ``validation`` (a validation clip), both or ``-``."""
    if clip_lists is None:
        return "?"
    kinds = []
    if snippet_id in clip_list(LOCOMOTION_LIST, clip_lists):
        kinds.append("locomotion")
    if parse_snippet(snippet_id).clip_id in validation_clips(clip_lists):
        kinds.append("validation")
    return ", ".join(kinds) or "-"


def snippet_steps(snippet_id: str) -> int:
    """The steps a listed snippet id spans, both ends included."""
    snippet = parse_snippet(snippet_id)
    return (snippet.end or 0) - (snippet.start or 0) + 1


def table_rows(path: str | Path | None = None, clip_lists: Path | None = None) -> list[dict[str, Any]]:
    """One row per zoo expert (smallest seed per snippet) from its final_evaluation.json."""
    rows, seen = [], set()
    for expert in zoo_experts(path):
        if expert.listed_id in seen:
            continue
        seen.add(expert.listed_id)
        row: dict[str, Any] = {
            "snippet": expert.listed_id,
            "seed": expert.seed,
            "kind": snippet_kinds(expert.listed_id, clip_lists),
            "steps": snippet_steps(expert.listed_id),
            "trained_on": expert.snippet.id,
            "cropped": expert.cropped,
        }
        training = read_json(expert.run_dir / CLIP_INFO_FILE).get(ZOO_INFO_KEY, {}).get("training", {})
        if "num_envs" in training:
            row["snippet_start_worlds"] = f"{training['snippet_start_envs']} of {training['num_envs']}"
        final_path = expert.run_dir / FINAL_EVALUATION_FILE
        if final_path.is_file():
            final = read_json(final_path)
            row["training_minutes"] = round(float(final["training_minutes"]), 1)
            row["env_steps"] = int(final["env_steps"])
            for kind, label in (("eval_rsi", "rsi"), ("eval_start", "start")):
                if kind in final:
                    row[f"{label}_norm_length"] = round(float(final[kind]["mean_norm_episode_length"]), 3)
                    row[f"{label}_norm_return"] = round(float(final[kind]["mean_norm_episode_return"]), 3)
                    row[f"{label}_mean_length"] = round(float(final[kind]["mean_episode_length"]), 1)
                    row[f"{label}_episodes"] = int(final[kind]["episodes"])
        rows.append(row)
    if clip_lists is not None and (clip_lists / ZOO_SNIPPET_LIST).is_file():
        # The listed snippets without an expert get a row too, so the table accounts for every one.
        held = {row["snippet"] for row in rows}
        for listed_id in read_id_file(clip_lists / ZOO_SNIPPET_LIST):
            if listed_id not in held:
                rows.append(
                    {"snippet": listed_id, "kind": snippet_kinds(listed_id, clip_lists), "steps": snippet_steps(listed_id),
                     "cropped": False, "trained": False}
                )  # fmt: skip
        rows.sort(key=lambda row: row["snippet"])
    return rows


#: Snippet length bands (steps, inclusive upper bounds) of the table's summary.
LENGTH_BANDS = ((50, "up to 50 steps"), (100, "51 to 100 steps"), (None, "over 100 steps"))

TABLE_COLUMNS = (
    ("snippet", "snippet"),
    ("kind", "kind"),
    ("steps", "steps"),
    ("env_steps", "training env steps"),
    ("training_minutes", "training minutes"),
    ("snippet_start_worlds", "snippet-start worlds"),
    ("rsi_norm_length", "norm. length, random starts"),
    ("rsi_norm_return", "norm. return, random starts"),
    ("start_norm_length", "norm. length, snippet start"),
    ("start_norm_return", "norm. return, snippet start"),
)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in rows:
        cells = []
        for key, _ in TABLE_COLUMNS:
            if row.get("trained", True):
                value = row.get(key, "not evaluated" if key == "rsi_norm_length" else "")
            else:
                value = "not trained yet" if key == "env_steps" else row.get(key, "")
            if key == "env_steps" and isinstance(value, int):
                value = f"{value / 1e6:.2f}M"
            if key == "snippet" and row["cropped"]:
                value = f"{value} (cropped: trained on {row['trained_on'].split('-', 1)[1]})"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    experts = [r for r in rows if r.get("trained", True)]
    evaluated = [r for r in experts if "rsi_norm_length" in r]
    untrained = len(rows) - len(experts)
    summary = [
        f"{len(experts)} experts, {len(evaluated)} evaluated, {sum(r['cropped'] for r in experts)} cropped"
        + (f"; {untrained} listed snippets not trained yet." if untrained else ".")
    ]
    if evaluated:
        for label, key in (("random starts", "rsi"), ("snippet starts", "start")):
            lengths = np.array([r[f"{key}_norm_length"] for r in evaluated if f"{key}_norm_length" in r])
            returns = np.array([r[f"{key}_norm_return"] for r in evaluated if f"{key}_norm_return" in r])
            summary.append(
                f"From {label}: normalized length median {np.median(lengths):.3f} "
                f"(mean {lengths.mean():.3f}, {np.mean(lengths >= 0.8):.0%} at least 0.8), "
                f"normalized return median {np.median(returns):.3f}."
            )
        bands, lower = [], 0
        for upper, label in LENGTH_BANDS:
            listed = [r for r in rows if lower < r["steps"] and (upper is None or r["steps"] <= upper)]
            band = [r["rsi_norm_length"] for r in listed if "rsi_norm_length" in r]
            if listed:
                median = f"median {np.median(band):.3f}" if band else "none evaluated"
                bands.append(f"{label}: {len(band)} of {len(listed)} evaluated, {median}")
            lower = upper or lower
        summary.append(f"Normalized length from random starts by snippet length: {'; '.join(bands)}.")
        # Steps tracked in the longest band: where experts stop keeping up (figures/tracked_steps.png).
        long_from = LENGTH_BANDS[-2][0]
        long_tracked = [
            r["start_mean_length"] for r in evaluated if r["steps"] > long_from and "start_mean_length" in r
        ]
        if long_tracked:
            median_steps = float(np.median(long_tracked))
            summary.append(
                f"From the snippet start, the {len(long_tracked)} evaluated snippets over {long_from} steps are tracked "
                f"for a median of {median_steps:.0f} steps ({median_steps * TrackingSettings.control_timestep:.1f} s; "
                f"{TRACKED_STEPS_FIGURE})."
            )
        episodes = evaluated[0].get("rsi_episodes"), evaluated[0].get("start_episodes")
        summary.append(f"Episodes per expert: {episodes[0]} from random starts, {episodes[1]} from the snippet start.")
    return "\n".join(lines) + "\n\n" + " ".join(summary) + "\n"


def plot_distributions(rows: list[dict[str, Any]], path: Path) -> bool:
    """Histograms of normalized episode length and return over the experts, from both starts (as MoCapAct's paper)."""
    evaluated = [r for r in rows if "rsi_norm_length" in r]
    if not evaluated:
        return False
    from mocapact_envs.evaluation.plotting import save_figure, subplots

    figure, axes = subplots(2, 2, figsize=(10, 7), sharex=True)
    bins = np.linspace(0.0, 1.0, 21)
    for column, (start, label) in enumerate((("rsi", "random starts"), ("start", "snippet start"))):
        for row, (metric, name) in enumerate((("norm_length", "normalized episode length"), ("norm_return", "normalized episode return"))):  # fmt: skip
            values = [r[f"{start}_{metric}"] for r in evaluated if f"{start}_{metric}" in r]
            ax = axes[row, column]
            ax.hist(values, bins=bins, color="tab:blue" if column == 0 else "tab:orange", alpha=0.85)
            ax.axvline(float(np.median(values)), color="black", linestyle="--", label=f"median {np.median(values):.2f}")
            ax.set(xlabel=f"{name}, {label}", ylabel="experts")
            ax.grid(alpha=0.3)
            ax.legend()
    save_figure(figure, path, title=f"{len(evaluated)} zoo experts (MoCapAct's evaluation)")
    return True


def plot_tracked_steps(rows: list[dict[str, Any]], path: Path) -> bool:
    """Mean steps tracked (episode length) against snippet length, from both starts: where experts stop keeping up."""
    evaluated = [r for r in rows if "start_mean_length" in r]
    if not evaluated:
        return False
    from mocapact_envs.evaluation.plotting import save_figure, subplots

    figure, ax = subplots(figsize=(7, 5))
    steps = np.array([snippet_steps(r["trained_on"]) for r in evaluated])  # cropped ones: the part trained
    for key, label, color in (
        ("start", "from the snippet start", "tab:orange"),
        ("rsi", "from random starts", "tab:blue"),
    ):
        ax.scatter(
            steps,
            [r[f"{key}_mean_length"] for r in evaluated],
            s=18,
            color=color,
            label=f"mean episode length, {label}",
        )
    # An episode from the snippet start ends at the snippet's last step at most.
    ceiling = np.array([0, steps.max()])
    ax.plot(ceiling, ceiling - 1, color="black", linestyle="--", linewidth=1, label="whole snippet (from its start)")
    ax.set(
        xlabel=f"snippet length trained (steps of {TrackingSettings.control_timestep} s)",
        ylabel="steps tracked before the episode ends",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(figure, path, title=f"{len(evaluated)} zoo experts: steps tracked against snippet length")
    return True


def write_table(path: str | Path | None = None, clip_lists: Path | None = None) -> list[dict[str, Any]]:
    """Regenerates the table between the markers of the zoo's README.md, table.json and the two figures."""
    root = experts_folder(path).parent
    rows = table_rows(path, clip_lists)
    readme = root / README_FILE
    table = f"{TABLE_START}\n{markdown_table(rows)}{TABLE_END}"
    text = readme.read_text() if readme.is_file() else f"# Expert zoo\n\n{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"{readme} lacks the markers {TABLE_START} and {TABLE_END} that hold the table.")
    before, rest = text.split(TABLE_START, 1)
    after = rest.split(TABLE_END, 1)[1]
    replace_atomically(readme, lambda tmp: tmp.write_text(before + table + after))
    write_json(root / "table.json", rows)
    plot_distributions(rows, root / DISTRIBUTIONS_FIGURE)
    plot_tracked_steps(rows, root / TRACKED_STEPS_FIGURE)
    return rows


def render_frames(
    path: str | Path | None, snippet_ids: Sequence[str], output: Path, frames: int = 4, size: int = 240
) -> Path:
    """A grid of frames (one row per expert) of episodes from the snippet start, with the reference ghost."""
    from mocapact_envs.envs.factory import make_tracking_env
    from mocapact_envs.evaluation.plotting import save_figure, subplots
    from mocapact_envs.evaluation.protocol import rendered_episode
    from mocapact_envs.policies.expert_files import load_expert

    figure, axes = subplots(len(snippet_ids), frames, figsize=(2.6 * frames, 2.4 * len(snippet_ids)), squeeze=False)
    for row, snippet_id in enumerate(snippet_ids):
        expert = find_zoo_expert(path, snippet_id)
        policy = load_expert(expert.run_dir)
        env = make_tracking_env(
            expert.snippet.id, "dm_control", random_start=False, render_mode="rgb_array", width=size, height=size
        )
        images = rendered_episode(
            env, lambda observation, policy=policy: policy.predict(observation, deterministic=True)[0]
        )
        for column, index in enumerate(np.linspace(0, len(images) - 1, frames).round().astype(int)):
            ax = axes[row, column]
            ax.imshow(images[index])
            ax.set_axis_off()
            ax.set_title(f"{expert.listed_id}, step {index}" if column == 0 else f"step {index}", fontsize=8)
    save_figure(figure, output, title="zoo experts (colour) and their reference (grey ghost), from the snippet start")
    return output


# -- multi-clip policies -----------------------------------------------------------------------

MULTICLIP_FOLDER = "multiclip"
MULTICLIP_EVALUATION_FILE = "evaluation.json"


def add_multiclip_policy(
    policy_dir: str | Path,
    name: str,
    evaluation: str | Path | None = None,
    zoo: str | Path | None = None,
    ship_decoder: bool = False,
    evaluation_label: str | None = None,
) -> Path:
    """Copies a distilled multi-clip policy into ``<zoo>/multiclip/<name>/``; returns that folder.

    Args:
        policy_dir: a saved :class:`~mocapact_envs.policies.multiclip.MultiClipPolicy` (``<run>/best``).
        name: the folder name in the zoo (letters, digits, ``-``, ``_``, ``.``).
        evaluation: ``baselines/distill/evaluate.py --output-json`` of it, kept as ``evaluation.json``.
        zoo: the zoo folder (:func:`zoo_root`).
        ship_decoder: also make its NPMP decoder the package's shipped low-level policy
            (``low_level_policy="pretrained"``), its config naming the zoo folder it came from.
        evaluation_label: this policy's label in ``evaluation`` (needed when it compares several),
            kept as its ``zoo_policy_label``.
    """
    import dataclasses
    import re

    from mocapact_envs.policies.low_level import SHIPPED_LOW_LEVEL_POLICY, LowLevelPolicy
    from mocapact_envs.policies.multiclip import MultiClipPolicy

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise ValueError(f"multi-clip policy name {name!r} must be a plain folder name (letters, digits, - _ .).")
    report = None
    if evaluation is not None:
        report = read_json(evaluation)
        labels = list(report.get("labels", ()))
        if evaluation_label is None and len(labels) == 1:
            evaluation_label = labels[0]
        if evaluation_label not in labels:
            raise ValueError(
                f"evaluation label {evaluation_label!r} is not one of the policies {evaluation} evaluates: "
                f"{', '.join(labels)}."
            )
        report["zoo_policy_label"] = evaluation_label
    policy = MultiClipPolicy.load(policy_dir)
    if ship_decoder and policy.config.kind != "npmp":
        raise ValueError(f"only an NPMP has a decoder to ship; {policy_dir} holds a {policy.config.kind!r} policy.")
    target = zoo_root(zoo) / MULTICLIP_FOLDER / name
    policy.save(target)
    if report is not None:
        write_json(target / MULTICLIP_EVALUATION_FILE, report)
    if ship_decoder:
        decoder = policy.decoder
        source = f"{zoo_root(zoo).name}/{MULTICLIP_FOLDER}/{name}"
        shipped = LowLevelPolicy(dataclasses.replace(decoder.config, extra={**decoder.config.extra, "source": source}))
        shipped.load_state_dict(decoder.state_dict())
        shipped.save(SHIPPED_LOW_LEVEL_POLICY)
    return target


# -- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mocapact-zoo", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    zoo_help = f"the zoo folder (default: ${ZOO_ENV_VAR}, else {DEFAULT_ZOO})"

    export = commands.add_parser("export", help="copy trained expert runs into the zoo, compactly")
    export.add_argument("--runs", type=Path, required=True, nargs="+", help="folders of runs <snippet>/<seed>/")
    export.add_argument("--zoo", type=Path, help=zoo_help)
    export.add_argument(
        "--snippet-list",
        type=Path,
        help=f"the listed snippet ids, which name cropped runs (default: <clip lists>/{ZOO_SNIPPET_LIST})",
    )
    export.add_argument("--results", type=Path, help="a sweep's results.json: its snippet/trained_on pairs")
    export.add_argument("--include-unevaluated", action="store_true", help=f"also runs without {FINAL_EVALUATION_FILE}")
    export.add_argument("--critic-storage", choices=("int8", "float16", "float32"), default=DEFAULT_STORAGE["critic"])
    export.add_argument("--actor-storage", choices=("float16", "float32"), default=DEFAULT_STORAGE["actor_mean"])
    export.add_argument("--action-tolerance", type=float, default=ACTION_TOLERANCE)

    table = commands.add_parser("table", help="write README.md's table and the distribution figure")
    table.add_argument("--zoo", type=Path, help=zoo_help)
    table.add_argument(
        "--clip-lists", type=Path, help="MoCapAct's clip lists (default: $MOCAPACT_MOCAP_PATH/clip_lists)"
    )

    listing = commands.add_parser("list", help="the zoo's experts")
    listing.add_argument("--zoo", type=Path, help=zoo_help)

    multiclip = commands.add_parser("multiclip", help="copy a distilled multi-clip policy into <zoo>/multiclip/")
    multiclip.add_argument("--policy", type=Path, required=True, help="a saved multi-clip policy (<run>/best)")
    multiclip.add_argument("--name", required=True, help="its folder name in the zoo, e.g. npmp_bc")
    multiclip.add_argument("--evaluation", type=Path, help="baselines/distill/evaluate.py --output-json of it")
    multiclip.add_argument("--label", help="the policy's label in --evaluation when it compares several")
    multiclip.add_argument("--zoo", type=Path, help=zoo_help)
    multiclip.add_argument(
        "--ship-decoder", action="store_true", help="make its decoder the package's low_level_policy='pretrained'"
    )

    frames = commands.add_parser("frames", help="frames of experts with their reference ghost")
    frames.add_argument("--zoo", type=Path, help=zoo_help)
    frames.add_argument("--snippets", nargs="+", required=True)
    frames.add_argument("--frames", type=int, default=4)
    frames.add_argument("--output", type=Path, help=f"default: <zoo>/{FRAMES_FIGURE}")
    return parser


def _export_command(args: argparse.Namespace) -> int:
    from mocapact_envs.policies.run_layout import find_experts

    search = find_experts(args.runs)
    runs = [run for runs in search.runs_by_clip.values() for run in runs]
    listed: dict[str, str] = {}
    if args.results:
        listed = {row["trained_on"]: row["snippet"] for row in read_json(args.results)}
    else:
        snippet_list = args.snippet_list or ((default_clip_lists() or Path()) / ZOO_SNIPPET_LIST)
        if snippet_list.is_file():
            listed = listed_ids_by_trained((run.snippet for run in runs), read_id_file(snippet_list))
        elif args.snippet_list:
            raise FileNotFoundError(f"snippet list {snippet_list} does not exist.")
    total, exported = 0, 0
    for run in runs:
        if not (run.run_dir / FINAL_EVALUATION_FILE).is_file() and not args.include_unevaluated:
            print(f"note: {run.run_dir} has no {FINAL_EVALUATION_FILE} (not finished); skipped.", file=sys.stderr)
            continue
        result = export_expert(
            run.run_dir,
            args.zoo,
            listed.get(run.snippet.id),
            {"actor_mean": args.actor_storage, "critic": args.critic_storage},
            args.action_tolerance,
        )
        total += result.size_bytes
        exported += 1
        cropped = f" (cropped: trained on {result.expert.snippet.id})" if result.expert.cropped else ""
        print(
            f"{result.expert.listed_id}{cropped}: {result.size_bytes / 1e3:.0f} kB, policy {result.storage['actor_mean']}"
            f" (actions within {result.max_action_deviation:.1e}), critic {result.storage['critic']} "
            f"(values within {result.max_value_deviation:.1e})"
        )
    for kept, other in search.duplicates:
        print(f"note: {other.run_dir} also tracks {kept.snippet.id}; exported {kept.run_dir}.", file=sys.stderr)
    folder = experts_folder_for_writing(args.zoo)
    zoo_size = folder_size(folder) if folder.is_dir() else 0
    print(
        f"{exported} experts exported ({total / 1e6:.2f} MB, {total / max(exported, 1) / 1e3:.0f} kB each); "
        f"{folder} holds {zoo_size / 1e6:.2f} MB"
    )
    return 0 if exported else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export":
            return _export_command(args)
        if args.command == "table":
            clip_lists = args.clip_lists or default_clip_lists()
            rows = write_table(args.zoo, clip_lists)
            root = experts_folder(args.zoo).parent
            experts = sum(row.get("trained", True) for row in rows)
            print(
                f"{experts} experts in {len(rows)} rows: {root / README_FILE}, {root / 'table.json'}, "
                f"{root / DISTRIBUTIONS_FIGURE}, {root / TRACKED_STEPS_FIGURE}"
            )
            return 0
        if args.command == "multiclip":
            target = add_multiclip_policy(
                args.policy, args.name, args.evaluation, args.zoo, args.ship_decoder, args.label
            )
            print(f"{args.policy} -> {target} ({folder_size(target) / 1e6:.2f} MB)")
            if args.ship_decoder:
                from mocapact_envs.policies.low_level import SHIPPED_LOW_LEVEL_POLICY

                print(
                    f"its decoder -> {SHIPPED_LOW_LEVEL_POLICY} ({folder_size(SHIPPED_LOW_LEVEL_POLICY) / 1e6:.2f} MB)"
                )
            return 0
        if args.command == "list":
            for expert in zoo_experts(args.zoo):
                cropped = f"  (trained on {expert.snippet.id})" if expert.cropped else ""
                print(f"{expert.listed_id}  seed {expert.seed}{cropped}")
            return 0
        output = args.output or experts_folder(args.zoo).parent / FRAMES_FIGURE
        print(render_frames(args.zoo, args.snippets, output, args.frames))
        return 0
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
