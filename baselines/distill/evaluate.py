"""Evaluate distilled multi-clip policies MoCapAct's way: per mode, a table per snippet, beside the experts.

    python baselines/distill/evaluate.py --policy runs/npmp/best --experts zoo --modes train val extra \\
        --output-json runs/npmp_eval.json --plot runs/npmp_eval.png
    python baselines/distill/evaluate.py --policy runs/npmp_bc/best runs/npmp_awr/best runs/mlp/best \\
        --labels bc awr mlp --experts zoo --plot runs/compare.png
    python baselines/distill/evaluate.py --policy runs/npmp/best --snippets CMU_016_22-0-82 CMU_009_12-0-198

MoCapAct evaluates a distilled policy in six modes: {the snippets it trained on (``train``), the
snippets of MoCapAct's validation clips (``val``), whole clips outside dm_control's ``ALL``
(``extra``)} x {snippet start, random start}, with sampled actions and ``min_steps`` 10
(reference steps from the policy). For each snippet that has an expert in ``--experts``, the
expert runs the same protocol once (with its action means, or sampling its actions as the policy
does with ``--experts-sample``) and the table gives policy / expert normalized episode length;
``--plot`` draws those ratios per mode against the target 0.8.
Several policies (``--policy a b c``) are evaluated side by side against the same expert runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from mocapact_envs.envs.factory import resolve_snippet
from mocapact_envs.evaluation.plotting import plot_length_ratios
from mocapact_envs.evaluation.protocol import (
    EXPERT_LABEL,
    EXPERT_RATIO_TARGET,
    MULTICLIP_EVAL_MODES,
    START_KINDS,
    evaluate_units,
    length_ratios,
    mean_metrics,
    record_episode,
)
from mocapact_envs.files import read_json, write_json
from mocapact_envs.mocap.ids import resolve_snippets
from mocapact_envs.mocap.splits import (
    VALIDATION_LIST,
    ZOO_SNIPPET_LIST,
    clip_list,
    extra_clips,
    on_clips,
    validation_clips,
)
from mocapact_envs.policies.multiclip import MultiClipPolicy
from mocapact_envs.policies.run_layout import ExpertRun, experts_folder, find_experts
from mocapact_envs.training.scripts import run_cli
from mocapact_envs.wrappers.video import write_video

MODE_TITLES = {
    "train": "training snippets",
    "val": "validation snippets (held out)",
    "extra": "extra clips (whole, no expert)",
    "snippets": "chosen snippets",
}


@dataclass
class Args:
    policy: list[Path]
    """Saved multi-clip policy directories (``<run>/best``); several are evaluated side by side."""
    labels: list[str] = field(default_factory=list)
    """A name per policy for the tables, JSON and plot (default: the policy paths)."""
    modes: tuple[Literal["train", "val", "extra"], ...] = MULTICLIP_EVAL_MODES
    """``train``: the snippets the policies trained on; ``val``: the snippets on MoCapAct's validation
    clips among those ``--experts`` holds, else among the zoo's list (shared_mocapact_snippets.txt);
    ``extra``: the mocap source's clips outside dm_control's ALL, as whole clips."""
    snippets: list[str] = field(default_factory=list)
    """Clip or snippet ids, collections or id list files to evaluate instead of the modes."""
    episodes: int = 10
    """Episodes per snippet and start kind."""
    deterministic: bool = False
    """Act with the latent and action means instead of sampling (MoCapAct samples)."""
    experts_sample: bool = False
    """The experts sample their actions (their Gaussian, std 0.1) as the policies do, instead of acting
    with their means: the same protocol on both sides of each ratio."""
    experts: list[Path] = field(default_factory=list)
    """Folders of the snippets' own experts (``zoo`` is the project's zoo): each runs the same protocol
    once and its policy / expert ratio is shown."""
    clip_lists: Path | None = None
    """Folder of MoCapAct's clip lists (default: ``$MOCAPACT_MOCAP_PATH/clip_lists``)."""
    plot: Path | None = None
    """Write the per-snippet policy / expert ratios of normalized episode length here (needs ``--experts``)."""
    video: Path | None = None
    """Write a video of the first policy on the first snippet (from its start) here, e.g. ``npmp.mp4``."""
    output_json: Path | None = None
    """Also write every mode's per-snippet metrics, expert results, ratios and means here."""
    workers: int = 1
    """Processes evaluating (policy or expert, snippet) runs in parallel; each is seeded alike, so the
    results do not depend on it."""
    seed: int = 0
    reuse: Path | None = None
    """An earlier ``--output-json`` of the same policies, episodes, seed and protocol: its (policy or expert,
    snippet) results are taken as they are, except for ``--reevaluate``'s snippets and any it lacks (the units
    are seeded alike, so a unit evaluated again gives its recorded figures)."""
    reevaluate: list[str] = field(default_factory=list)
    """With ``--reuse``: clip or snippet ids to evaluate again (those whose data or expert changed)."""


