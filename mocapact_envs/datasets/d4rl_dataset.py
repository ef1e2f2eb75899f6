"""``D4RLDataset``: expert rollouts as transitions in D4RL's format, for offline RL.

Each transition is ``(observation, action, reward, next_observation, terminal,
timeout)``. Only an episode's last transition can end it: ``terminal`` when the
expert lost track of the clip (dm_control's discount 0), ``timeout`` when it
reached the snippet's end, as MoCapAct splits them.

Iterating streams episodes from the files one at a time, so datasets larger than
memory work; ``get_in_memory_rollouts`` gathers D4RL's dictionary of arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from mocapact_envs.datasets.rollouts import RolloutFiles, open_rollout_file, read_episode
from mocapact_envs.tasks.observables import resolve_observables

D4RL_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


class D4RLDataset(torch.utils.data.IterableDataset):
    """Transitions of expert rollouts (ours or MoCapAct's files).

    Args:
        paths: per-clip rollout HDF5 files.
        observables: an observation set name or keys (concatenated, alphabetical).
        snippet_ids, n_start_rollouts, n_rsi_rollouts: which episodes, as in
            :class:`~mocapact_envs.datasets.ExpertDataset`.
        normalize_obs: standardise observations with the files' statistics.
        action_key: ``"actions"`` (what was executed) or ``"mean_actions"``.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        observables: str | Sequence[str] = "multi_clip_sans_id",
        *,
        snippet_ids: Sequence[str] | None = None,
        n_start_rollouts: int = -1,
        n_rsi_rollouts: int = -1,
        normalize_obs: bool = False,
        action_key: str = "actions",
    ):
        if action_key not in ("mean_actions", "actions"):
            raise ValueError(f"unknown action_key {action_key!r}; choose 'actions' or 'mean_actions'.")
        self.files = RolloutFiles(paths, snippet_ids, n_start_rollouts, n_rsi_rollouts)
        self.observable_keys = resolve_observables(observables)
        self._columns = self.files.indices_of(self.observable_keys)
        self.action_key = action_key
        self.normalize_obs = normalize_obs
        self.obs_mean = self.files.stats["proprio_mean"][self._columns].astype(np.float32)
        self.obs_std = (np.sqrt(self.files.stats["proprio_var"][self._columns]) + 1e-4).astype(np.float32)

    def __len__(self) -> int:
        return sum(ref.length for ref in self.files.episodes)

    def iter_episodes(self) -> Iterator[dict[str, np.ndarray]]:
        """One D4RL dictionary per episode, read from disk as it goes."""
        episodes = self.files.episodes
        worker = torch.utils.data.get_worker_info()
        if worker is not None:  # each DataLoader worker streams its own share
            episodes = episodes[worker.id :: worker.num_workers]
        handles: dict[int, h5py.File] = {}
        try:
            for ref in episodes:
                if ref.file_index not in handles:
                    handles[ref.file_index] = open_rollout_file(self.files.paths[ref.file_index])
                path = self.files.paths[ref.file_index]
                episode = read_episode(
                    path,
                    handles[ref.file_index],
                    ref.group,
                    ("observations/proprioceptive", self.action_key, "rewards"),
                )
                proprio = episode["observations/proprioceptive"].astype(np.float32)
                proprio = np.ascontiguousarray(proprio[:, self._columns])  # column picks come out column-major
                if self.normalize_obs:
                    proprio = (proprio - self.obs_mean) / self.obs_std
                steps = len(proprio) - 1
                terminals = np.zeros(steps, dtype=bool)
                timeouts = np.zeros(steps, dtype=bool)
                terminals[-1] = ref.early_termination
                timeouts[-1] = not ref.early_termination
                yield {
                    "observations": proprio[:-1],
                    "actions": episode[self.action_key].astype(np.float32),
                    "rewards": episode["rewards"].astype(np.float32),
                    "next_observations": proprio[1:],
                    "terminals": terminals,
                    "timeouts": timeouts,
                }
        finally:
            for handle in handles.values():
                handle.close()

    def __iter__(self):
        for episode in self.iter_episodes():
            yield from zip(*(episode[k] for k in D4RL_KEYS), strict=True)

    def get_in_memory_rollouts(self, max_transitions: int | None = None) -> dict[str, np.ndarray]:
        """D4RL's ``qlearning_dataset`` dictionary, at most ``max_transitions`` long."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in D4RL_KEYS}
        total = 0
        for episode in self.iter_episodes():
            take = (
                len(episode["rewards"])
                if max_transitions is None
                else min(len(episode["rewards"]), max_transitions - total)
            )
            for key in D4RL_KEYS:
                parts[key].append(episode[key][:take])
            total += take
            if max_transitions is not None and total >= max_transitions:
                break
        return {key: np.concatenate(values) for key, values in parts.items()}
