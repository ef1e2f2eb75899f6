"""How well converted reference clips fit the V2020 walker: floor penetration and open-loop survival.

For every clip of the source (``MOCAPACT_MOCAP_PATH``, converted into ``MOCAPACT_CACHE_DIR``):

* floor: the walker set kinematically to each reference step (root position, orientation and
  joints from the features), the signed height of its lowest colliding geom above the floor;
  per clip the deepest penetration, the share of steps more than 2 cm and 3 cm below the floor and
  the median step's lowest point, over all steps and over the steps the clip's quality report does
  not flag as broken;
* open loop: from the clip start (``random_start=False``, seed 0) of the fast tracking env, each
  step's action is the walker's ``cmu_pose_to_actuation`` of the next reference step's joints,
  clipped to [-1, 1]; the steps survived before termination (tracking error above 0.3), of the
  clip's ``num_steps - 1``, and the mean tracking error over the first 10 steps.

Writes one JSON file per run; ``--compare`` prints two runs side by side (for example the
converter before and after a change, each with its own cache directory)::

    MOCAPACT_CACHE_DIR=/tmp/cache python benchmarks/reference_fidelity.py --output after.json
    python benchmarks/reference_fidelity.py --compare before.json after.json

``docs/reference_fidelity_v1_root_scale_1.2.json`` was measured on the files the converter before
the floor fitting (version 1: root x 1.2) had cached, linked into one HDF5 file (``h5py.ExternalLink``
per clip) and passed as ``--mocap-path``; ``docs/reference_fidelity_v3_fitted.json`` on the shared
folder converted by version 3. Its floor and survival figures match a run of the version-1 code itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from mocapact_envs.files import read_json, write_json
from mocapact_envs.mocap import amc
from mocapact_envs.mocap.source import get_source
from mocapact_envs.tasks.reference_actions import pose_to_action

PENETRATION_DEPTHS = (0.02, 0.03)
#: The open-loop tracking error is averaged over this many first steps (all clips survive them but one).
EARLY_STEPS = 10


def floor_statistics(heights: np.ndarray) -> dict[str, float]:
    """Penetration figures of one clip's lowest-point heights (metres, negative below the floor)."""
    stats = {
        "deepest_penetration_m": float(max(0.0, -heights.min())),
        "median_lowest_height_m": float(np.median(heights)),
    }
    for depth in PENETRATION_DEPTHS:
        stats[f"share_below_{round(depth * 100)}cm"] = float(np.mean(heights < -depth))
    return stats


def open_loop_survival(clip_id: str, mocap_path: str | None) -> dict[str, float]:
    """Steps the walker survives from the clip start under the next reference step's joint targets,
    and its mean tracking error over the first :data:`EARLY_STEPS` of them."""
    from mocapact_envs.envs.tracking import MocapTrackingEnv

    env = MocapTrackingEnv(clip_id, mocap_path=mocap_path, random_start=False)
    joints = env.clip_set.reference_features(0)["joints"]
    env.reset(seed=0)
    survived, possible, errors = 0, len(joints) - 1, []
    for step in range(possible):
        _, _, terminated, truncated, info = env.step(pose_to_action(joints[step + 1]))
        errors.append(info["tracking_error"])
        if terminated:
            break
        survived = step + 1
        if truncated:
            break
    env.close()
    return {
        "open_loop_steps": survived,
        "possible_steps": possible,
        "early_tracking_error": float(np.mean(errors[:EARLY_STEPS])),
    }


def measure(clip_ids: list[str], mocap_path: str | None) -> dict:
    source = get_source(mocap_path)
    poser = amc.walker_poser()
    clips = {}
    for clip_id in track(clip_ids, description="Measuring"):
        clip_set = source.clip_set(clip_id)
        heights = poser.feature_lowest_points(clip_set.reference_features(0))
        quality = clip_set.quality(clip_id)
        broken = set(quality.broken_steps) if quality else set()
        kept = np.array([step not in broken for step in range(len(heights))])
        clips[clip_id] = {
            "all_steps": floor_statistics(heights),
            "unbroken_steps": floor_statistics(heights[kept]),
            "broken_steps": sorted(broken),
            **open_loop_survival(clip_id, mocap_path),
        }
    return {
        "converter_version": amc.CONVERTER_VERSION,
        "source": source.description,
        "data_version": data_version(mocap_path),
        "clips": clips,
    }