#: What an earlier report must share with this run for ``--reuse`` to take its results (an early report without
#: ``experts_sample`` had experts acting with their means).
REUSE_KEYS = ("episodes", "deterministic", "experts_sample", "seed", "ref_steps")


def reusable_results(args: Args, report_settings: dict, labels: list[str]) -> dict[str, dict[str, dict]]:
    """The earlier report's results by label (and the experts') and snippet, minus ``--reevaluate``'s."""
    previous = read_json(args.reuse)
    previous.setdefault("experts_sample", False)
    missing = [label for label in labels if label not in previous.get("labels", [])]
    if missing:
        raise ValueError(f"--reuse {args.reuse} has no results of {missing}; its labels are {previous.get('labels')}.")
    mismatched = [key for key in REUSE_KEYS if previous.get(key) != report_settings[key]]
    if mismatched:
        raise ValueError(
            f"--reuse {args.reuse} was evaluated with other settings ({', '.join(mismatched)}: "
            f"{[previous.get(k) for k in mismatched]} against {[report_settings[k] for k in mismatched]})."
        )
    again = {s.id for s in resolve_snippets(args.reevaluate)} | set(args.reevaluate)
    results: dict[str, dict[str, dict]] = {}
    for entry in previous["modes"].values():
        for label in labels:
            for snippet, metrics in entry["policies"][label]["snippets"].items():
                results.setdefault(label, {})[snippet] = metrics
        for snippet, metrics in entry["experts"]["snippets"].items():
            results.setdefault(EXPERT_LABEL, {})[snippet] = metrics
    return {
        label: {s: m for s, m in by_snippet.items() if s not in again and s.split("-")[0] not in again}
        for label, by_snippet in results.items()
    }


def expert_runs(folders: list[Path]) -> dict[str, ExpertRun]:
    """Every expert under ``folders`` by the snippet it tracks; ``zoo`` names the project's zoo."""
    roots = [folder if folder.is_dir() else experts_folder(folder) for folder in folders]
    search = find_experts(roots)
    return {run.snippet.id: run for runs in search.runs_by_clip.values() for run in runs}


