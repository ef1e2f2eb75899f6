"""Evaluate a distilled multi-clip policy on snippets: a table per snippet and a video.

    python baselines/distill/evaluate.py --policy runs/npmp/best --snippets CMU_016_22 CMU_009_12-0-198

For each snippet, N episodes from the snippet start and N from random starts
(``min_steps`` 10, reference steps from the policy), MoCapAct's metrics, and
optionally the same metrics of the snippet's own expert beside them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from mocapact_envs.demo import write_video
from mocapact_envs.evaluation.protocol import evaluate_snippets, record_episode
from mocapact_envs.files import write_json
from mocapact_envs.mocap.ids import resolve_snippets
from mocapact_envs.policies.expert_files import find_experts, load_expert
from mocapact_envs.policies.multiclip import MultiClipPolicy
from mocapact_envs.training.scripts import run_cli


@dataclass
class Args:
    policy: Path
    """A saved multi-clip policy directory (``<run>/best``)."""
    snippets: list[str] = field(default_factory=list)
    """Clip or snippet ids, collections or id list files; default: the snippets the policy trained on."""
    episodes: int = 10
    """Episodes per snippet and start kind."""
    deterministic: bool = False
    """Act with the latent and action means instead of sampling."""
    experts: Path | None = None
    """Folder of the snippets' own experts: evaluate each under the same protocol and show it beside."""
    video: Path | None = None
    """Write a video of the first snippet (from its start) here, e.g. ``npmp.mp4``."""
    output_json: Path | None = None
    """Also write the per-snippet metrics here."""
    seed: int = 0


def main(args: Args) -> dict:
    policy = MultiClipPolicy.load(args.policy)
    snippet_ids = [s.id for s in resolve_snippets(args.snippets)] if args.snippets else []
    if not snippet_ids:
        snippet_ids = list(policy.config.trained_snippets)
        if not snippet_ids:
            raise ValueError(f"{args.policy} does not record the snippets it trained on: give --snippets.")
    results = evaluate_snippets(
        policy,
        snippet_ids,
        args.episodes,
        ref_steps=policy.config.ref_steps,
        deterministic=args.deterministic,
        seed=args.seed,
    )
    expert_results = {}
    if args.experts:
        runs = find_experts([args.experts], snippet_ids).runs_by_clip
        experts = {
            r.snippet.id: load_expert(r.run_dir) for rs in runs.values() for r in rs if r.snippet.id in snippet_ids
        }
        if experts:
            expert_results = evaluate_snippets(
                experts, list(experts), args.episodes, ref_steps=policy.config.ref_steps, seed=args.seed
            )
    table = Table(title=f"{args.policy} over {args.episodes} episodes per snippet and start kind")
    columns = ["snippet", "start: norm. return", "start: norm. length", "random: norm. return", "random: norm. length"]
    if expert_results:
        columns += ["expert start: norm. length", "expert random: norm. length", "policy / expert (random)"]
    for column in columns:
        table.add_column(column, justify="left" if column == "snippet" else "right")
    for snippet, result in results.items():
        row = [
            f"{result[k][f'mean_{m}']:.3f}"
            for k in ("start", "rsi")
            for m in ("norm_episode_return", "norm_episode_length")
        ]
        if expert_results:
            expert = expert_results.get(snippet)
            if expert is None:
                row += ["-", "-", "-"]
            else:
                own = expert["rsi"]["mean_norm_episode_length"]
                row += [f"{expert['start']['mean_norm_episode_length']:.3f}", f"{own:.3f}",
                        f"{result['rsi']['mean_norm_episode_length'] / own:.2f}"]  # fmt: skip
        table.add_row(snippet, *row)
    means = {
        f"{kind}_{m}": float(np.mean([r[kind][f"mean_{m}"] for r in results.values()]))
        for kind in ("start", "rsi")
        for m in ("norm_episode_return", "norm_episode_length")
    }
    table.add_row("mean", *(f"{v:.3f}" for v in means.values()), style="bold")
    if expert_results:
        means["expert_rsi_norm_episode_length"] = float(
            np.mean([r["rsi"]["mean_norm_episode_length"] for r in expert_results.values()])
        )
    Console().print(table)
    if args.output_json:
        report = {"snippets": results, "mean": means, "experts": expert_results}
        write_json(args.output_json, report)
    if args.video:
        frames, fps = record_episode(policy, snippet_ids[0], deterministic=args.deterministic, seed=args.seed)
        write_video(args.video, frames, fps)
        print(f"video: {args.video}")
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
