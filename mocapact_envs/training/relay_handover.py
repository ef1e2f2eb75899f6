"""The states a relay window hands its successor: where the previous window's expert really is at the switch.

A relay (:mod:`mocapact_envs.policies.relay`) switches from window ``k - 1``'s expert to window ``k``'s at
a fixed step. Window ``k`` trained only from reference states meets, at the switch, states its
predecessor drifted into; training it from those states too is what ``--relay-handover-probability``
of ``baselines/ppo_expert/train.py`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mocapact_envs.envs.factory import batched_observation, clamp_min_steps, make_tracking_vec_env
from mocapact_envs.mocap.ids import Snippet
from mocapact_envs.policies.expert_files import load_expert
from mocapact_envs.policies.relay import clip_steps_at

#: Handover states are the predecessor's states this many steps either side of the switch.
HANDOVER_SPREAD = 2
#: Noise added to the predecessor's deterministic actions, on top of training's: MoCapAct's random-start evaluation's.
HANDOVER_ACTION_NOISE = 0.1


def handover_states(
    model_dir: Path,
    previous: Snippet,
    switch_step: int,
    window: Snippet,
    *,
    num_envs: int,
    min_steps: int,
    act_noise: float,
    termination_error_threshold: float,
    seed: int,
    episodes: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """States the previous window's expert (``model_dir``) reaches near ``switch_step``, from random starts before
    the switch with ``act_noise`` plus :data:`HANDOVER_ACTION_NOISE`: (steps counted from ``window``'s start,
    physics states), for the fast vector env's ``set_start_states``."""
    expert = load_expert(model_dir)
    ahead = previous.end - switch_step + 1 + HANDOVER_SPREAD  # random starts at least this far before the end
    envs = make_tracking_vec_env(
        previous.id,
        num_envs,
        "fast",
        random_start=True,
        min_steps=clamp_min_steps(previous, max(ahead, min_steps)),
        act_noise=act_noise + HANDOVER_ACTION_NOISE,
        termination_error_threshold=termination_error_threshold,
        observables="time_index",
        ref_steps=(0,),
    )
    steps, states = [], []
    wanted = range(switch_step - HANDOVER_SPREAD, switch_step + HANDOVER_SPREAD + 1)
    try:
        observation, info = envs.reset(seed=seed + 2_000_003 * switch_step)
        finished = 0
        while finished < episodes:
            action, _ = expert.predict(batched_observation(observation, envs.num_envs), deterministic=True)
            observation, _, terminated, truncated, info = envs.step(action.reshape(envs.num_envs, -1))
            clip_steps = clip_steps_at(previous, info["time_in_clip"])
            for world in np.flatnonzero(~(terminated | truncated)):
                if clip_steps[world] in wanted:
                    steps.append(clip_steps[world] - window.start)
                    states.append(np.array(info["physics_state"][world]))
            finished += int((terminated | truncated).sum())
    finally:
        envs.close()
    if not states:
        raise RuntimeError(f"{previous.id}'s expert reached step {switch_step} in none of {episodes} episodes.")
    return np.array(steps), np.stack(states)