def mode_snippets(
    mode: str, policies: dict[str, MultiClipPolicy], experts: dict[str, ExpertRun], args: Args
) -> list[str]:
    """The snippet ids one mode evaluates; a mode with none raises ``ValueError`` saying why."""
    if mode == "train":
        trained = {label: policy.config.trained_snippets for label, policy in policies.items()}
        for label, snippets in trained.items():
            if not snippets:
                raise ValueError(
                    f"policy {label} does not record the snippets it trained on: drop 'train' from --modes "
                    f"(choices: {', '.join(MULTICLIP_EVAL_MODES)}) or give --snippets."
                )
        first_label, first = next(iter(trained.items()))
        differing = [label for label, snippets in trained.items() if set(snippets) != set(first)]
        if differing:
            raise ValueError(
                f"policies {', '.join(differing)} trained on other snippets than {first_label}: the 'train' mode "
                "compares policies on the same snippets; evaluate them separately."
            )
        return list(first)
    if mode == "val":
        validation = validation_clips(args.clip_lists)
        if args.experts:
            snippets = on_clips(experts, validation)
            if not snippets:
                raise ValueError(
                    f"the expert folders {', '.join(map(str, args.experts))} hold no snippet on MoCapAct's "
                    f"validation clips ({VALIDATION_LIST}); they hold {len(experts)} snippets. Give --experts a "
                    f"folder with such experts, or drop 'val' from --modes (choices: {', '.join(MULTICLIP_EVAL_MODES)})."
                )
            return snippets
        snippets = on_clips(clip_list(ZOO_SNIPPET_LIST, args.clip_lists), validation)
        if not snippets:
            raise ValueError(f"{ZOO_SNIPPET_LIST} lists no snippet on MoCapAct's validation clips.")
        return snippets
    if mode == "extra":
        clips = extra_clips()
        if not clips:
            raise ValueError(
                "the mocap source has no clips outside dm_control's ALL for the 'extra' mode; drop it from "
                f"--modes (choices: {', '.join(MULTICLIP_EVAL_MODES)})."
            )
        # Whole clips, named by their resolved snippet id so the table shows their length.
        return [resolve_snippet(clip).id for clip in clips]
    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MULTICLIP_EVAL_MODES)}.")


def mode_table(title: str, report: dict, labels: list[str]) -> Table:
    """One mode's table: a row per snippet and a mean row; expert columns and ratios where experts ran."""
    experts = report["experts"]["snippets"]
    prefix = {label: f"{label}: " if len(labels) > 1 else "" for label in labels}
    kinds = (("start", "start"), ("rsi", "random"))
    table = Table(title=title)
    table.add_column("snippet", no_wrap=True, min_width=max(len(s) for s in [*report["snippets"], "mean"]))
    for label in labels:
        for _, kind_name in kinds:
            table.add_column(f"{prefix[label]}{kind_name}: norm. return", justify="right")
            table.add_column(f"{prefix[label]}{kind_name}: norm. length", justify="right")
    if experts:
        for _, kind_name in kinds:
            table.add_column(f"expert {kind_name}: norm. length", justify="right")
        for label in labels:
            for _, kind_name in kinds:
                table.add_column(f"{prefix[label]}policy / expert ({kind_name})", justify="right")
    for snippet in report["snippets"]:
        row = []
        for label in labels:
            result = report["policies"][label]["snippets"][snippet]
            row += [
                f"{result[k][f'mean_{m}']:.3f}"
                for k, _ in kinds
                for m in ("norm_episode_return", "norm_episode_length")
            ]
        if experts:
            expert = experts.get(snippet)
            row += [f"{expert[k]['mean_norm_episode_length']:.3f}" if expert else "-" for k, _ in kinds]
            for label in labels:
                ratio = report["policies"][label]["ratios"].get(snippet)
                row += [f"{ratio[k]:.2f}" if ratio else "-" for k, _ in kinds]
        table.add_row(snippet, *row)
    row = []
    for label in labels:
        mean = report["policies"][label]["mean"]
        row += [f"{mean[f'{k}_{m}']:.3f}" for k, _ in kinds for m in ("norm_episode_return", "norm_episode_length")]
    if experts:
        mean = report["experts"]["mean"]
        row += [f"{mean[f'{k}_norm_episode_length']:.3f}" for k, _ in kinds]
        for label in labels:
            ratio = report["policies"][label]["mean_ratio"]
            row += [f"{ratio[k]:.2f}" for k, _ in kinds]
    table.add_row("mean", *row, style="bold")
    return table


