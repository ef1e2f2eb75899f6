"""How a walker moved in an episode: speeds, displacement, turning, whether it walked.

Read from what the transfer tasks report each step: ``info["physics_state"]`` (MuJoCo's
``qpos, qvel, act``; the walker's free root joint is the first 7 ``qpos`` values) and, for
the speed, ``info["torso_velocity"]`` (VelocityControl's horizontal velocity of the walker's
root subtree, the velocity its reward measures).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: The per-episode metrics :func:`motion_metrics` returns whose distribution :func:`summarize_motion` gives.
MOTION_METRICS = (
    "steps",
    "mean_speed",
    "net_speed",
    "best_window_speed",
    "turn_rate",
    "abs_turn_rate",
    "moving_fraction",
)
#: Per-episode task figures a caller may add to :func:`motion_metrics`' results (the task's return,
#: GoToTarget's distances to its first target); :func:`summarize_motion` gives their distributions
#: when every episode has them.
TASK_METRICS = ("task_return", "start_target_distance", "closest_target_distance")


def root_planar_pose(qpos: np.ndarray) -> tuple[np.ndarray, float]:
    """The root's ground-plane position (x, y) and heading (rad) from the walker's free joint.

    ``qpos[:7]`` is the root position and its quaternion ``(w, x, y, z)``. The heading is the
    direction, in the ground plane, of the root's x axis: MoCapAct's walker has its root's y axis
    up and z axis forward, so the x axis (left-right) stays horizontal while the walker is up and
    its heading turns exactly as the walker does (a constant offset from where it faces).
    """
    qpos = np.asarray(qpos, np.float64)
    w, x, y, z = qpos[3:7]
    heading = float(np.arctan2(2.0 * (x * y + w * z), 1.0 - 2.0 * (y * y + z * z)))
    return qpos[:2].copy(), heading


def motion_metrics(
    positions: np.ndarray,
    headings: np.ndarray,
    velocities: np.ndarray,
    *,
    fell: bool,
    episode_steps: int,
    dt: float,
    walk_speed: float,
    walk_steps: int,
) -> dict[str, Any]:
    """One episode's motion, from the root's ``positions`` ``(n + 1, 2)`` and ``headings`` ``(n + 1,)``
    at the reset and after each of its ``n`` steps, and the planar ``velocities`` ``(n, 2)`` after each step.

    * ``steps``: ``n``, the steps survived; ``fell``: the episode ended on a fall.
    * ``mean_speed``: mean of ``|velocity|`` over the ``n`` steps (m/s).
    * ``net_speed``: straight-line root displacement from start to end over ``n * dt`` (m/s).
    * ``best_window_speed``: the largest root displacement over any ``walk_steps`` consecutive
      steps (all ``n`` when fewer) divided by that time (m/s): the fastest sustained progress.
    * ``turn_rate``: net heading change (unwrapped) over ``n * dt`` (rad/s, counter-clockwise
      positive); ``abs_turn_rate`` its magnitude.
    * ``moving_fraction``: steps with ``|velocity| > walk_speed`` over ``episode_steps`` (steps
      after a fall count as not moving).
    * ``walks``: the episode did not fall and ``best_window_speed > walk_speed``: the walker
      kept up more than ``walk_speed`` for ``walk_steps`` steps and stayed up to the end.

    Speeds of an episode that fell include the fall itself (a falling body moves fast).
    """
    positions = np.asarray(positions, np.float64)
    headings = np.asarray(headings, np.float64)
    velocities = np.asarray(velocities, np.float64)
    steps = len(velocities)
    if steps < 1 or positions.shape != (steps + 1, 2) or headings.shape != (steps + 1,):
        raise ValueError(
            f"need n >= 1 velocities (n, 2) with n + 1 positions (n + 1, 2) and headings; got {velocities.shape}, "
            f"{positions.shape} and {headings.shape}."
        )
    if walk_steps < 1 or episode_steps < steps or not dt > 0:
        raise ValueError(
            f"walk_steps must be >= 1, episode_steps >= the {steps} steps taken and dt > 0; got {walk_steps}, "
            f"{episode_steps} and {dt}."
        )
    duration = steps * dt
    speeds = np.linalg.norm(velocities, axis=1)
    window = min(walk_steps, steps)
    window_distances = np.linalg.norm(positions[window:] - positions[:-window], axis=1)
    best_window_speed = float(window_distances.max() / (window * dt))
    turn_rate = float((np.unwrap(headings)[-1] - headings[0]) / duration)
    return {
        "steps": steps,
        "fell": bool(fell),
        "mean_speed": float(speeds.mean()),
        "net_speed": float(np.linalg.norm(positions[-1] - positions[0]) / duration),
        "best_window_speed": best_window_speed,
        "turn_rate": turn_rate,
        "abs_turn_rate": abs(turn_rate),
        "moving_fraction": float(np.count_nonzero(speeds > walk_speed) / episode_steps),
        "walks": bool(not fell and best_window_speed > walk_speed),
    }


def summarize_motion(episodes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Median, mean and max of each of :data:`MOTION_METRICS` (and of :data:`TASK_METRICS` that every
    episode has) over ``episodes`` (:func:`motion_metrics` results), the fractions that fell and that
    walked, and under ``survivors`` the same distributions over the episodes that did not fall (``None``
    when all fell): their speeds are free of falls."""
    if not episodes:
        raise ValueError("no episodes to summarize.")
    survivors = [e for e in episodes if not e["fell"]]
    names = MOTION_METRICS + tuple(name for name in TASK_METRICS if all(name in e for e in episodes))
    return {
        "episodes": len(episodes),
        "fell_fraction": float(np.mean([e["fell"] for e in episodes])),
        "walk_fraction": float(np.mean([e["walks"] for e in episodes])),
        **_distributions(episodes, names),
        "survivors": {"episodes": len(survivors), **_distributions(survivors, names)} if survivors else None,
    }


def _distributions(episodes: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, dict[str, float]]:
    distributions = {}
    for name in names:
        values = np.array([e[name] for e in episodes], np.float64)
        distributions[name] = {
            "median": float(np.median(values)),
            "mean": float(values.mean()),
            "max": float(values.max()),
        }
    return distributions
