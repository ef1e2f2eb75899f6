"""``mocapact-convert``: convert a folder of CMU ``.amc`` clips explicitly.

Converted clips go to the cache that environments read (so later runs start at
once), or into one HDF5 file with ``--output``. Prints, per clip, its steps,
duration and the share of joint values outside the walker's joint ranges.

    mocapact-convert ../shared/cmu-mocap
    mocapact-convert ../shared/cmu-mocap --clips CMU_016_22 CMU_009_12 --output clips.h5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h5py
from rich.console import Console
from rich.progress import track
from rich.table import Table

from mocapact_envs.mocap.source import AMCFolderSource, MocapSourceError, atomic_h5_write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mocapact-convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder holding CMU .amc files (searched recursively)")
    parser.add_argument("--clips", nargs="+", help="clip ids to convert (default: every clip in the folder)")
    parser.add_argument("--output", type=Path, help="write all converted clips into this one HDF5 file")
    args = parser.parse_args(argv)
    console = Console()
    try:
        source = AMCFolderSource(args.folder)
        clip_ids = args.clips or list(source.available_clips())
        unknown = [c for c in clip_ids if c not in source.files]
        if unknown:
            raise MocapSourceError(f"{source.description} lacks {', '.join(unknown)}.")
    except MocapSourceError as error:
        console.print(f"[red]error:[/red] {error}")
        return 2

    table = Table(title=f"{len(clip_ids)} clips from {source.folder}")
    for column in ("clip", "steps", "duration (s)", "joints out of range"):
        table.add_column(column, justify="left" if column == "clip" else "right")
    started = time.perf_counter()
    paths = {}
    for clip_id in track(clip_ids, description="Converting", console=console):
        paths[clip_id] = source.convert(clip_id)
        with h5py.File(paths[clip_id], "r") as h5:
            group = h5[clip_id]
            steps, dt = int(group.attrs["num_steps"]), float(group.attrs["dt"])
            violation = float(group["walkers/walker_0"].attrs["joint_range_violation"])
        table.add_row(clip_id, str(steps), f"{(steps - 1) * dt:.2f}", f"{violation:.1%}")
    if args.output:

        def fill(out: h5py.File) -> None:
            for clip_id, path in paths.items():
                with h5py.File(path, "r") as h5:
                    h5.copy(h5[clip_id], out, name=clip_id)

        atomic_h5_write(args.output, fill)
    console.print(table)
    where = args.output or source.cached_clip_path(clip_ids[0]).parent
    console.print(f"{len(clip_ids)} clips converted in {time.perf_counter() - started:.1f} s into {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
