"""MoCapAct's tracking metrics for episodes of the tracking environment.

The normalized episode length is ``(t_end - t_start) / (t_last - t_start)`` in
time-in-clip units: 1 for an episode that tracks to the snippet's end from
wherever it started. The normalized return is ``(R / L) * l``: the mean reward a
step scaled by the normalized length.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EpisodeMetrics:
    episode_return: float
    episode_length: int
    norm_episode_return: float
    norm_episode_length: float
    terminated: bool
    """True when the episode ended on a tracking failure."""
    start_time_in_clip: float
    """normalized time in the clip (dm_control's, 0 to 1 over the whole clip) where the episode started"""
    end_time_in_clip: float
    """normalized time in the clip where it ended: where the walker fell, for a terminated episode"""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def episode_metrics(
    episode_return: float,
    episode_length: int,
    start_time_in_clip: float,
    end_time_in_clip: float,
    last_time_in_clip: float,
    terminated: bool,
) -> EpisodeMetrics:
    """Metrics of one finished episode from the ``info`` values at its ends."""
    span = last_time_in_clip - start_time_in_clip
    norm_length = (end_time_in_clip - start_time_in_clip) / span if span > 0 else 1.0
    norm_return = episode_return / max(episode_length, 1) * norm_length
    return EpisodeMetrics(
        episode_return=float(episode_return),
        episode_length=int(episode_length),
        norm_episode_return=float(norm_return),
        norm_episode_length=float(norm_length),
        terminated=bool(terminated),
        start_time_in_clip=float(start_time_in_clip),
        end_time_in_clip=float(end_time_in_clip),
    )


class EpisodeTracker:
    """Accumulates per-step rewards and ``info`` into :class:`EpisodeMetrics`.

    Works for one environment (``num_envs=1``, scalar inputs) or a Gymnasium 1.x
    vector environment (arrays and a dict of arrays for ``info``).
    """

    def __init__(self, num_envs: int = 1):
        self.num_envs = num_envs
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._start = np.zeros(num_envs)

    def on_reset(self, info: Mapping[str, Any], mask: np.ndarray | None = None) -> None:
        """Records episode starts; ``mask`` picks the sub-environments that reset."""
        start = np.broadcast_to(np.asarray(info["start_time_in_clip"], dtype=float), (self.num_envs,))
        mask = np.ones(self.num_envs, bool) if mask is None else np.asarray(mask, bool)
        self._start[mask] = start[mask]
        self._returns[mask] = 0.0
        self._lengths[mask] = 0

    def on_step(self, reward, terminated, truncated, info: Mapping[str, Any]) -> list[EpisodeMetrics]:
        """Adds one step; returns the metrics of the episodes that ended on it."""
        reward = np.broadcast_to(np.asarray(reward, dtype=float), (self.num_envs,))
        terminated = np.broadcast_to(np.asarray(terminated, dtype=bool), (self.num_envs,))
        truncated = np.broadcast_to(np.asarray(truncated, dtype=bool), (self.num_envs,))
        self._returns += reward
        self._lengths += 1
        done = terminated | truncated
        finished = []
        if done.any():
            end = np.broadcast_to(np.asarray(info["time_in_clip"], dtype=float), (self.num_envs,))
            last = np.broadcast_to(np.asarray(info["last_time_in_clip"], dtype=float), (self.num_envs,))
            for i in np.flatnonzero(done):
                finished.append(
                    episode_metrics(self._returns[i], self._lengths[i], self._start[i], end[i], last[i], terminated[i])
                )
        return finished


def summarize(episodes: Iterable[EpisodeMetrics]) -> dict[str, float]:
    """Means of each metric over episodes, plus their count."""
    episodes = list(episodes)
    if not episodes:
        return {"episodes": 0}
    keys = ("episode_return", "episode_length", "norm_episode_return", "norm_episode_length")
    summary: dict[str, float] = {f"mean_{k}": float(np.mean([getattr(e, k) for e in episodes])) for k in keys}
    summary["terminated_fraction"] = float(np.mean([e.terminated for e in episodes]))
    summary["episodes"] = len(episodes)
    return summary
