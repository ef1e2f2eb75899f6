"""MoCapAct's evaluation of clip experts: deterministic actions, two kinds of episodes.

``eval_rsi``: random-start episodes with action noise 0.1 and ``min_steps`` 30;
``eval_start``: episodes from the snippet start with action noise 0.01. Each
reports mean return, episode length, normalized return and normalized episode
length (:mod:`mocapact_envs.evaluation.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mocapact_envs.envs.factory import batched_observation, clamp_min_steps, make_tracking_vec_env, resolve_snippet
from mocapact_envs.evaluation.metrics import EpisodeMetrics, EpisodeTracker, summarize


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
    on_episode_start: Callable[[np.ndarray], None] | None = None,
) -> list[EpisodeMetrics]:
    """Runs ``act`` (batched Dict observation -> actions) until ``num_episodes`` episodes end.

    Each sub-environment runs its fixed share of the episodes, as SB3's
    ``evaluate_policy`` does, so short (failed) episodes are not over-counted.
    Handles Gymnasium's next-step autoreset: the step after an episode's end only
    resets, and starts the next episode's statistics. ``on_episode_start(mask)``
    tells a recurrent policy which sub-environments now show a first observation.
    """
    num_envs = envs.num_envs
    targets = np.array([(num_episodes + i) // num_envs for i in range(num_envs)])
    counts = np.zeros(num_envs, dtype=int)
    episodes: list[EpisodeMetrics] = []
    tracker = EpisodeTracker(num_envs)
    observation, info = envs.reset(seed=seed)
    tracker.on_reset(info)
    if on_episode_start is not None:
        on_episode_start(np.ones(num_envs, dtype=bool))
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
        if on_episode_start is not None and resetting.any():
            on_episode_start(resetting)
        resetting = done
    return episodes


#: Distilled policies are judged as MoCapAct judged them: sampled actions, ``min_steps`` 10.
MULTICLIP_EVAL_MIN_STEPS = 10


class RecurrentActor:
    """Runs a :class:`~mocapact_envs.policies.multiclip.MultiClipPolicy` on a batch of environments,
    keeping each one's latent and restarting it when an episode starts."""

    def __init__(self, policy, deterministic: bool):
        self.policy, self.deterministic = policy, deterministic
        self.latent = None

    def __call__(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        actions, self.latent = self.policy.act(
            self.policy.flatten_observation(observation), self.latent, self.deterministic
        )
        return actions

    def on_episode_start(self, mask: np.ndarray) -> None:
        if self.latent is not None:
            fresh = self.policy.initial_latent(int(mask.sum()), self.deterministic, self.latent.device)
            self.latent[torch.as_tensor(mask)] = fresh


class ExpertActor:
    """Runs a snippet expert (``load_expert``) on a batch of environments: its action means, or with
    ``deterministic=False`` actions sampled from its Gaussian (std 0.1 for MoCapAct's and ours)."""

    def __init__(self, expert, deterministic: bool = True):
        self.expert, self.deterministic = expert, deterministic

    def __call__(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.expert.predict(observation, deterministic=self.deterministic)[0]


def evaluate_expert(
    expert,
    clip: str,
    num_episodes: Mapping[str, int],
    *,
    num_envs: int = 2,
    backend: str | None = None,
    vectorization_mode: str | None = None,
    seed: int = 0,
) -> dict[str, list[EpisodeMetrics]]:
    """MoCapAct's evaluation of a snippet expert: ``num_episodes`` per kind (``{"eval_rsi": 1000, "eval_start": 100}``),
    deterministic actions. Kinds with 0 episodes are skipped; ``eval_start`` episodes are seeded ``seed + 1``."""
    episodes = {}
    for kind, count in num_episodes.items():
        if count <= 0:
            continue
        # An expert that sees more than the time index (reference features) gets its own observation set.
        keys = getattr(expert, "observation_keys", None)
        envs = make_eval_vec_env(
            clip, kind, num_envs, backend, vectorization_mode, **({"observables": keys} if keys else {})
        )
        try:
            episodes[kind] = run_episodes(envs, ExpertActor(expert), count, seed=seed + (kind == "eval_start"))
        finally:
            envs.close()
    return episodes


#: MoCapAct's evaluation of a finished expert: 1,000 random starts and 100 snippet starts.
FINAL_EPISODES = {"eval_rsi": 1000, "eval_start": 100}
#: Added to the training seed for final evaluations: fresh episodes, not those a model was chosen on.
FINAL_SEED_OFFSET = 7919


def final_evaluation(
    expert, snippet_id: str, num_episodes: Mapping[str, int] = FINAL_EPISODES, *, num_envs: int = 4, seed: int = 0
) -> dict[str, dict[str, float]]:
    """MoCapAct's evaluation of a finished expert (:func:`evaluate_expert`) on fresh episodes (``seed`` is the
    training seed), summarized per kind."""
    episodes = evaluate_expert(expert, snippet_id, num_episodes, num_envs=num_envs, seed=seed + FINAL_SEED_OFFSET)
    return {kind: summarize(eps) for kind, eps in episodes.items()}


def evaluate_snippets(
    policy,
    snippet_ids: list[str],
    num_episodes: int,
    *,
    ref_steps: tuple[int, ...],
    deterministic: bool = False,
    experts_sample: bool = False,
    seed: int = 0,
    num_envs: int = 2,
    backend: str | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """MoCapAct's metrics of a multi-clip policy per snippet, from the start and from random starts.

    ``policy`` is a :class:`~mocapact_envs.policies.multiclip.MultiClipPolicy`, or a mapping from
    snippet id to a loaded expert (each snippet then runs its own expert under the same protocol, for
    comparison: with its action means, or sampling its actions as the policies do with ``experts_sample``;
    ``deterministic`` is the multi-clip policy's alone). Returns ``{snippet: {"start": summary, "rsi": summary}}``
    (see :func:`~mocapact_envs.evaluation.metrics.summarize`).
    """
    results = {}
    for snippet in snippet_ids:
        results[snippet] = {}
        for kind, random_start in (("start", False), ("rsi", True)):
            min_steps = clamp_min_steps(resolve_snippet(snippet), MULTICLIP_EVAL_MIN_STEPS, ref_steps)
            if isinstance(policy, Mapping):
                actor, on_start = ExpertActor(policy[snippet], deterministic=not experts_sample), None
                observables = policy[snippet].observation_keys
            else:
                actor = RecurrentActor(policy, deterministic)
                on_start, observables = actor.on_episode_start, policy.config.observation_keys
            envs = make_tracking_vec_env(
                snippet,
                min(num_envs, num_episodes),
                backend,
                observables=observables,
                ref_steps=ref_steps,
                random_start=random_start,
                min_steps=min_steps,
            )
            try:
                episodes = run_episodes(envs, actor, num_episodes, seed=seed, on_episode_start=on_start)
            finally:
                envs.close()
            results[snippet][kind] = summarize(episodes)
    return results


#: The name :func:`evaluate_units` gives the snippets' own experts among the policies.
EXPERT_LABEL = "expert"
_WORKER_STATE: dict[str, Any] = {}


def _start_evaluation_worker(policy_dirs: Mapping[str, str], expert_dirs: Mapping[str, str], settings: dict) -> None:
    from mocapact_envs.policies.multiclip import MultiClipPolicy

    # Each worker runs one small network a step; more threads would only contend for the cores.
    torch.set_num_threads(1)
    _WORKER_STATE.update(
        policies={label: MultiClipPolicy.load(path) for label, path in policy_dirs.items()},
        expert_dirs=dict(expert_dirs),
        settings=settings,
    )


def _evaluate_unit(unit: tuple[str, str]) -> tuple[str, str, dict[str, dict[str, float]]]:
    from mocapact_envs.policies.expert_files import load_expert

    label, snippet = unit
    # A sampling policy draws from torch's generator: reseeded per unit, a unit's result does not
    # depend on which units ran before it in this process.
    torch.manual_seed(_WORKER_STATE["settings"]["seed"])
    if label == EXPERT_LABEL:
        policy = {snippet: load_expert(_WORKER_STATE["expert_dirs"][snippet])}
    else:
        policy = _WORKER_STATE["policies"][label]
    return label, snippet, evaluate_snippets(policy, [snippet], **_WORKER_STATE["settings"])[snippet]


def evaluate_units(
    policy_dirs: Mapping[str, str],
    expert_dirs: Mapping[str, str],
    units: list[tuple[str, str]],
    num_episodes: int,
    *,
    ref_steps: tuple[int, ...],
    deterministic: bool = False,
    experts_sample: bool = False,
    seed: int = 0,
    workers: int = 1,
    on_result: Callable[[str, str], None] | None = None,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """:func:`evaluate_snippets` for many ``(label, snippet)`` units, in ``workers`` processes.

    ``label`` is a key of ``policy_dirs`` (saved multi-clip policies) or :data:`EXPERT_LABEL` (the
    snippet's own expert, from ``expert_dirs[snippet]``). Each unit is seeded alike wherever it runs,
    so the results do not depend on ``workers``. Returns ``{label: {snippet: {kind: summary}}}``;
    ``on_result(label, snippet)`` is called as each unit finishes (a progress bar).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    settings = {
        "num_episodes": num_episodes,
        "ref_steps": tuple(ref_steps),
        "deterministic": deterministic,
        "experts_sample": experts_sample,
        "seed": seed,
    }
    init_args = (dict(policy_dirs), dict(expert_dirs), settings)
    results: dict[str, dict[str, dict]] = {}

    def collect(outcome: tuple[str, str, dict]) -> None:
        label, snippet, result = outcome
        results.setdefault(label, {})[snippet] = result
        if on_result is not None:
            on_result(label, snippet)

    if workers == 1:
        _start_evaluation_worker(*init_args)
        for unit in units:
            collect(_evaluate_unit(unit))
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # no forked torch or MuJoCo state
    with ProcessPoolExecutor(workers, context, initializer=_start_evaluation_worker, initargs=init_args) as pool:
        for future in as_completed([pool.submit(_evaluate_unit, unit) for unit in units]):
            collect(future.result())
    return results


#: MoCapAct's evaluation modes of a distilled policy, each from the snippet start and from random starts:
#: the snippets it trained on, the held-out snippets of MoCapAct's validation clips, and whole clips
#: outside dm_control's ``ALL`` (no expert, no snippet: motion it never saw).
MULTICLIP_EVAL_MODES = ("train", "val", "extra")
#: The start kinds of :func:`evaluate_snippets`' results: snippet start, random start.
START_KINDS = ("start", "rsi")
#: The issue's target: a distilled policy keeps this share of the experts' normalized episode length.
EXPERT_RATIO_TARGET = 0.8


def mean_metrics(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    """Means over snippets of :func:`evaluate_snippets`' normalized return and length, per start kind
    (``{"start_norm_episode_return": ..., "rsi_norm_episode_length": ...}``); empty without snippets."""
    if not results:
        return {}
    return {
        f"{kind}_{metric}": float(np.mean([r[kind][f"mean_{metric}"] for r in results.values()]))
        for kind in START_KINDS
        for metric in ("norm_episode_return", "norm_episode_length")
    }


def length_ratios(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    expert_results: Mapping[str, Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, float]]:
    """Policy / expert mean normalized episode length per snippet and start kind, for the snippets of
    ``results`` that ``expert_results`` (the same protocol run by each snippet's expert) holds."""
    ratios = {}
    for snippet, result in results.items():
        if snippet in expert_results:
            # An episode lasts at least one step, so the expert's normalized length is above 0.
            ratios[snippet] = {
                kind: result[kind]["mean_norm_episode_length"]
                / expert_results[snippet][kind]["mean_norm_episode_length"]
                for kind in START_KINDS
            }
    return ratios


def rendered_episode(env: gym.Env, act: Callable[[Mapping[str, np.ndarray]], np.ndarray], seed: int = 0) -> list:
    """Frames of one episode of ``act`` (Dict observation -> action) in ``env`` (``render_mode="rgb_array"``),
    from the reset to the episode's end; the env is closed."""
    observation, _ = env.reset(seed=seed)
    frames, done = [env.render()], False
    while not done:
        observation, _, terminated, truncated, _ = env.step(act(observation))
        frames.append(env.render())
        done = terminated or truncated
    env.close()
    return frames


def record_episode(
    policy, snippet_id: str, *, deterministic: bool = False, seed: int = 0, width: int = 640, height: int = 480
):
    """Frames of one episode of a multi-clip policy from the snippet start, with the reference ghost."""
    from mocapact_envs.envs.tracking import MocapTrackingEnv

    env = MocapTrackingEnv(
        snippet_id,
        observables=policy.config.observation_keys,
        ref_steps=policy.config.ref_steps,
        random_start=False,
        render_mode="rgb_array",
        width=width,
        height=height,
    )
    actor = RecurrentActor(policy, deterministic)
    observation, _ = env.reset(seed=seed)
    frames = [env.render()]
    while True:
        batched = {k: v[None] for k, v in observation.items()}
        observation, _, terminated, truncated, _ = env.step(actor(batched)[0])
        frames.append(env.render())
        if terminated or truncated:
            env.close()
            return frames, env.metadata["render_fps"]
