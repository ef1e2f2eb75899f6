"""``ExpertDataset``: windows of expert rollouts for behaviour cloning and distillation.

All chosen observables, actions and weights are read into memory once, so an item
is an array slice rather than an HDF5 read; ``__getitems__`` serves a whole batch
with one fancy-indexing gather, which torch's ``DataLoader`` uses when present.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

from mocapact_envs.datasets.rollouts import RolloutFiles, open_rollout_file, read_episode
from mocapact_envs.tasks.checks import check_number, check_positive
from mocapact_envs.tasks.observables import resolve_observables

#: Weighting schemes: what the energy x is and its default temperature.
WEIGHTINGS = {
    "bc": None,
    "rwr": ("value + advantage", 4.0),
    "awr": ("advantage", 8.0),
    "cwr": ("snippet mean normalized return", 0.2),
}
#: MoCapAct's clip-length upsampling: a snippet of L steps repeats int(210 / L * 10) times.
UPSAMPLING_CLIP_LENGTH = 210
UPSAMPLING_MULTIPLIER = 10


def exponential_weights(energy: np.ndarray, temperature: float) -> np.ndarray:
    """``exp((x - c) / T)`` with ``c = T log mean exp(x / T)``, so weights average about one."""
    offset = temperature * logsumexp(energy / temperature - np.log(energy.size))
    return np.exp((energy - offset) / temperature)


class WindowBatch(list):
    """The ``(observation, action, weight)`` samples of a batch, which also keeps the stacked arrays.

    The samples are views of ``arrays``, so torch's default collate still works;
    :meth:`ExpertDataset.collate` uses ``arrays`` directly instead of stacking them again.
    """

    def __init__(self, observations: np.ndarray, actions: np.ndarray, weights: np.ndarray):
        super().__init__(zip(observations, actions, weights, strict=True))
        self.arrays = (observations, actions, weights)


class ExpertDataset(torch.utils.data.Dataset):
    """Fixed-length windows of rollouts; each item is ``(observation, action, weight)``.

    Args:
        paths: per-clip rollout HDF5 files (ours or MoCapAct's).
        observables: an observation set name (``"high_level"``, ...) or keys;
            concatenated in that set's alphabetical order.
        seq_steps: window length; 1 returns single steps without a time axis.
        snippet_ids: keep only these snippets or clips.
        exclude_clips: leave out these clips' snippets and files (held-out clips;
            ``files.excluded_snippets`` lists them).
        n_start_rollouts, n_rsi_rollouts: start / random-start episodes to use per
            snippet (-1: all).
        normalize_obs: standardise observations with the files' statistics.
        clip_len_upsampling: repeat short snippets' windows (MoCapAct's scheme).
        weighting: ``bc`` (all 1), ``rwr``, ``awr`` or ``cwr``.
        temperature: the weighting temperature (default: MoCapAct's per scheme).
        max_weight: weights are clipped to this.
        action_key: ``"mean_actions"`` (the experts' deterministic actions,
            distillation's targets) or ``"actions"`` (the sampled ones).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        observables: str | Sequence[str] = "high_level",
        *,
        seq_steps: int = 1,
        snippet_ids: Sequence[str] | None = None,
        exclude_clips: Collection[str] = (),
        n_start_rollouts: int = -1,
        n_rsi_rollouts: int = -1,
        normalize_obs: bool = False,
        clip_len_upsampling: bool = False,
        weighting: str = "bc",
        temperature: float | None = None,
        max_weight: float = float("inf"),
        action_key: str = "mean_actions",
    ):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}.")
        if action_key not in ("mean_actions", "actions"):
            raise ValueError(f"unknown action_key {action_key!r}; choose 'mean_actions' or 'actions'.")
        if seq_steps < 1:
            raise ValueError(f"seq_steps must be at least 1, got {seq_steps}.")
        # exp(x / T): T = 0 divides by zero and T < 0 rewards the worst steps most; NaN weights follow.
        if temperature is not None:
            check_positive("temperature", temperature, "a finite number > 0")
        check_number("max_weight", max_weight, "> 0 (float('inf') clips nothing)", lambda v: v > 0)
        self.files = RolloutFiles(paths, snippet_ids, n_start_rollouts, n_rsi_rollouts, exclude_clips)
        self.observable_keys = resolve_observables(observables)
        self.seq_steps = seq_steps
        columns = self.files.indices_of(self.observable_keys)
        self.observable_slices = {}
        offset = 0
        for key in self.observable_keys:
            width = len(self.files.observable_indices[key])
            self.observable_slices[key] = slice(offset, offset + width)
            offset += width

        stats = self.files.stats
        self.obs_mean = stats["proprio_mean"][columns].astype(np.float32)
        self.obs_std = (np.sqrt(stats["proprio_var"][columns]) + 1e-4).astype(np.float32)
        prefix = "mean_act" if action_key == "mean_actions" else "act"
        self.act_mean, self.act_std = stats[f"{prefix}_mean"], np.sqrt(stats[f"{prefix}_var"]) + 1e-4

        observations, actions, values, advantages = [], [], [], []
        obs_offsets, act_offsets, snippet_of_episode = [], [], []
        obs_rows = act_rows = 0
        handles = [open_rollout_file(p) for p in self.files.paths]
        keys = ("observations/proprioceptive", action_key, "values", "advantages")
        try:
            for ref in self.files.episodes:
                path = self.files.paths[ref.file_index]
                episode = read_episode(path, handles[ref.file_index], ref.group, keys)
                # Reading whole rows then picking columns is faster than h5py's column selection.
                observations.append(episode["observations/proprioceptive"].astype(np.float32)[:, columns])
                actions.append(episode[action_key].astype(np.float32))
                values.append(episode["values"].astype(np.float64))
                advantages.append(episode["advantages"].astype(np.float64))
                obs_offsets.append(obs_rows)
                act_offsets.append(act_rows)
                obs_rows += len(observations[-1])
                act_rows += len(actions[-1])
                snippet_of_episode.append(ref.snippet_id)
        finally:
            for handle in handles:
                handle.close()
        # Row-major: picking columns above leaves column-major pieces, which made batch gathers ~4x slower.
        self._observations = np.ascontiguousarray(np.concatenate(observations))
        if normalize_obs:
            self._observations = (self._observations - self.obs_mean) / self.obs_std
        self._actions = np.concatenate(actions)
        self._weights = self._step_weights(
            weighting, temperature, np.concatenate(values), np.concatenate(advantages), snippet_of_episode, actions
        )
        self._weights = np.minimum(self._weights, max_weight).astype(np.float32)

        # Window starts, as (observation row, action row) pairs, repeated for upsampling.
        obs_starts, act_starts = [], []
        for index, (ref, obs_offset, act_offset) in enumerate(
            zip(self.files.episodes, obs_offsets, act_offsets, strict=True)
        ):
            windows = len(actions[index]) - seq_steps + 1
            if windows <= 0:
                continue
            repeats = 1
            if clip_len_upsampling:
                _, start, end = ref.snippet_id.split("-")
                repeats = int(UPSAMPLING_CLIP_LENGTH / (int(end) - int(start)) * UPSAMPLING_MULTIPLIER)
            steps = np.arange(windows)
            obs_starts.append(np.tile(obs_offset + steps, repeats))
            act_starts.append(np.tile(act_offset + steps, repeats))
        if not obs_starts:
            raise ValueError(f"no episode has {seq_steps} steps or more.")
        self._obs_starts = np.concatenate(obs_starts)
        self._act_starts = np.concatenate(act_starts)
        self._window = np.arange(seq_steps)

    def _step_weights(self, weighting, temperature, values, advantages, snippet_of_episode, actions) -> np.ndarray:
        if weighting == "bc":
            return np.ones(len(values))
        temperature = WEIGHTINGS[weighting][1] if temperature is None else temperature
        if weighting == "rwr":
            return exponential_weights(values + advantages, temperature)
        if weighting == "awr":
            return exponential_weights(advantages, temperature)
        snippet_ids = list(self.files.snippet_norm_returns)
        snippet_weights = dict(
            zip(
                snippet_ids,
                exponential_weights(np.array([self.files.snippet_norm_returns[s] for s in snippet_ids]), temperature),
                strict=True,
            )
        )
        return np.concatenate(
            [np.full(len(a), snippet_weights[s]) for s, a in zip(snippet_of_episode, actions, strict=True)]
        )

    @property
    def observation_size(self) -> int:
        return self._observations.shape[1]

    def __len__(self) -> int:
        return len(self._obs_starts)

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Observations, actions and weights of many windows at once, stacked on axis 0."""
        obs_rows = self._obs_starts[indices][:, None] + self._window
        act_rows = self._act_starts[indices][:, None] + self._window
        observations, actions, weights = self._observations[obs_rows], self._actions[act_rows], self._weights[act_rows]
        if self.seq_steps == 1:
            return observations[:, 0], actions[:, 0], weights[:, 0]
        return observations, actions, weights

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} windows.")
        observation, action, weight = self.batch(np.array([index]))
        return observation[0], action[0], weight[0]

    def __getitems__(self, indices: Sequence[int]) -> WindowBatch:
        """A batch in one gather, as the samples ``DataLoader``'s collate function expects.

        ``DataLoader(dataset, batch_size=..., collate_fn=ExpertDataset.collate)`` turns
        the gathered arrays into tensors without stacking the samples again.
        """
        return WindowBatch(*self.batch(np.asarray(indices)))

    @staticmethod
    def collate(samples) -> tuple[torch.Tensor, ...] | object:
        """``DataLoader`` collate function: the batch's gathered arrays as tensors, without copying.

        Anything but a :class:`WindowBatch` goes to torch's ``default_collate``.
        """
        if isinstance(samples, WindowBatch):
            return tuple(torch.from_numpy(array) for array in samples.arrays)
        return torch.utils.data.default_collate(samples)
