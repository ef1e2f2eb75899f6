"""MoCapAct's rollout files: one HDF5 file per clip, read and written here.

Layout, exactly as MoCapAct documents it::

    n_rsi_rollouts, n_start_rollouts, ref_steps
    observable_indices/walker/<name>      indices into the proprioceptive vector
    stats/{act_mean, act_var, mean_act_mean, mean_act_var,
           proprio_mean, proprio_var, count}          statistics of this file
    <snippet id>/early_termination         (episodes,) bool
    <snippet id>/start_metrics/{episode_returns, episode_lengths,
                                norm_episode_returns, norm_episode_lengths}
    <snippet id>/rsi_metrics/...           the same, for random-start episodes
    <snippet id>/<episode>/observations/proprioceptive   (T + 1, D) float32
    <snippet id>/<episode>/{actions, mean_actions}       (T, 56) float32
    <snippet id>/<episode>/{rewards, values, advantages} (T,) float32

Episodes ``0 .. S-1`` start at the snippet start, ``S .. S+R-1`` at random steps.
Statistics in ``stats`` are per file; :func:`write_dataset_metrics` writes the
dataset-wide ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mocapact_envs.files import replace_atomically
from mocapact_envs.mocap.ids import SNIPPET_ID_PATTERN

METRIC_NAMES = ("episode_returns", "episode_lengths", "norm_episode_returns", "norm_episode_lengths")


def generalized_advantages(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """GAE(lambda) of one episode, bootstrapping 0 after its last step (as MoCapAct does)."""
    advantages = np.zeros(len(rewards), dtype=np.float64)
    last = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        advantages[t] = last
    return advantages


@dataclass
class Episode:
    """One rollout: ``observations`` has one row more than the actions."""

    observations: np.ndarray
    actions: np.ndarray
    mean_actions: np.ndarray
    rewards: np.ndarray
    values: np.ndarray
    advantages: np.ndarray
    images: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SnippetRollouts:
    """All episodes of one snippet, start episodes first, with their metrics."""

    snippet_id: str
    episodes: list[Episode]
    early_termination: np.ndarray
    start_metrics: dict[str, np.ndarray]
    rsi_metrics: dict[str, np.ndarray]


def _moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = rows.astype(np.float64)
    return rows.sum(0), np.square(rows).sum(0)


def write_clip_file(
    path: str | Path,
    snippets: Iterable[SnippetRollouts],
    *,
    observable_indices: Mapping[str, np.ndarray],
    ref_steps: Sequence[int],
    n_start_rollouts: int,
    n_rsi_rollouts: int,
    attributes: Mapping[str, str] | None = None,
) -> None:
    """Writes one clip's rollouts under a temporary name, then renames it into place.

    ``attributes`` become the file's HDF5 attributes (the collector records the reference source there:
    :data:`REFERENCE_SOURCE_ATTRIBUTE` and :data:`REFERENCE_DIGEST_ATTRIBUTE`).

    ``snippets`` may be a generator: each snippet is written as it is produced, so
    only one snippet's episodes need to be in memory.
    """

    def write(tmp: Path) -> None:
        sums = {"proprio": 0.0, "act": 0.0, "mean_act": 0.0}
        squares = dict(sums)
        count = 0
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update(dict(attributes or {}))
            h5["n_start_rollouts"] = n_start_rollouts
            h5["n_rsi_rollouts"] = n_rsi_rollouts
            h5["ref_steps"] = np.asarray(ref_steps, dtype=np.int64)
            for key, indices in observable_indices.items():
                h5[f"observable_indices/{key}"] = np.asarray(indices, dtype=np.int64)
            for snippet in snippets:
                group = h5.create_group(snippet.snippet_id)
                group["early_termination"] = np.asarray(snippet.early_termination, dtype=bool)
                for name, metrics in (("start_metrics", snippet.start_metrics), ("rsi_metrics", snippet.rsi_metrics)):
                    for metric in METRIC_NAMES:
                        group[f"{name}/{metric}"] = np.asarray(metrics[metric])
                for index, episode in enumerate(snippet.episodes):
                    episode_group = group.create_group(str(index))
                    episode_group["observations/proprioceptive"] = episode.observations.astype(np.float32)
                    for camera, frames in episode.images.items():
                        episode_group[f"observations/{camera}"] = frames.astype(np.uint8)
                    for name in ("actions", "mean_actions", "rewards", "values", "advantages"):
                        episode_group[name] = np.asarray(getattr(episode, name), dtype=np.float32)
                    for key, rows in (
                        ("proprio", episode.observations),
                        ("act", episode.actions),
                        ("mean_act", episode.mean_actions),
                    ):
                        total, square = _moments(rows)
                        sums[key] = sums[key] + total
                        squares[key] = squares[key] + square
                    count += len(episode.observations)
            for key in sums:
                # MoCapAct divides action sums by the observation count too.
                mean = sums[key] / count
                h5[f"stats/{key}_mean"] = mean.astype(np.float32)
                h5[f"stats/{key}_var"] = np.maximum(squares[key] / count - mean**2, 0).astype(np.float32)
            h5["stats/count"] = count

    replace_atomically(path, write)


#: File attributes naming the reference the rollouts tracked: where it was read, and the clip's
#: :meth:`~mocapact_envs.mocap.source.ClipSet.clip_digests` entry. MoCapAct's files have neither.
REFERENCE_SOURCE_ATTRIBUTE, REFERENCE_DIGEST_ATTRIBUTE = "reference_source", "reference_clip_digest"


class RolloutFileError(ValueError):
    """A rollout file that cannot be read: corrupt, truncated, or not in the rollout layout."""


def open_rollout_file(path: str | Path) -> h5py.File:
    """``h5py.File(path, "r")``; a file h5py cannot open raises :class:`RolloutFileError` naming it."""
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise RolloutFileError(
            f"rollout file {path} cannot be opened as HDF5 ({error}): it is corrupt or truncated. Delete it "
            "and collect it again (mocapact-collect writes only the clip files that are missing)."
        ) from error


@contextlib.contextmanager
def read_rollout_file(path: str | Path) -> Iterator[h5py.File]:
    """Reads a rollout file: errors opening it, reading its data (``OSError``) or finding an entry
    (``KeyError``) raise :class:`RolloutFileError` naming the file."""
    with open_rollout_file(path) as h5:
        try:
            yield h5
        except (OSError, KeyError) as error:
            raise RolloutFileError(
                f"rollout file {path} is damaged or not in the rollout layout: {error!r} while reading it."
            ) from error


def read_episode(path: str | Path, h5: h5py.File, group: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The datasets ``keys`` of episode ``group`` (``<snippet id>/<episode>``) of the open rollout file ``path``.

    A missing episode or dataset, or one whose rows do not line up (``observations/...`` has one row
    more than the actions), raises :class:`RolloutFileError` naming the file, the episode and the key,
    instead of h5py's ``KeyError`` that names neither.
    """
    if group not in h5:
        raise RolloutFileError(f"rollout file {path} has no episode {group}: the file is damaged or incomplete.")
    episode = h5[group]
    arrays = {}
    for key in keys:
        if key not in episode:
            raise RolloutFileError(
                f"rollout file {path}: episode {group} has no {key!r} (it has {', '.join(sorted(episode))}); "
                "the file is damaged or not in the rollout layout."
            )
        arrays[key] = np.asarray(episode[key][...])
    steps = {key: len(a) - (1 if key.startswith("observations/") else 0) for key, a in arrays.items()}
    if len(set(steps.values())) > 1:
        rows = ", ".join(f"{key} {len(arrays[key])}" for key in arrays)
        raise RolloutFileError(
            f"rollout file {path}: the rows of episode {group} do not line up ({rows}; observations need one "
            "row more than the rest): the file is damaged."
        )
    return arrays


