"""``mocapact-collect``: roll out clip experts into MoCapAct's per-clip HDF5 files.

Finds every expert run under the given folders (a ``clip_info.json`` beside an
``eval_rsi/model``), groups the snippets by clip and writes ``<clip>.hdf5`` per
clip (layout in :mod:`mocapact_envs.datasets.rollouts`) and, at the end,
``dataset_metrics.npz`` over every clip file in the output folder. What is rolled out
and how (noise, seeds, student drivers, cameras, resuming, Ray) is
:mod:`mocapact_envs.datasets.collect`'s.

    mocapact-collect experts/ --output-dir rollouts/ --small --workers 2
    mocapact-collect zoo --snippets CMU_016_22-0-82 --output-dir rollouts/ --small
    mocapact-collect zoo --output-dir rollouts/zoo_large --large --address 10.0.0.5:6379
    python -m mocapact_envs.tools.collect experts/ --output-dir rollouts/ --clips CMU_016_22
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mocapact_envs.datasets.collect import DATASET_METRICS_FILE, PRESETS, PROPRIO_SETS, RolloutSettings, collect
from mocapact_envs.envs.factory import available_backends, default_backend
from mocapact_envs.files import check_writable_folder
from mocapact_envs.mocap.ids import suggest
from mocapact_envs.policies.run_layout import ExpertRun, expert_folder_argument, find_experts
from mocapact_envs.tasks.tracking_settings import TERMINATION_ERROR_THRESHOLD
from mocapact_envs.tools.help_format import DefaultsHelpFormatter
from mocapact_envs.training.ray_cluster import check_ray_address


def unmatched_ids(requested: Sequence[str], available: Sequence[ExpertRun]) -> str | None:
    """``None`` when every requested clip or snippet id has an expert, else a message naming those that do not,
    with the closest ids found."""
    names = sorted({name for run in available for name in run.names})
    missing = [name for name in requested if name not in names]
    if not missing:
        return None
    snippets = sorted({run.aliases[0] if run.aliases else run.snippet.id for run in available})
    shown = ", ".join(snippets[:8]) + (f" and {len(snippets) - 8} more" if len(snippets) > 8 else "")
    problems = " ".join(f"No expert for {name}.{suggest(name, names)}" for name in missing)
    return f"{problems} The expert folders hold {len(snippets)} snippets: {shown or 'none'}."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mocapact-collect",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "expert_dirs",
        nargs="+",
        type=Path,
        help="folders searched for <run>/clip_info.json; 'zoo' is the project's expert zoo (mocapact_envs.tools.zoo)",
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="where <clip>.hdf5 files go")
    preset = parser.add_mutually_exclusive_group()
    small, large = PRESETS["small"], PRESETS["large"]
    preset.add_argument(
        "--small", action="store_true", help=f"MoCapAct's small dataset: {small[0]} + {small[1]} rollouts a snippet"
    )
    preset.add_argument(
        "--large",
        action="store_true",
        help=f"MoCapAct's large dataset: {large[0]} + {large[1]} rollouts a snippet (the default preset)",
    )
    parser.add_argument(
        "--n-start-rollouts",
        type=int,
        help=f"episodes from the snippet start (default: the preset's, {large[0]}; {small[0]} with --small)",
    )
    parser.add_argument(
        "--n-rsi-rollouts",
        type=int,
        help=f"episodes from random starts (default: the preset's, {large[1]}; {small[1]} with --small)",
    )
    parser.add_argument("--act-noise", type=float, default=0.1, help="std of the Gaussian action noise")
    parser.add_argument(
        "--driver-policy",
        help="a saved multi-clip policy (<run>/best) that acts instead of the experts, sampling; the experts label "
        "its states (DAgger's data; --act-noise is then unused)",
    )
    parser.add_argument(
        "--driver-deterministic", action="store_true", help="the driver acts with its means instead of sampling"
    )
    parser.add_argument("--ref-steps", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="reference steps")
    parser.add_argument("--min-steps", type=int, default=30, help="fewest steps a random start leaves")
    parser.add_argument(
        "--termination-error-threshold",
        type=float,
        default=TERMINATION_ERROR_THRESHOLD,
        help="tracking error that ends an episode",
    )
    parser.add_argument(
        "--observables",
        choices=PROPRIO_SETS,
        default="all_proprioceptive",
        help="log every proprioceptive observable (2868) or multi-clip policies' set (2847)",
    )
    parser.add_argument("--log-cameras", action="store_true", help="also log egocentric camera frames")
    parser.add_argument("--camera-size", type=int, default=64, help="camera frame height and width")
    parser.add_argument("--clips", "--snippets", nargs="+", dest="clips", help="only these clip or snippet ids")
    parser.add_argument("--workers", type=int, default=1, help="clips collected in parallel processes")
    parser.add_argument(
        "--address", help="a Ray cluster's address (host:port, auto) or 'local': clips as Ray tasks, not --workers"
    )
    parser.add_argument("--seed", type=int, default=0, help="with each snippet id, seeds that snippet's rollouts")
    parser.add_argument("--backend", choices=available_backends(), help="tracking env backend (default: fastest)")
    parser.add_argument("--mocap-path", help="reference clips (default: $MOCAPACT_MOCAP_PATH)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="collect clips again even if their file exists (also one made with other settings or experts)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> RolloutSettings:
    n_start, n_rsi = PRESETS["small" if args.small else "large"]
    return RolloutSettings(
        n_start_rollouts=n_start if args.n_start_rollouts is None else args.n_start_rollouts,
        n_rsi_rollouts=n_rsi if args.n_rsi_rollouts is None else args.n_rsi_rollouts,
        act_noise=args.act_noise,
        ref_steps=tuple(args.ref_steps),
        min_steps=args.min_steps,
        termination_error_threshold=args.termination_error_threshold,
        observables=args.observables,
        log_cameras=args.log_cameras,
        camera_size=args.camera_size,
        seed=args.seed,
        backend=args.backend,
        mocap_path=args.mocap_path,
        driver_policy=args.driver_policy,
        driver_deterministic=args.driver_deterministic,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        settings = settings_from_args(args)
        if settings.backend is None:
            settings = dataclasses.replace(settings, backend=default_backend())
        check_writable_folder(args.output_dir, "output folder (--output-dir)")
        if args.address:
            check_ray_address(args.address)
        expert_dirs = [expert_folder_argument(path) for path in args.expert_dirs]
        search = find_experts(expert_dirs, args.clips)
        if args.clips:
            every = find_experts(expert_dirs)
            problem = unmatched_ids(args.clips, [run for runs in every.runs_by_clip.values() for run in runs])
            if problem:
                raise ValueError(problem)
    except (ValueError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 2
    for run_dir in search.without_model:
        console.print(f"[yellow]note:[/yellow] {run_dir} has no eval_rsi/model yet; skipped.")
    for kept, other in search.duplicates:
        console.print(f"[yellow]note:[/yellow] {other.run_dir} also tracks {kept.snippet.id}; using {kept.run_dir}.")
    if not search.runs_by_clip:
        where = ", ".join(str(d) for d in args.expert_dirs)
        console.print(
            f"[red]error:[/red] no expert with eval_rsi/model under {where}"
            + (f" for clips {', '.join(args.clips)}" if args.clips else "")
            + "."
        )
        return 2

    console.print(
        f"{len(search.runs_by_clip)} clips, {search.num_snippets} snippet experts; "
        f"{settings.n_start_rollouts} start + {settings.n_rsi_rollouts} random-start rollouts each; "
        f"{settings.observables}, backend {settings.backend}, "
        f"{f'Ray tasks ({args.address})' if args.address else f'{args.workers} worker(s)'} -> {args.output_dir}"
    )
    total = search.num_snippets * settings.episodes_per_snippet
    started = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("Collecting", total=total)
        clips_done = [0]

        def on_clip(clip_id: str, status: str) -> None:
            clips_done[0] += 1
            bar.update(task, description=f"Collecting ({clips_done[0]}/{len(search.runs_by_clip)} clips)")
            if status == "skipped":
                bar.console.print(f"{clip_id}: already collected, skipped")

        try:
            paths = collect(
                search.runs_by_clip,
                args.output_dir,
                settings,
                workers=args.workers,
                overwrite=args.overwrite,
                progress=lambda n: bar.advance(task, n),
                on_clip=on_clip,
                address=args.address,
            )
        except ValueError as error:
            console.print(f"[red]error:[/red] {error}")
            return 2
    console.print(
        f"{len(paths)} clip files and {DATASET_METRICS_FILE} in {args.output_dir} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
