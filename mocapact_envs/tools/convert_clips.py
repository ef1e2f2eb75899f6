"""``mocapact-convert``: convert a folder of CMU ``.amc`` clips explicitly.

Converted clips go to the cache that environments read (so later runs start at
once), or into one HDF5 file with ``--output``. Prints, per clip, its steps,
duration and the share of joint values outside the walker's joint ranges; with
``--report``, each clip's quality report (root scale, height correction, floor
penetration before and after it, broken steps) and the clips that could not be
made plausible, with the reason (``--report-json report.json`` also writes it).

    mocapact-convert ../shared/cmu-mocap
    mocapact-convert ../shared/cmu-mocap --report
    mocapact-convert ../shared/cmu-mocap --clips CMU_016_22 CMU_009_12 --output clips.h5
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import h5py
from rich.console import Console
from rich.progress import track
from rich.table import Table

from mocapact_envs.files import OutputWriteError, check_writable_folder, write_json
from mocapact_envs.mocap.amc import AMCFileError
from mocapact_envs.mocap.retarget import PENETRATION_REPORT_DEPTH, ClipQuality, describe_steps
from mocapact_envs.mocap.source import AMCFolderSource, MocapSourceError, atomic_h5_write


def quality_table(qualities: dict[str, ClipQuality]) -> Table:
    """One row per clip of its quality report; lengths in cm."""
    table = Table(
        title="Quality per clip: root scale; height correction (median, largest deviation); deepest penetration "
        f"before and after it, share of steps > {round(PENETRATION_REPORT_DEPTH * 100)} cm below the floor, median "
        "lowest point (unbroken steps); share of steps in ground contact; joint values out of range, worst joint "
        "(rad beyond its range); broken steps. Lengths in cm."
    )
    columns = (
        "clip",
        "scale",
        "offset",
        "spread",
        "deep was",
        "deep",
        "> 2cm",
        "median",
        "contact",
        "out",
        "worst",
        "broken",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("clip", "worst") else "right")
    for clip_id, q in qualities.items():
        table.add_row(
            clip_id,
            f"{q.root_scale:.2f}",
            f"{100 * q.height_offset_m:+.1f}",
            f"{100 * q.height_offset_spread_m:.1f}",
            f"{100 * q.source_deepest_penetration_m:.1f}",
            f"{100 * q.deepest_penetration_m:.1f}",
            f"{q.penetrating_share:.0%}",
            f"{100 * q.median_lowest_height_m:+.1f}",
            f"{q.contact_share:.0%}",
            f"{q.joint_range_violation:.0%}",
            f"{q.worst_joint} {q.worst_joint_excess_rad:.2f}",
            describe_steps(q.broken_steps) or "-",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mocapact-convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder holding CMU .amc files (searched recursively)")
    parser.add_argument("--clips", nargs="+", help="clip ids to convert (default: every clip in the folder)")
    parser.add_argument("--output", type=Path, help="write all converted clips into this one HDF5 file")
    parser.add_argument(
        "--report",
        action="store_true",
        help="print each clip's quality report and the clips that could not be made plausible",
    )
    parser.add_argument("--report-json", type=Path, help="also write the quality reports to this JSON file")
    args = parser.parse_args(argv)
    console = Console()
    try:
        source = AMCFolderSource(args.folder)
        clip_ids = args.clips or list(source.available_clips())
        unknown = [c for c in clip_ids if c not in source.files]
        if unknown:
            raise MocapSourceError(f"{source.description} lacks {', '.join(unknown)}.")
        # Before converting anything: an unwritable destination would otherwise fail at the end.
        for output in (args.output, args.report_json):
            if output is not None:
                check_writable_folder(output.parent, f"the folder of {output}")
    except (MocapSourceError, OutputWriteError) as error:
        console.print(f"[red]error:[/red] {error}")
        return 2

    table = Table(title=f"{len(clip_ids)} clips from {source.folder}")
    for column in ("clip", "steps", "duration (s)", "joints out of range"):
        table.add_column(column, justify="left" if column == "clip" else "right")
    started = time.perf_counter()
    paths, qualities = {}, {}
    for clip_id in track(clip_ids, description="Converting", console=console):
        try:
            paths[clip_id] = source.convert(clip_id)
        except AMCFileError as error:
            console.print(f"[red]error:[/red] {error}")
            return 2
        with h5py.File(paths[clip_id], "r") as h5:
            group = h5[clip_id]
            steps, dt = int(group.attrs["num_steps"]), float(group.attrs["dt"])
            qualities[clip_id] = ClipQuality.from_json(group.attrs["quality"])
        violation = qualities[clip_id].joint_range_violation
        table.add_row(clip_id, str(steps), f"{(steps - 1) * dt:.2f}", f"{violation:.1%}")
    if args.output:

        def fill(out: h5py.File) -> None:
            for clip_id, path in paths.items():
                with h5py.File(path, "r") as h5:
                    h5.copy(h5[clip_id], out, name=clip_id)

        atomic_h5_write(args.output, fill)
    console.print(table)
    if args.report or args.report_json:
        # Wider than a default 80-column pipe: twelve columns do not fit it.
        Console(width=max(console.width, 150)).print(quality_table(qualities))
        flagged = {clip_id: q.problems for clip_id, q in qualities.items() if q.problems}
        console.print(
            f"{len(flagged)} of {len(qualities)} clips could not be made plausible (strict=True refuses them):"
        )
        for clip_id, problems in flagged.items():
            console.print(f"  {clip_id}: {'; '.join(problems)}")
        if args.report_json:
            write_json(args.report_json, {clip_id: dataclasses.asdict(q) for clip_id, q in qualities.items()})
            console.print(f"quality reports written to {args.report_json}")
    where = args.output or source.cached_clip_path(clip_ids[0]).parent
    console.print(f"{len(clip_ids)} clips converted in {time.perf_counter() - started:.1f} s into {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
