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
    mocapact-zoo export --runs runs/zoo_v2 --zoo zoo --only-better   # a retrain replaces only what it beats
    mocapact-zoo table --zoo zoo
    mocapact-zoo table --zoo zoo --previous zoo/table_v1.json         # the previous zoo's figures beside
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
import dataclasses
import os
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mocapact_envs.evaluation.protocol import ExpertActor, make_eval_vec_env, run_episodes
from mocapact_envs.files import read_json, read_tensors, replace_directory, write_json, write_tensors
from mocapact_envs.mocap.ids import Snippet, parse_snippet, read_id_file
from mocapact_envs.mocap.splits import (
    ZOO_SNIPPET_LIST,
    default_clip_lists,
)
from mocapact_envs.policies.expert_files import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Expert,
    compact_weights,
    expand_weights,
    load_our_expert,
)
from mocapact_envs.policies.expert_networks import ExpertActorCritic
from mocapact_envs.policies.low_level import SHIPPED_LOW_LEVEL_POLICY, LowLevelPolicy
from mocapact_envs.policies.multiclip import MultiClipPolicy
from mocapact_envs.policies.relay import RELAY_FORMAT_NAME, RelayExpert
from mocapact_envs.policies.run_layout import (
    CLIP_INFO_FILE,
    DEFAULT_ZOO,
    EVALUATIONS_FILE,
    EXPERTS_FOLDER,
    FINAL_EVALUATION_FILE,
    ZOO_ENV_VAR,
    ZOO_INFO_KEY,
    ZooExpert,
    expert_folder_argument,
    experts_folder,
    find_experts,
    read_clip_info,
    seed_order,
    zoo_experts,
    zoo_root,
)
from mocapact_envs.tools.zoo_table import (
    DISTRIBUTIONS_FIGURE,
    FRAMES_FIGURE,
    README_FILE,
    TRACKED_STEPS_FIGURE,
    render_frames,
    write_table,
)

#: What a zoo expert keeps of its run folder besides eval_rsi/model.
RUN_FILES = (CLIP_INFO_FILE, EVALUATIONS_FILE, FINAL_EVALUATION_FILE)
#: How the zoo stores each network: the policy as float16 (if accurate enough), the critic as int8.
DEFAULT_STORAGE = {"actor_mean": "float16", "critic": "int8"}
ACTION_TOLERANCE = 1e-3
CHECK_EPISODES, CHECK_SEED = 10, 0


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
        replace_directory(staging, target)
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


def evaluation_score(run_dir: Path) -> tuple[float, float] | None:
    """What :func:`beats` compares: the mean of the normalized episode lengths from random starts and from the
    snippet start (MoCapAct's two figures, weighed alike), then the mean of the normalized returns; ``None``
    without a final evaluation of both kinds."""
    path = run_dir / FINAL_EVALUATION_FILE
    if not path.is_file():
        return None
    kinds = [read_json(path).get(kind) for kind in ("eval_rsi", "eval_start")]
    if None in kinds:
        return None  # one kind alone would be weighed against two
    lengths = [float(k["mean_norm_episode_length"]) for k in kinds]
    returns = [float(k["mean_norm_episode_return"]) for k in kinds]
    return float(np.mean(lengths)), float(np.mean(returns))


def beats(new_run: Path, current_run: Path) -> tuple[bool, str]:
    """Whether a newly trained expert should replace the zoo's current one of its snippet, and why.

    It must have a final evaluation, and a higher :func:`evaluation_score` (length first, return on a tie) than the
    current expert; a current expert without a final evaluation is always replaced. Ties keep the current one.
    """
    new, current = evaluation_score(new_run), evaluation_score(current_run)
    if new is None:
        return False, f"{new_run} has no {FINAL_EVALUATION_FILE}"
    if current is None:
        return True, f"the current expert {current_run} has no {FINAL_EVALUATION_FILE}"
    figures = f"mean norm. length {new[0]:.3f} (return {new[1]:.3f}) against {current[0]:.3f} ({current[1]:.3f})"
    return new > current, figures


