"""``MotionCompletion``: continue a motion from a short prompt, with no reference to follow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from mocapact_envs.envs.dm_control_adapter import DEFAULT_CAMERA, DmControlEnv, check_reset_options
from mocapact_envs.envs.tracking import reference_source
from mocapact_envs.extras import require_extra
from mocapact_envs.mocap.source import ClipSet
from mocapact_envs.tasks.checks import check_arena_size, check_integer
from mocapact_envs.tasks.composer_tracking import build_tracking_environment
from mocapact_envs.tasks.motion_completion import MotionCompletion
from mocapact_envs.tasks.observables import TIME_INDEX, flatten_observation, resolve_observables
from mocapact_envs.tasks.tracking_settings import TrackingSettings, load_clip_set

# MoCapAct's prompt: the expert drives this many steps before the policy under test.
DEFAULT_PROMPT_STEPS = 32


class MotionCompletionEnv(DmControlEnv):
    """Motion completion as in MoCapAct: a snippet expert prompts, the policy continues.

    Each episode starts at a random step of a clip (leaving at least
    ``prompt_steps`` steps), sets the walker to the reference pose there, and lets
    the expert whose snippet covers that start drive the first ``prompt_steps``
    steps (the prompt). ``reset`` returns the observation after the prompt; the
    policy under test acts from then on. The reference freezes at the clip's last
    step. A fall during the prompt does not end the episode; the policy then
    starts from it (and its first step ends the episode).

    Action space:
        ``Box(-1, 1, (56,), float32)``, as in the tracking task.

    Observation space:
        ``Dict`` of float32 boxes; by default ``high_level_sans_reference`` (base
        proprioception and body height, 206 dims: no reference). ``info
        ["prompt_observations"]`` holds, per key, the ``prompt_steps + 1``
        observations of the prompt (the last row is the returned observation): the
        context a sequence model starts from. With ``render_mode="rgb_array"`` (or
        ``"depth_array"``), ``info["prompt_frames"]`` holds the prompt's images; with ``"human"``
        the viewer window shows the prompt as it is played.

    Reward:
        none (always 0).

    Episode end:
        ``terminated`` when the walker has fallen (a geom other than the feet
        touches the floor) and its tracking error against the frozen reference
        exceeds ``termination_error_threshold``; ``truncated`` after ``max_steps``
        steps in all (the prompt included).

    Info:
        ``episode_steps`` (steps so far, the prompt included), ``prompt_steps``,
        ``prompt_snippet_start`` and ``prompt_snippet_end`` (the snippet of the expert that prompted, in
        clip steps; its id is ``env.prompt_snippet_id``), ``start_step`` (in the clip), ``tracking_error``
        and ``physics_state``: numbers and arrays of numbers only, so other libraries' vector wrappers
        batch them.

    Needs the ``[train]`` extra (torch), for the prompt expert; the other environments run on the base install.

    Args:
        clips: clip ids (or a collection) to start from; whole clips.
        prompt_experts: a folder of expert runs (``<clip>-<start>-<end>/<seed>/``
            with ``clip_info.json``) or one run; the expert covering each start prompts.
            ``None``: the experts shipped with the package (``mocapact_envs/pretrained/experts``,
            CMU_016_22), so ``gym.make("mocapact/MotionCompletion-CMU_016_22-v0")`` needs no argument.
        prompt_steps: steps the expert drives.
        max_steps: the most steps an episode lasts, the prompt included.
        observables: the observation set or keys the policy under test sees.
        termination_error_threshold: the tracking error above which a fall ends the episode.
        arena_size: the floor's half extents (MoCapAct: 100 m x 100 m in all).
        mocap_path, act_noise, render_mode, width, height, camera: as in
            :class:`~mocapact_envs.MocapTrackingEnv`.

    Version history:
        * v0: MoCapAct's motion completion (mocapact-envs 0.1). ``prompt_experts`` defaults to
          the shipped experts, and ``MotionCompletion-<clip>-v0`` is registered only for the clips
          they cover, so every id makes without arguments (before, every clip of ``ALL`` had an id
          that raised without ``prompt_experts``). Other
          changes since keep the id and the task (dynamics, reward, episode ends):
          ``step()`` with no episode running raises ``RuntimeError`` (it raised ``TypeError``
          or stepped a new episode), NaN actions raise ``ValueError`` naming them and end the
          episode, bad arguments (and unknown ``reset()`` options) raise errors naming them,
          ``metadata["reference_source"]``,
          pickling and ``copy.deepcopy``, ``spec.to_json()`` with path arguments; ``info["prompt_snippet_id"]``
          (a string, which torchrl's batched ``GymEnv`` cannot batch) became ``prompt_snippet_start`` and
          ``prompt_snippet_end``, the id ``env.prompt_snippet_id``;
          ``render_mode="human"`` (MuJoCo's viewer) and ``"depth_array"``.
    """

    def __init__(
        self,
        clips: str | Sequence[str] = "CMU_016_22",
        *,
        prompt_experts: str | Path | None = None,
        prompt_steps: int = DEFAULT_PROMPT_STEPS,
        max_steps: int = 500,
        observables: str | Sequence[str] = "high_level_sans_reference",
        termination_error_threshold: float = TrackingSettings.termination_error_threshold,
        arena_size: tuple[float, float] = (50.0, 50.0),
        mocap_path: str | Path | None = None,
        act_noise: float = 0.0,
        skip_missing_clips: bool = False,
        render_mode: str | None = None,
        width: int = 640,
        height: int = 480,
        camera: str | int = DEFAULT_CAMERA,
    ):
        # The prompt is an expert network's: torch, before any clip is read.
        require_extra("MotionCompletionEnv (an expert network drives its prompt)", "torch")
        super().__init__(act_noise=act_noise, render_mode=render_mode, width=width, height=height, camera=camera)
        from mocapact_envs.policies.run_layout import SHIPPED_EXPERTS, find_experts

        if prompt_experts is None:
            prompt_experts = SHIPPED_EXPERTS
        max_steps = check_integer("max_steps", max_steps, 2)
        check_integer("prompt_steps", prompt_steps, 1, f"an integer in [1, max_steps={max_steps})")
        if prompt_steps >= max_steps:
            raise ValueError(f"prompt_steps must be an integer in [1, max_steps={max_steps}), got {prompt_steps}.")
        arena_size = check_arena_size(arena_size)
        self.clip_set: ClipSet = load_clip_set(clips, mocap_path, skip_missing_clips=skip_missing_clips)
        clip_ids = sorted({s.clip_id for s in self.clip_set.snippets})
        self.expert_runs = find_experts([prompt_experts], clip_ids).runs_by_clip
        lacking = [c for c in clip_ids if c not in self.expert_runs]
        if lacking:
            raise ValueError(
                f"no expert under {prompt_experts} tracks {', '.join(lacking)}; each clip needs one: pass "
                "prompt_experts= a folder of expert runs that covers them."
            )
        self.prompt_steps = int(prompt_steps)
        self._experts: dict[str, Any] = {}
        policy_keys = resolve_observables(observables)
        settings = TrackingSettings(
            min_steps=self.prompt_steps, termination_error_threshold=termination_error_threshold
        )
        self._dm_env = build_tracking_environment(
            self.clip_set,
            sorted(set(policy_keys) | set(TIME_INDEX)),
            settings,
            with_ghost=render_mode is not None,
            arena_size=arena_size,
            task_class=MotionCompletion,
            max_steps=max_steps,
        )
        self._task = self._dm_env.task
        self._setup_spaces(policy_keys)
        self.reference_source = reference_source(self.clip_set, mocap_path)
        self.metadata = {**self.metadata, "reference_source": self.reference_source}
        self._prompt: dict[str, np.ndarray] = {}
        self._last_raw_observation = None
        self._prompt_run = None

    # -- the prompt ----------------------------------------------------------------

    def _clip_step(self) -> int:
        """The current step in the clip (the task counts from its snippet's start)."""
        return int(self.clip_set.snippets[self._task._current_clip_index].start + self._task._time_step)

    def _choose_prompt_run(self, clip_id: str, start: int):
        """The expert whose snippet covers the prompt best: most overlap with [start, start + prompt]."""
        window_end = start + self.prompt_steps

        def overlap(run) -> int:
            return min(run.snippet.end, window_end) - max(run.snippet.start, start)

        return max(self.expert_runs[clip_id], key=overlap)

    def _expert(self, run):
        from mocapact_envs.policies.expert_files import load_expert

        if run.snippet.id not in self._experts:
            self._experts[run.snippet.id] = load_expert(run.run_dir)
        return self._experts[run.snippet.id]

    @property
    def prompt_snippet_id(self) -> str:
        """The snippet id of the expert that prompted the episode."""
        return self._prompt_run.snippet.id

    def prompt_expert_action(self) -> np.ndarray:
        """What the prompting expert does now (its time index runs on past its snippet)."""
        raw = self._last_raw_observation
        snippet = self._prompt_run.snippet
        expert_observation = {key: np.asarray(raw[key], np.float32).reshape(-1) for key in TIME_INDEX}
        time_in_snippet = (self._clip_step() - snippet.start) / (snippet.end - snippet.start)
        expert_observation["walker/time_in_clip"] = np.array([time_in_snippet], np.float32)
        action, _ = self._expert(self._prompt_run).predict(expert_observation, deterministic=True)
        return np.asarray(action, np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        check_reset_options(self, options)
        gym.Env.reset(self, seed=seed)
        if seed is not None:
            self._dm_env.random_state.seed(seed)
        timestep = self._dm_env.reset()
        self._episode_over = False
        clip_id = self.clip_set.snippets[self._task._current_clip_index].clip_id
        self._start_step = self._clip_step()
        self._prompt_run = self._choose_prompt_run(clip_id, self._start_step)
        rows = [self._observation(timestep.observation)]
        frames = []  # the prompt's images; "human" shows it in the window instead (render() gives None)

        def show() -> None:
            frame = self.render() if self.render_mode is not None else None
            if frame is not None:
                frames.append(frame)

        show()
        self._task.prompting = True
        try:
            for _ in range(self.prompt_steps):
                timestep = self._dm_env.step(self.prompt_expert_action())
                rows.append(self._observation(timestep.observation))
                show()
        finally:
            self._task.prompting = False
        self._prompt = {key: np.stack([row[key] for row in rows]) for key in self.observable_keys}
        info = {**self._info(), "prompt_observations": self._prompt}
        if frames:
            info["prompt_frames"] = frames
        return rows[-1], info

    def _observation(self, observation) -> dict[str, np.ndarray]:
        # The prompt expert reads observables the policy may not see: keep them all.
        self._last_raw_observation = observation
        return super()._observation(observation)

    def _info(self) -> dict[str, Any]:
        return {
            **super()._info(),
            "episode_steps": int(self._task._steps),
            "prompt_steps": self.prompt_steps,
            "prompt_snippet_start": int(self._prompt_run.snippet.start),
            "prompt_snippet_end": int(self._prompt_run.snippet.end),
            "start_step": self._start_step,
            "tracking_error": float(self._task._termination_error),
        }


#: Policies motion completion compares: a sequence model, and MoCapAct's two baselines.
BASELINES = ("zero", "expert")


class CompletionActor:
    """Acts after the prompt: a GPT policy from a rolling context, or a baseline.

    ``"zero"`` holds every actuator at its zero target; ``"expert"`` lets the
    prompting expert go on past its snippet.
    """

    def __init__(self, policy, deterministic: bool = True):
        if isinstance(policy, str) and policy not in BASELINES:
            raise ValueError(f"unknown baseline {policy!r}; choose one of {', '.join(BASELINES)} or pass a GPT policy.")
        self.policy, self.deterministic = policy, deterministic
        self._context: list[np.ndarray] = []

    def start(self, env: MotionCompletionEnv, info: dict[str, Any]) -> None:
        if not isinstance(self.policy, str):
            keys = self.policy.config.observation_keys
            prompt = info["prompt_observations"]
            self._context = list(np.concatenate([prompt[k] for k in keys], axis=1))

    def __call__(self, env: MotionCompletionEnv, observation: dict[str, np.ndarray]) -> np.ndarray:
        if self.policy == "zero":
            return np.zeros(env.action_space.shape, np.float32)
        if self.policy == "expert":
            return env.prompt_expert_action()
        # The context ends with the current observation: the prompt's last row, then each observe().
        window = np.stack(self._context[-self.policy.config.context_length :])[None]
        return self.policy.act(window, deterministic=self.deterministic)[0]

    def observe(self, observation: dict[str, np.ndarray]) -> None:
        """Adds the observation a step returned to the context."""
        if not isinstance(self.policy, str):
            self._context.append(flatten_observation(observation, self.policy.config.observation_keys))


def spread_episodes(clips: Sequence[str], total: int) -> dict[str, int]:
    """Episodes per clip when ``total`` episodes go round-robin over ``clips`` (in their order);
    clips left without one (``total < len(clips)``) are left out."""
    if total < 1:
        raise ValueError(f"the total number of episodes must be at least 1, got {total}.")
    counts = {clip: total // len(clips) + (index < total % len(clips)) for index, clip in enumerate(clips)}
    return {clip: count for clip, count in counts.items() if count}


def length_summary(lengths: Sequence[int]) -> dict[str, float | int | None]:
    """Mean episode length, its sample standard deviation and standard error, and ``n``
    (``std`` and ``se`` are ``None`` with fewer than two episodes)."""
    values = np.asarray(lengths, dtype=np.float64)
    n = len(values)
    if n == 0:
        raise ValueError("no episode lengths to summarise.")
    std = float(np.std(values, ddof=1)) if n > 1 else None
    return {"mean": float(values.mean()), "std": std, "se": std / np.sqrt(n) if std is not None else None, "n": n}


def run_completion(
    policy,
    clips: Sequence[str],
    prompt_experts: str | Path,
    episodes: int | Mapping[str, int],
    *,
    max_steps: int = 500,
    seed: int = 0,
    deterministic: bool = True,
    progress_bar: bool = False,
) -> dict[str, list[int]]:
    """Motion completion episode lengths (the prompt included) per clip, MoCapAct's metric.

    ``episodes`` is the number per clip, or a number for each clip (:func:`spread_episodes`);
    episode ``i`` of a clip is seeded ``seed + i``, so every policy starts from the same steps
    with the same prompts.
    """
    from tqdm.auto import tqdm

    lengths: dict[str, list[int]] = {}
    for clip in clips:
        count = episodes if isinstance(episodes, int) else episodes.get(clip, 0)
        if count < 1:
            continue
        env = MotionCompletionEnv(clip, prompt_experts=prompt_experts, max_steps=max_steps)
        actor = CompletionActor(policy, deterministic)
        lengths[clip] = []
        for episode in tqdm(range(count), desc=f"completion {clip}", unit="episode", disable=not progress_bar):
            observation, info = env.reset(seed=seed + episode)
            actor.start(env, info)
            while True:
                observation, _, terminated, truncated, info = env.step(actor(env, observation))
                actor.observe(observation)
                if terminated or truncated:
                    lengths[clip].append(info["episode_steps"])
                    break
        env.close()
    return lengths