def load_policies(args: Args) -> tuple[list[str], dict[str, MultiClipPolicy], tuple[int, ...]]:
    """The policies' labels, the policies by label and the reference steps they all look at; raises ``ValueError``
    naming a bad mode, label or mix of reference steps."""
    unknown = [mode for mode in args.modes if mode not in MULTICLIP_EVAL_MODES]
    if unknown:
        raise ValueError(f"unknown mode {unknown[0]!r}; choose from {', '.join(MULTICLIP_EVAL_MODES)}.")
    if not args.policy:
        raise ValueError("give at least one --policy.")
    labels = args.labels or [str(path) for path in args.policy]
    if len(labels) != len(args.policy) or len(set(labels)) != len(labels):
        raise ValueError(f"--labels needs one distinct label per policy: {len(args.policy)} policies, labels {labels}.")
    if EXPERT_LABEL in labels:
        raise ValueError(f"--labels may not use {EXPERT_LABEL!r}, the name of the snippets' own experts.")
    policies = {label: MultiClipPolicy.load(path) for label, path in zip(labels, args.policy, strict=True)}
    ref_steps = {policy.config.ref_steps for policy in policies.values()}
    if len(ref_steps) > 1:
        raise ValueError(f"the policies look at different reference steps {sorted(ref_steps)}; evaluate them apart.")
    return labels, policies, ref_steps.pop()


def mode_entry(
    snippets: list[str], labels: list[str], policy_results: dict[str, dict], expert_results: dict[str, dict]
) -> dict:
    """One mode's part of the report: each policy's results, means and ratios to the snippets' experts."""
    own_experts = {s: expert_results[s] for s in snippets if s in expert_results}
    entry: dict = {"snippets": snippets, "policies": {}, "experts": {"snippets": own_experts}}
    entry["experts"]["mean"] = mean_metrics(own_experts)
    for label in labels:
        results = {s: policy_results[label][s] for s in snippets}
        ratios = length_ratios(results, own_experts)
        mean_ratio = {k: float(np.mean([r[k] for r in ratios.values()])) for k in START_KINDS} if ratios else {}
        ratio_of_means = {}
        if ratios:
            mean_ratio["rsi_fraction_at_target"] = float(
                np.mean([r["rsi"] >= EXPERT_RATIO_TARGET for r in ratios.values()])
            )
            # The issue's measure: the share of the experts' mean normalized length the policy keeps on the
            # snippets with an expert (mean_ratio is the mean of the per-snippet ratios).
            with_expert_mean = mean_metrics({s: results[s] for s in ratios})
            ratio_of_means = {
                k: with_expert_mean[f"{k}_norm_episode_length"] / entry["experts"]["mean"][f"{k}_norm_episode_length"]
                for k in START_KINDS
            }
        entry["policies"][label] = {
            "snippets": results,
            "mean": mean_metrics(results),
            "ratios": ratios,
            "mean_ratio": mean_ratio,
            "ratio_of_means": ratio_of_means,
        }
    return entry


def print_mode(console: Console, title: str, entry: dict, labels: list[str]) -> None:
    """One mode's table and, for each policy with experts to compare to, its ratio summary."""
    console.print(mode_table(title, entry, labels))
    for label in labels:
        ratio = entry["policies"][label]["mean_ratio"]
        if ratio:
            who = f"{label}: " if len(labels) > 1 else ""
            of_means = entry["policies"][label]["ratio_of_means"]
            console.print(
                f"{who}{ratio['rsi_fraction_at_target']:.0%} of the {len(entry['policies'][label]['ratios'])} "
                f"snippets with an expert keep >= {EXPERT_RATIO_TARGET:g} of its random-start normalized length; "
                f"mean normalized length / the experts': {of_means['start']:.3f} from the snippet start, "
                f"{of_means['rsi']:.3f} from random starts."
            )


