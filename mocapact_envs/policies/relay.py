"""Relay experts: one long snippet tracked by short-window experts handing over in time.

A PPO expert of the ``cpu`` preset holds a 50-step window of a motion from every start in minutes
and loses the same motion over 200 steps (``baselines/ppo_expert/README.md``, "Long snippets").
A relay splits a long snippet into overlapping windows, trains one ordinary expert per window
(all of them together, as ``train.py`` trains K experts at once) and composes them: window
``k`` acts from its switch step until window ``k + 1``'s. Switches fall in the middle of each
overlap, where both neighbours were trained (the outgoing one on the steps up to its window's end,
the incoming one from random starts there).

The composition stays a function of its observation: the step comes from the
``walker/time_in_clip`` observable of the whole snippet, and each window expert is given the
same observation with ``walker/time_in_clip`` expressed in its own window, as it saw it in
training. On disk a relay is one model folder:

* ``config.json``: format ``mocapact-envs-relay-expert``, the snippet, the observation keys and
  one entry per window (its folder, snippet id and the first step it acts on);
* ``window_<k>/``: window ``k``'s expert, an ordinary expert model folder
  (:mod:`mocapact_envs.policies.expert_files`).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mocapact_envs.files import read_json, replace_atomically, replace_directory
from mocapact_envs.mocap.ids import Snippet, parse_snippet
from mocapact_envs.tasks.observables import flat_keyed
from mocapact_envs.tasks.reference_actions import TIME_KEY

RELAY_FORMAT_NAME = "mocapact-envs-relay-expert"
RELAY_FORMAT_VERSION = 1
#: Where a relay's window runs train, inside the relay's run folder; expert searches skip it.
RELAY_WINDOWS_DIR = "relay_windows"


def snippet_steps(snippet: Snippet) -> int:
    """Steps in a snippet whose end is resolved (both ends inclusive)."""
    if snippet.end is None:
        raise ValueError(f"snippet {snippet.id} has no resolved end step.")
    return snippet.end - snippet.start + 1


def clip_steps_at(snippet: Snippet, time_in_clip: np.ndarray) -> np.ndarray:
    """The clip steps that ``walker/time_in_clip`` values (normalized time in ``snippet``) stand for."""
    time = np.asarray(time_in_clip, np.float64).reshape(-1)
    return snippet.start + np.rint(time * (snippet_steps(snippet) - 1)).astype(np.int64)


@dataclass(frozen=True)
class RelayPlan:
    """A long snippet's windows and the step at which each one takes over."""

    snippet: Snippet
    windows: tuple[Snippet, ...]
    #: ``switch_steps[k]``: the first clip step window ``k`` acts on (``switch_steps[0]`` is the snippet's start).
    switch_steps: tuple[int, ...]

    def window_index(self, clip_steps: np.ndarray) -> np.ndarray:
        """The window acting at each clip step."""
        return np.searchsorted(np.asarray(self.switch_steps), np.asarray(clip_steps), side="right") - 1

    def config(self) -> list[dict[str, Any]]:
        return [
            {"folder": f"window_{k}", "snippet_id": w.id, "from_step": int(s)}
            for k, (w, s) in enumerate(zip(self.windows, self.switch_steps, strict=True))
        ]


