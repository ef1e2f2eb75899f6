"""Acting through a low-level policy: the agent picks latent intentions, a decoder picks actions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mocapact_envs.extras import needs_extra
from mocapact_envs.tasks.checks import check_positive
from mocapact_envs.tasks.tracking_settings import DEFAULT_MAX_LATENT

with needs_extra("acting through a low-level policy (LowLevelActionWrapper, low_level_policy=)"):
    from mocapact_envs.policies.low_level import LowLevelPolicy, as_low_level_policy


class LowLevelActionWrapper(gym.Wrapper):
    """Replaces an environment's actions with a low-level policy's latent space, as MoCapAct's transfer tasks do.

    Each step the decoder reads the wrapped environment's current base
    proprioception (the policy's ``observation_keys``, by default the 9 ``BASE``
    observables, 205 dims) and the latent ``z``; its deterministic action, clipped
    to the environment's action bounds ([-1, 1]), is what the environment steps
    with. Works with every environment whose observation holds those keys: the
    transfer tasks and ``MocapTrackingEnv`` with the ``time_index``, ``base``,
    ``cmu_humanoid`` or any larger observation set.

    Action space:
        ``Box(-max_latent, max_latent, (latent_size,), float32)``: 60 dims for a
        general policy, 20 for a locomotion one. Latents outside the box are clipped.

    Observation space:
        The wrapped environment's, unchanged.

    Info:
        The wrapped environment's, plus ``low_level_action``: the clipped action applied.

    Args:
        env: the environment to control; its observation space must be a ``Dict``.
        policy_or_path: a :class:`~mocapact_envs.policies.low_level.LowLevelPolicy`, the
            directory of a saved one, or ``"pretrained"``: the decoder shipped with the package.
        max_latent: the bound of each latent dimension.
    """

    def __init__(
        self, env: gym.Env, policy_or_path: LowLevelPolicy | str | Path, max_latent: float = DEFAULT_MAX_LATENT
    ):
        super().__init__(env)
        check_positive("max_latent", max_latent)
        self.policy = as_low_level_policy(policy_or_path)
        config = self.policy.config
        observation_space = env.observation_space
        if not isinstance(observation_space, spaces.Dict):
            raise TypeError(
                f"LowLevelActionWrapper needs a Dict observation space holding {list(config.observation_keys)}; "
                f"the environment has {type(observation_space).__name__}."
            )
        missing = [key for key in config.observation_keys if key not in observation_space.spaces]
        if missing:
            raise ValueError(
                f"the low-level policy reads {missing}, which the environment's observation lacks (it has "
                f"{', '.join(observation_space.spaces)}). Build the environment with an observation set that "
                "includes them, such as 'cmu_humanoid' or, for the tracking task, 'time_index'."
            )
        size = sum(int(np.prod(observation_space[key].shape)) for key in config.observation_keys)
        if size != config.observation_size:
            raise ValueError(
                f"the observables {list(config.observation_keys)} hold {size} values here; the low-level policy "
                f"expects {config.observation_size}."
            )
        action_space = env.action_space
        if not isinstance(action_space, spaces.Box) or action_space.shape != (config.action_size,):
            raise ValueError(
                f"the low-level policy outputs {config.action_size} actions; the environment's action space is "
                f"{action_space}."
            )
        self.max_latent = float(max_latent)
        self.action_space = spaces.Box(-self.max_latent, self.max_latent, (config.latent_size,), np.float32)
        self._action_low = np.asarray(action_space.low, np.float32)
        self._action_high = np.asarray(action_space.high, np.float32)
        self._observation: dict[str, np.ndarray] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        self._observation = observation
        return observation, info

    def step(self, latent: np.ndarray):
        if self._observation is None:
            raise RuntimeError("call reset() before step(): the low-level policy acts on the current observation.")
        latent = np.asarray(latent, np.float32)
        if latent.shape != self.action_space.shape:
            raise ValueError(f"the latent action must have shape {self.action_space.shape}, got {latent.shape}.")
        latent = np.clip(latent, -self.max_latent, self.max_latent)
        action = self.policy.act(self.policy.flatten_observation(self._observation), latent)
        action = np.clip(action, self._action_low, self._action_high)
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._observation = observation
        return observation, reward, terminated, truncated, {**info, "low_level_action": action}


def prior_latents(rng: np.random.Generator, steps: int, latent_size: int, alpha: float = 0.0) -> np.ndarray:
    """A ``(steps, latent_size)`` float32 sequence of latents from the NPMP's AR(1) prior.

    ``z_0 ~ N(0, I)`` and ``z_t = alpha z_{t-1} + sqrt(1 - alpha^2) eps_t`` with ``eps_t ~ N(0, I)``,
    so every ``z_t`` is standard normal and ``alpha`` only sets how smooth the sequence is:
    ``alpha = 0`` draws independent latents each step (MoCapAct's published prior), ``0 < alpha < 1``
    a correlated sequence (the prior of a multi-clip policy trained with that ``prior_alpha``),
    ``alpha = 1`` holds ``z_0`` for the whole sequence.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"the AR(1) prior's alpha must be in [0, 1], got {alpha}.")
    if int(steps) != steps or steps < 1 or int(latent_size) != latent_size or latent_size < 1:
        raise ValueError(f"steps and latent_size must be positive integers, got {steps} and {latent_size}.")
    noise = rng.standard_normal((int(steps), int(latent_size)))
    latents = np.empty_like(noise)
    latents[0] = noise[0]
    scale = np.sqrt(1.0 - alpha**2)
    for t in range(1, len(noise)):
        latents[t] = alpha * latents[t - 1] + scale * noise[t]
    return latents.astype(np.float32)
