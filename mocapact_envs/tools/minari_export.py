"""``mocapact-minari``: expert rollout files as Minari datasets.

One dataset per clip file (``mocapact/CMU_016_22/expert-v0``), one for all the files given
(``--collection``) or the expert zoo's (``--zoo small`` or ``--zoo large``); what each dataset
stores is :mod:`mocapact_envs.datasets.minari_export`'s.

    mocapact-minari rollouts/CMU_016_22.hdf5
    mocapact-minari rollouts/ --collection walk --author "A. Person" --author-email a@example.org
    mocapact-minari rollouts/zoo_small --zoo small
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mocapact_envs.datasets.minari_export import (
    ACTION_KEYS,
    DATA_FORMATS,
    DEFAULT_AUTHOR,
    check_can_write,
    check_export_options,
    check_preset,
    check_version,
    dataset_folder,
    export_to_minari,
    minari_dataset_id,
    zoo_dataset_id,
)
from mocapact_envs.datasets.rollouts import RolloutFiles, expand_rollout_paths
from mocapact_envs.files import check_writable_folder
from mocapact_envs.tools.help_format import DefaultsHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mocapact-minari",
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("rollouts", nargs="+", type=Path, help="rollout files or folders of CMU_*.hdf5 files")
    parser.add_argument(
        "--collection", help="one dataset mocapact/<collection>/expert-vN of all files (default: one per clip file)"
    )
    parser.add_argument(
        "--zoo", choices=("small", "large"), help="one dataset mocapact/zoo/<variant>-vN of the expert zoo's rollouts"
    )
    parser.add_argument("--version", type=int, default=0, help="the datasets' version number (>= 0)")
    parser.add_argument("--action-key", choices=ACTION_KEYS, default="actions", help="which actions to store")
    parser.add_argument("--include-cameras", action="store_true", help="store egocentric camera frames too")
    parser.add_argument("--author", default=DEFAULT_AUTHOR)
    parser.add_argument("--author-email")
    parser.add_argument("--code-permalink", help="link to the code that made the rollouts")
    parser.add_argument(
        "--ref-min-episodes", type=int, default=10, help="zero-action episodes for ref_min_score (>= 1)"
    )
    parser.add_argument("--data-format", choices=DATA_FORMATS, default="hdf5", help="Minari storage format")
    parser.add_argument("--jpeg", action="store_true", help="JPEG-encode camera frames (lossy, smaller)")
    parser.add_argument("--overwrite", action="store_true", help="replace datasets that already exist")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        check_export_options(args.action_key, args.data_format, args.ref_min_episodes)
        check_version(args.version)
        paths = expand_rollout_paths(args.rollouts)
        if args.zoo and args.collection:
            raise ValueError("--zoo and --collection each name the dataset; pass one of them.")
        if args.zoo:
            check_preset(paths, args.zoo)
            jobs = [(zoo_dataset_id(args.zoo, args.version), paths)]
        elif args.collection:
            jobs = [(minari_dataset_id(args.collection, args.version), paths)]
        else:
            jobs = [(minari_dataset_id(path.stem, args.version), [path]) for path in paths]
        # Every refusal before the first dataset is written, not after some of them.
        check_writable_folder(dataset_folder(), "Minari datasets folder")
        for name, _ in jobs:
            check_can_write(name, args.overwrite)
    except (ValueError, FileNotFoundError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 2
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        for name, job_paths in jobs:
            try:
                task = bar.add_task(name, total=len(RolloutFiles(job_paths).episodes))
                with warnings.catch_warnings():
                    # An email is optional here; Minari warns about it on every dataset.
                    warnings.filterwarnings("ignore", message="`author_email` is set to None")
                    dataset = export_to_minari(
                        job_paths,
                        name,
                        action_key=args.action_key,
                        include_cameras=args.include_cameras,
                        author=args.author,
                        author_email=args.author_email,
                        code_permalink=args.code_permalink,
                        ref_min_episodes=args.ref_min_episodes,
                        data_format=args.data_format,
                        jpeg_encoding=args.jpeg,
                        overwrite=args.overwrite,
                        progress=lambda n, task=task: bar.advance(task, n),
                    )
            except (ValueError, FileNotFoundError) as error:
                console.print(f"[red]error:[/red] {error}")
                return 2
            bar.console.print(f"{name}: {dataset.total_episodes} episodes, {dataset.total_steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