@dataclass(frozen=True)
class EpisodeRef:
    """Where one episode lives: file, group and what it belongs to."""

    file_index: int
    group: str
    snippet_id: str
    is_start: bool
    length: int
    early_termination: bool


class RolloutFiles:
    """An index over rollout files, ours or MoCapAct's published ones.

    Args:
        paths: the per-clip HDF5 files, or folders holding them.
        snippet_ids: keep only these snippets (clip ids keep all their snippets).
        n_start_rollouts, n_rsi_rollouts: the most start / random-start episodes a
            snippet contributes (-1: all).
        exclude_clips: leave out every snippet of these clips (held-out clips, such as
            MoCapAct's validation clips); a file that holds nothing else is left out
            whole, its statistics too. :attr:`excluded_snippets` lists what was left out.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        snippet_ids: Sequence[str] | None = None,
        n_start_rollouts: int = -1,
        n_rsi_rollouts: int = -1,
        exclude_clips: Collection[str] = (),
    ):
        if not paths:
            raise ValueError("no rollout files given.")
        wanted = set(snippet_ids) if snippet_ids is not None else None
        excluded = frozenset(exclude_clips)
        self.paths: list[Path] = []
        self.excluded_snippets: list[str] = []
        self.episodes: list[EpisodeRef] = []
        self.snippet_norm_returns: dict[str, float] = {}
        stats_parts = []
        for path in expand_rollout_paths(paths):
            with read_rollout_file(path) as h5:
                snippet_ids_here = self._snippets_in(h5)
                left_out = [s for s in snippet_ids_here if s.split("-")[0] in excluded]
                self.excluded_snippets.extend(left_out)
                if left_out and len(left_out) == len(snippet_ids_here):
                    continue  # nothing of a held-out clip, not even its statistics, reaches training
                file_index = len(self.paths)
                self.paths.append(path)
                if file_index == 0:
                    self.ref_steps = tuple(int(s) for s in h5["ref_steps"][...])
                    self.observable_indices = {
                        f"walker/{name}": np.asarray(h5[f"observable_indices/walker/{name}"][...])
                        for name in h5["observable_indices/walker"]
                    }
                    self.proprio_size = int(h5[f"{self._snippets_in(h5)[0]}/0/observations/proprioceptive"].shape[1])
                stats_parts.append({name: np.asarray(h5[f"stats/{name}"][...]) for name in h5["stats"]})
                file_start, file_rsi = int(h5["n_start_rollouts"][...]), int(h5["n_rsi_rollouts"][...])
                take_start = file_start if n_start_rollouts < 0 else min(n_start_rollouts, file_start)
                take_rsi = file_rsi if n_rsi_rollouts < 0 else min(n_rsi_rollouts, file_rsi)
                for snippet_id in snippet_ids_here:
                    clip_id = snippet_id.split("-")[0]
                    if clip_id in excluded or (
                        wanted is not None and snippet_id not in wanted and clip_id not in wanted
                    ):
                        continue
                    group = h5[snippet_id]
                    early = np.asarray(group["early_termination"][...], dtype=bool)
                    lengths = np.concatenate(
                        [group["start_metrics/episode_lengths"][...], group["rsi_metrics/episode_lengths"][...]]
                    ).astype(int)
                    chosen = list(range(take_start)) + list(range(file_start, file_start + take_rsi))
                    for episode in chosen:
                        self.episodes.append(
                            EpisodeRef(
                                file_index,
                                f"{snippet_id}/{episode}",
                                snippet_id,
                                episode < file_start,
                                int(lengths[episode]),
                                bool(early[episode]),
                            )
                        )
                    norm_returns = np.concatenate(
                        [
                            group["start_metrics/norm_episode_returns"][...],
                            group["rsi_metrics/norm_episode_returns"][...],
                        ]
                    )
                    self.snippet_norm_returns[snippet_id] = float(np.mean(norm_returns))
        if not self.paths:
            raise ValueError(
                f"every snippet of the rollout files is on a left-out clip ({len(self.excluded_snippets)} snippets, "
                f"such as {', '.join(self.excluded_snippets[:3])})."
            )
        if not self.episodes:
            raise ValueError(f"the rollout files hold none of the snippets {sorted(wanted or [])}.")
        self.stats = merge_stats(stats_parts)

    @staticmethod
    def _snippets_in(h5: h5py.File) -> list[str]:
        return sorted(key for key in h5.keys() if SNIPPET_ID_PATTERN.match(key))

    def indices_of(self, observables: Sequence[str]) -> np.ndarray:
        """Column indices of these observables in the proprioceptive vector, in the given order."""
        missing = [k for k in observables if k not in self.observable_indices]
        if missing:
            raise ValueError(
                f"the rollouts do not log {missing}; they log {', '.join(sorted(self.observable_indices))}."
            )
        return np.concatenate([self.observable_indices[k] for k in observables]).astype(np.int64)


def clip_files(folder: str | Path) -> list[Path]:
    """The finished clip files (``CMU_*.hdf5``) of a rollout folder, in clip order."""
    return sorted(Path(folder).glob("CMU_*.hdf5"))


def expand_rollout_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Rollout files named directly or found in folders (their ``CMU_*.hdf5`` files)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = clip_files(path)
            if not found:
                raise FileNotFoundError(f"no CMU_*.hdf5 rollout files in {path}.")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"rollout path {path} does not exist.")
    return files


def merge_stats(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Dataset-wide means and variances from per-file ones, weighted by their counts."""
    counts = np.array([float(p["count"]) for p in parts])
    total = counts.sum()
    merged: dict[str, np.ndarray] = {"count": np.asarray(total)}
    for key in ("proprio", "act", "mean_act"):
        means = np.stack([p[f"{key}_mean"] for p in parts]).astype(np.float64)
        variances = np.stack([p[f"{key}_var"] for p in parts]).astype(np.float64)
        mean = (counts[:, None] * means).sum(0) / total
        second_moment = (counts[:, None] * (variances + means**2)).sum(0) / total
        merged[f"{key}_mean"] = mean.astype(np.float32)
        merged[f"{key}_var"] = np.maximum(second_moment - mean**2, 0).astype(np.float32)
    return merged


def write_dataset_metrics(paths: Sequence[str | Path], output: str | Path) -> dict[str, np.ndarray]:
    """Writes ``dataset_metrics.npz``: global statistics and per-snippet mean normalized return.

    Pickle-free, unlike MoCapAct's: snippet ids and returns are parallel arrays.
    """
    files = RolloutFiles(paths)
    metrics = dict(files.stats)
    metrics["snippet_ids"] = np.array(list(files.snippet_norm_returns), dtype=str)
    metrics["snippet_returns"] = np.array(list(files.snippet_norm_returns.values()), dtype=np.float64)
    replace_atomically(output, lambda tmp: np.savez(tmp, **metrics))
    return metrics