def data_version(mocap_path: str | None) -> str | None:
    """Which version of the clips a run measured: the sha256 of the folder's ``MANIFEST.sha256`` (the shared
    folder lists every file's checksum there), or ``None`` for a source without one."""
    import hashlib
    import os

    folder = Path(mocap_path or os.environ.get("MOCAPACT_MOCAP_PATH", ""))
    manifest = folder / "MANIFEST.sha256"
    if not manifest.is_file():
        return None
    return "MANIFEST.sha256 sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest()


def summary(run: dict) -> dict[str, float]:
    """The figures over all clips: medians and counts of clips past each bound."""
    clips = run["clips"].values()
    deepest = np.array([c["all_steps"]["deepest_penetration_m"] for c in clips])
    deepest_unbroken = np.array([c["unbroken_steps"]["deepest_penetration_m"] for c in clips])
    median_height = np.array([c["all_steps"]["median_lowest_height_m"] for c in clips])
    share_3cm = np.array([c["all_steps"]["share_below_3cm"] for c in clips])
    survived = np.array([c["open_loop_steps"] for c in clips])
    fraction = survived / np.array([c["possible_steps"] for c in clips])
    return {
        "clips": len(deepest),
        "median over clips of the median step's lowest point (cm)": 100 * float(np.median(median_height)),
        "clips whose median step is > 2 cm below the floor": int(np.sum(median_height < -0.02)),
        "clips whose median step is > 1 cm from the floor": int(np.sum(np.abs(median_height) > 0.01)),
        "clips whose median step floats > 2 cm": int(np.sum(median_height > 0.02)),
        "clips with a step > 3 cm below the floor": int(np.sum(deepest > 0.03)),
        "clips with a step > 5 cm below the floor": int(np.sum(deepest > 0.05)),
        "clips with an unbroken step > 1 cm below the floor": int(np.sum(deepest_unbroken > 0.01)),
        "clips > 3 cm below the floor on > 25% of steps": int(np.sum(share_3cm > 0.25)),
        "deepest penetration over clips (cm)": 100 * float(deepest.max()),
        "deepest unbroken penetration over clips (cm)": 100 * float(deepest_unbroken.max()),
        "open-loop steps survived, median over clips": float(np.median(survived)),
        "open-loop steps survived, mean over clips": float(np.mean(survived)),
        "open-loop share of the clip survived, mean over clips": float(np.mean(fraction)),
        "clips survived to the end open loop": int(np.sum(fraction >= 1.0)),
        "open-loop tracking error over the first 10 steps, mean over clips": float(
            np.mean([c["early_tracking_error"] for c in clips])
        ),
    }


def compare(runs: list[dict], names: list[str], console: Console) -> None:
    table = Table(title="Reference fidelity over all clips")
    table.add_column("figure")
    for name in names:
        table.add_column(name, justify="right")
    summaries = [summary(run) for run in runs]
    for key in summaries[0]:
        table.add_row(key, *(f"{s[key]:.3g}" if isinstance(s[key], float) else str(s[key]) for s in summaries))
    console.print(table)
    per_clip = Table(title="Per clip: deepest penetration (cm) and open-loop steps survived")
    per_clip.add_column("clip")
    for name in names:
        per_clip.add_column(f"{name} deepest", justify="right")
        per_clip.add_column(f"{name} median", justify="right")
        per_clip.add_column(f"{name} steps", justify="right")
    for clip_id in sorted(runs[0]["clips"]):
        cells = []
        for run in runs:
            clip = run["clips"].get(clip_id)
            if clip is None:
                cells += ["-", "-", "-"]
                continue
            floor = clip["all_steps"]
            cells += [
                f"{100 * floor['deepest_penetration_m']:.1f}",
                f"{100 * floor['median_lowest_height_m']:+.1f}",
                f"{clip['open_loop_steps']}/{clip['possible_steps']}",
            ]
        per_clip.add_row(clip_id, *cells)
    console.print(per_clip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", help="clip ids (default: every clip of the source)")
    parser.add_argument("--mocap-path", help="the reference source (default: MOCAPACT_MOCAP_PATH)")
    parser.add_argument("--output", type=Path, default=Path("reference_fidelity.json"))
    parser.add_argument("--compare", nargs="+", type=Path, help="print these result files side by side")
    args = parser.parse_args()
    console = Console()
    if args.compare:
        compare([read_json(path) for path in args.compare], [path.stem for path in args.compare], console)
        return
    clip_ids = args.clips or list(get_source(args.mocap_path).available_clips())
    run = measure(clip_ids, args.mocap_path)
    write_json(args.output, run)
    console.print(json.dumps(summary(run), indent=2))
    console.print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