def main(args: Args) -> dict:
    labels, policies, ref_steps = load_policies(args)
    experts = expert_runs(args.experts) if args.experts else {}

    if args.snippets:
        groups = {"snippets": [s.id for s in resolve_snippets(args.snippets)]}
    else:
        if not args.modes:
            raise ValueError(f"give --modes (from {', '.join(MULTICLIP_EVAL_MODES)}) or --snippets.")
        groups = {mode: mode_snippets(mode, policies, experts, args) for mode in dict.fromkeys(args.modes)}
    if args.plot and not any(s in experts for snippets in groups.values() for s in snippets):
        raise ValueError(
            "--plot draws policy / expert ratios, and no evaluated snippet has an expert: give --experts "
            "(for example zoo) with experts for the train or val snippets."
        )
    for label, policy in policies.items():
        trained_on = set(policy.config.trained_snippets) & set(groups.get("val", ()))
        if trained_on:
            print(
                f"note: {label} trained on validation snippets {', '.join(sorted(trained_on))}: they are not held out."
            )

    # Each snippet runs once per policy and once for its expert, whichever modes name it.
    wanted = list(dict.fromkeys(s for snippets in groups.values() for s in snippets))
    with_expert = [s for s in wanted if s in experts]
    units = [(label, snippet) for snippet in wanted for label in labels]
    units += [(EXPERT_LABEL, snippet) for snippet in with_expert]
    report = {
        "episodes": args.episodes,
        "deterministic": args.deterministic,
        "experts_sample": args.experts_sample,
        "seed": args.seed,
        "ref_steps": list(ref_steps),
        "target_ratio": EXPERT_RATIO_TARGET,
        "labels": labels,  # the order given (write_json sorts the keys of the mappings below)
        "policies": {label: str(path) for label, path in zip(labels, args.policy, strict=True)},
        "expert_folders": [str(folder) for folder in args.experts],
        "modes": {},
    }
    reused = reusable_results(args, report, labels) if args.reuse else {}
    if args.reevaluate and not args.reuse:
        raise ValueError("--reevaluate needs --reuse, the earlier report whose other results stand.")
    units = [(label, snippet) for label, snippet in units if snippet not in reused.get(label, {})]
    if reused:
        report["reused"] = {
            "from": str(args.reuse),
            "policies_then": {label: read_json(args.reuse)["policies"][label] for label in labels},
            "reevaluated": sorted({snippet for _, snippet in units}),
        }
        print(f"reusing {sum(len(r) for r in reused.values())} results of {args.reuse}; evaluating {len(units)} runs.")
    progress = tqdm(total=len(units), desc=f"evaluating ({args.workers} workers)", unit="run")
    results = evaluate_units(
        {label: str(path) for label, path in zip(labels, args.policy, strict=True)},
        {snippet: str(experts[snippet].run_dir) for snippet in with_expert},
        units,
        args.episodes,
        ref_steps=ref_steps,
        deterministic=args.deterministic,
        experts_sample=args.experts_sample,
        seed=args.seed,
        workers=args.workers,
        on_result=lambda label, snippet: progress.update(1),
    )
    progress.close()
    for label, by_snippet in reused.items():
        results.setdefault(label, {}).update({s: m for s, m in by_snippet.items() if s in wanted})
    policy_results = {label: results.get(label, {}) for label in labels}
    expert_results = results.get(EXPERT_LABEL, {})
    console = Console()
    for mode, snippets in groups.items():
        entry = report["modes"][mode] = mode_entry(snippets, labels, policy_results, expert_results)
        title = f"{mode}: {MODE_TITLES[mode]}, {len(snippets)} snippets, {args.episodes} episodes per snippet and start"
        print_mode(console, title, entry, labels)
    if args.output_json:
        write_json(args.output_json, report)
        print(f"metrics: {args.output_json}")
    if args.plot:
        panels = {
            f"{mode}: {MODE_TITLES[mode]}": {label: entry["policies"][label]["ratios"] for label in labels}
            for mode, entry in report["modes"].items()
        }
        plot_length_ratios(
            panels,
            args.plot,
            EXPERT_RATIO_TARGET,
            title=f"policy / expert normalized episode length, {args.episodes} episodes per snippet and start",
        )
        print(f"plot: {args.plot}")
    if args.video:
        first_label, first_snippet = labels[0], wanted[0]
        frames, fps = record_episode(
            policies[first_label], first_snippet, deterministic=args.deterministic, seed=args.seed
        )
        write_video(args.video, frames, fps)
        print(f"video: {args.video}")
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