def experts_folder_for_writing(zoo: str | Path | None) -> Path:
    """The ``experts`` folder an export writes to: the one a read of ``zoo`` finds (``"zoo"`` where no such folder
    exists is the project's zoo), even before the folder exists."""
    folder = expert_folder_argument(zoo_root(zoo))
    try:
        return experts_folder(folder)  # a zoo that holds experts already: where a read finds them
    except FileNotFoundError:
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
    export.add_argument(
        "--only-better",
        action="store_true",
        help="replace a snippet's current expert only if the run beats it (mean normalized length from random "
        "starts and the snippet start, then return; the run's final evaluation against the zoo's)",
    )

    table = commands.add_parser("table", help="write README.md's table and the distribution figure")
    table.add_argument("--zoo", type=Path, help=zoo_help)
    table.add_argument(
        "--clip-lists", type=Path, help="MoCapAct's clip lists (default: $MOCAPACT_MOCAP_PATH/clip_lists)"
    )
    table.add_argument(
        "--previous", type=Path, help="a previous zoo's table.json: its figures beside each snippet's, and its medians"
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
    if args.only_better and args.include_unevaluated:
        raise ValueError("--only-better compares final evaluations: not with --include-unevaluated.")
    total, exported, kept = 0, 0, 0
    folder = experts_folder_for_writing(args.zoo)
    seeds: dict[str, list[ZooExpert]] = {}  # every seed of each listed snippet, the one the zoo loads first
    for expert in sorted(zoo_experts(folder), key=seed_order) if folder.is_dir() else []:
        seeds.setdefault(expert.listed_id, []).append(expert)
    # A cropped run goes under the zoo's snippet that holds its trained part where the list does not say otherwise.
    for expert in (e for experts in seeds.values() for e in experts):
        if listed.get(expert.snippet.id, expert.snippet.id) == expert.snippet.id:
            listed[expert.snippet.id] = expert.listed_id
    for run in runs:
        if not (run.run_dir / FINAL_EVALUATION_FILE).is_file() and not args.include_unevaluated:
            print(f"note: {run.run_dir} has no {FINAL_EVALUATION_FILE} (not finished); skipped.", file=sys.stderr)
            continue
        listed_id = listed.get(run.snippet.id, run.snippet.id)
        replaced = seeds[listed_id][0] if args.only_better and listed_id in seeds else None
        if replaced is not None:
            better, why = beats(run.run_dir, replaced.run_dir)
            print(f"{listed_id}: {'replaces' if better else 'keeps'} {replaced.run_dir} ({why})")
            if not better:
                kept += 1
                continue
        result = export_expert(
            run.run_dir,
            args.zoo,
            listed.get(run.snippet.id),
            {"actor_mean": args.actor_storage, "critic": args.critic_storage},
            args.action_tolerance,
        )
        others = [e for e in seeds.get(listed_id, []) if e.run_dir != result.expert.run_dir]
        if args.only_better:  # the run beat the seed the zoo loaded: one expert a snippet, none to shadow it
            for other in others:
                shutil.rmtree(other.run_dir, ignore_errors=True)
            others = []
        seeds[listed_id] = sorted([*others, result.expert], key=seed_order)  # a later run must beat the first
        if seeds[listed_id][0] is not result.expert:
            loaded = seeds[listed_id][0].run_dir
            print(f"note: {loaded} is the expert the zoo loads for {listed_id} (a smaller seed).", file=sys.stderr)
        total += result.size_bytes
        exported += 1
        cropped = f" (cropped: trained on {result.expert.snippet.id})" if result.expert.cropped else ""
        print(
            f"{result.expert.listed_id}{cropped}: {result.size_bytes / 1e3:.0f} kB, policy {result.storage['actor_mean']}"
            f" (actions within {result.max_action_deviation:.1e}), critic {result.storage['critic']} "
            f"(values within {result.max_value_deviation:.1e})"
        )
    for chosen, other in search.duplicates:
        print(f"note: {other.run_dir} also tracks {chosen.snippet.id}; exported {chosen.run_dir}.", file=sys.stderr)
    zoo_size = folder_size(folder) if folder.is_dir() else 0
    print(
        f"{exported} experts exported ({total / 1e6:.2f} MB, {total / max(exported, 1) / 1e3:.0f} kB each)"
        + (f", {kept} current experts kept (not beaten)" if args.only_better else "")
        + f"; {folder} holds {zoo_size / 1e6:.2f} MB"
    )
    return 0 if exported or kept else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export":
            return _export_command(args)
        if args.command == "table":
            clip_lists = args.clip_lists or default_clip_lists()
            rows = write_table(args.zoo, clip_lists, args.previous)
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