def plan_relay(snippet: Snippet, window_steps: int, overlap_steps: int) -> RelayPlan:
    """Windows of ``window_steps`` steps over ``snippet`` (end resolved), neighbours sharing at least
    ``overlap_steps`` (evenly spread, so overlaps may be larger); a snippet no longer than one window is one
    window."""
    if window_steps < 2 or not 0 < overlap_steps < window_steps:
        raise ValueError(
            f"relay windows need window_steps >= 2 and 0 < overlap_steps < window_steps; got window_steps="
            f"{window_steps}, overlap_steps={overlap_steps}."
        )
    total = snippet_steps(snippet)
    if total <= window_steps:
        return RelayPlan(snippet, (snippet,), (snippet.start,))
    # The fewest windows whose neighbours share at least overlap_steps, spread evenly from start to end.
    span = total - window_steps
    count = math.ceil(span / (window_steps - overlap_steps)) + 1
    starts = [snippet.start + (i * span) // (count - 1) for i in range(count)]
    windows = tuple(Snippet(snippet.clip_id, s, s + window_steps - 1) for s in starts)
    # Each switch in the middle of its overlap: the outgoing window's last steps, the incoming one's first.
    switches = [snippet.start] + [
        nxt.start + (prev.end - nxt.start + 1) // 2 for prev, nxt in zip(windows, windows[1:], strict=False)
    ]
    return RelayPlan(snippet, windows, tuple(switches))


class RelayExpert:
    """Window experts composed in time; ``predict`` and ``value`` as :class:`~mocapact_envs.policies.expert_files.Expert`."""

    def __init__(self, plan: RelayPlan, experts: Sequence[Any], config: Mapping[str, Any], path: Path | None = None):
        if len(experts) != len(plan.windows):
            raise ValueError(f"a relay of {len(plan.windows)} windows needs as many experts, got {len(experts)}.")
        keys = {tuple(e.observation_keys) for e in experts}
        if len(keys) != 1 or TIME_KEY not in next(iter(keys)):
            raise ValueError(f"the window experts of a relay must share observation keys that include {TIME_KEY}.")
        self.plan, self.experts = plan, list(experts)
        self.observation_keys = next(iter(keys))
        self.config, self.path = dict(config), path

    @property
    def snippet_id(self) -> str:
        return self.plan.snippet.id

    @property
    def action_std(self) -> np.ndarray:
        return self.experts[0].action_std

    def _split(self, observation: Mapping[str, Any]):
        """Per acting window: its index, its rows of the batch and those rows' observation in its own time."""
        observation = flat_keyed(observation)  # Minari's recovered envs nest it by key prefix
        batch = {k: np.asarray(observation[k]) for k in self.observation_keys}
        single = batch[self.observation_keys[0]].ndim == 1
        if single:
            batch = {k: v[None] for k, v in batch.items()}
        clip_steps = clip_steps_at(self.plan.snippet, batch[TIME_KEY])
        window_of_row = self.plan.window_index(clip_steps)
        parts = []
        for k in np.unique(window_of_row):
            rows = np.flatnonzero(window_of_row == k)
            window = self.plan.windows[k]
            local = {key: v[rows] for key, v in batch.items()}
            local_time = (clip_steps[rows] - window.start) / (snippet_steps(window) - 1)
            local[TIME_KEY] = local_time.astype(batch[TIME_KEY].dtype).reshape(-1, 1)
            parts.append((int(k), rows, local))
        return parts, len(clip_steps), single

    def predict(
        self, observation: Mapping[str, Any], state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        parts, rows, single = self._split(observation)
        actions = None
        for k, index, local in parts:
            action, _ = self.experts[k].predict(local, deterministic=deterministic)
            if actions is None:
                actions = np.zeros((rows, action.shape[-1]), action.dtype)
            actions[index] = action
        return (actions[0] if single else actions), state

    def value(self, observation: Mapping[str, Any]) -> np.ndarray | float:
        parts, rows, single = self._split(observation)
        values = np.zeros(rows)
        for k, index, local in parts:
            values[index] = self.experts[k].value(local)
        return float(values[0]) if single else values


def save_relay(model_dir: str | Path, plan: RelayPlan, window_model_dirs: Sequence[Path], metadata: Mapping[str, Any]):
    """Writes a relay model folder from the window experts' model folders (copied in); ``config.json`` last."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    windows = plan.config()
    first_config = read_json(Path(window_model_dirs[0]) / "config.json")
    for entry, source in zip(windows, window_model_dirs, strict=True):
        target = model_dir / entry["folder"]
        staging = model_dir / f".{entry['folder']}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        replace_directory(staging, target)
    config = {
        "format": RELAY_FORMAT_NAME,
        "format_version": RELAY_FORMAT_VERSION,
        "snippet_id": plan.snippet.id,
        "observation_keys": first_config["observation_keys"],
        "windows": windows,
        **dict(metadata),
    }
    replace_atomically(model_dir / "config.json", lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return model_dir


def relay_plan_from_config(config: Mapping[str, Any], where: Path) -> RelayPlan:
    """The plan a relay's ``config.json`` describes, checked: every step of the snippet has a window that covers it."""
    try:
        snippet = parse_snippet(config["snippet_id"])
        windows = tuple(parse_snippet(w["snippet_id"]) for w in config["windows"])
        switches = tuple(int(w["from_step"]) for w in config["windows"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{where}: not a readable relay expert config ({error!r}).") from error
    if int(config.get("format_version", 0)) > RELAY_FORMAT_VERSION:
        raise ValueError(
            f"{where}: relay expert format version {config.get('format_version')} is newer than this package reads "
            f"({RELAY_FORMAT_VERSION})."
        )
    if not windows or switches[0] != snippet.start or list(switches) != sorted(set(switches)):
        raise ValueError(f"{where}: relay windows must start at the snippet's start in increasing order: {switches}.")
    for window, switch, following in zip(windows, switches, switches[1:] + (snippet.end + 1,), strict=True):
        if not (window.start <= switch and following - 1 <= window.end):
            raise ValueError(
                f"{where}: window {window.id} does not cover the steps {switch}-{following - 1} it acts on."
            )
    return RelayPlan(snippet, windows, switches)
