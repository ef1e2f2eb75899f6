"""MoCapAct's evaluation of clip experts: deterministic actions, two kinds of episodes.

``eval_rsi``: random-start episodes with action noise 0.1 and ``min_steps`` 30;
``eval_start``: episodes from the snippet start with action noise 0.01. Each
reports mean return, episode length, normalized return and normalized episode
length (:mod:`mocapact_envs.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from mocapact_envs.envs import batched_observation, clamp_min_steps, make_tracking_vec_env, resolve_snippet
from mocapact_envs.metrics import EpisodeMetrics, EpisodeTracker


@dataclass(frozen=True)
class EvalSetting:
    random_start: bool
    act_noise: float
    min_steps: int


#: MoCapAct's two evaluations, by the folder names its runs use.
EVAL_SETTINGS: dict[str, EvalSetting] = {
    "eval_rsi": EvalSetting(random_start=True, act_noise=0.1, min_steps=30),
    "eval_start": EvalSetting(random_start=False, act_noise=0.01, min_steps=30),
}


def make_eval_vec_env(
    clip: str,
    kind: str,
    num_envs: int,
    backend: str | None = None,
    vectorization_mode: str | None = None,
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    """The vector env of one evaluation kind (``"eval_rsi"`` or ``"eval_start"``) for ``clip``."""
    if kind not in EVAL_SETTINGS:
        raise ValueError(f"unknown evaluation {kind!r}; choose one of {', '.join(EVAL_SETTINGS)}.")
    setting = EVAL_SETTINGS[kind]
    min_steps = clamp_min_steps(resolve_snippet(clip), setting.min_steps, tuple(kwargs.get("ref_steps", (0,))))
    settings = {"random_start": setting.random_start, "act_noise": setting.act_noise, "min_steps": min_steps}
    return make_tracking_vec_env(clip, num_envs, backend, vectorization_mode, **{**settings, **kwargs})


def run_episodes(
    envs: gym.vector.VectorEnv,
    act: Callable[[Mapping[str, np.ndarray]], np.ndarray],
    num_episodes: int,
    seed: int | None = None,
) -> list[EpisodeMetrics]:
    """Runs ``act`` (batched Dict observation -> actions) until ``num_episodes`` episodes end.

    Each sub-environment runs its fixed share of the episodes, as SB3's
    ``evaluate_policy`` does, so short (failed) episodes are not over-counted.
    Handles Gymnasium's next-step autoreset: the step after an episode's end only
    resets, and starts the next episode's statistics.
    """
    num_envs = envs.num_envs
    targets = np.array([(num_episodes + i) // num_envs for i in range(num_envs)])
    counts = np.zeros(num_envs, dtype=int)
    episodes: list[EpisodeMetrics] = []
    tracker = EpisodeTracker(num_envs)
    observation, info = envs.reset(seed=seed)
    tracker.on_reset(info)
    resetting = np.zeros(num_envs, dtype=bool)
    while (counts < targets).any():
        actions = act(batched_observation(observation, num_envs))
        observation, reward, terminated, truncated, info = envs.step(actions)
        done = np.asarray(terminated) | np.asarray(truncated)
        for env_index, metrics in zip(
            np.flatnonzero(done), tracker.on_step(reward, terminated, truncated, info), strict=True
        ):
            if counts[env_index] < targets[env_index]:
                episodes.append(metrics)
                counts[env_index] += 1
        tracker.on_reset(info, mask=resetting)
        resetting = done
    return episodes
