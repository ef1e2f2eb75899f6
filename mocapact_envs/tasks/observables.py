"""MoCapAct's observation sets, by the names dm_control gives each observable.

Sizes in the comments are for reference steps 1..5 where a reference appears.
Observations are dictionaries whose keys are always in alphabetical order, the
order MoCapAct concatenates them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Base proprioception, 205 dims: what a low-level policy sees.
BASE = (
    "walker/actuator_activation",
    "walker/end_effectors_pos",
    "walker/joints_pos",
    "walker/joints_vel",
    "walker/sensors_gyro",
    "walker/sensors_torque",
    "walker/sensors_touch",
    "walker/sensors_velocimeter",
    "walker/world_zaxis",
)
#: Clip experts' observations, 206 dims.
TIME_INDEX = BASE + ("walker/time_in_clip",)
#: The GPT policy's observations, 206 dims.
HIGH_LEVEL_SANS_REFERENCE = BASE + ("walker/body_height",)
#: The NPMP encoder's observations, 1291 dims.
HIGH_LEVEL = HIGH_LEVEL_SANS_REFERENCE + (
    "walker/reference_rel_bodies_pos_local",
    "walker/reference_rel_bodies_quats",
)
#: dm_control's CMU humanoid proprioception, 224 dims: transfer tasks.
CMU_HUMANOID = (
    "walker/actuator_activation",
    "walker/appendages_pos",
    "walker/body_height",
    "walker/end_effectors_pos",
    "walker/joints_pos",
    "walker/joints_vel",
    "walker/sensors_accelerometer",
    "walker/sensors_gyro",
    "walker/sensors_torque",
    "walker/sensors_touch",
    "walker/sensors_velocimeter",
    "walker/world_zaxis",
)
#: Everything a multi-clip policy may see but the clip id, 2847 dims.
MULTI_CLIP_SANS_ID = CMU_HUMANOID + (
    "walker/gyro_control",
    "walker/joints_vel_control",
    "walker/velocimeter_control",
    "walker/time_in_clip",
    "walker/reference_rel_joints",
    "walker/reference_rel_bodies_pos_global",
    "walker/reference_rel_bodies_quats",
    "walker/reference_rel_bodies_pos_local",
    "walker/reference_ego_bodies_quats",
    "walker/reference_rel_root_quat",
    "walker/reference_rel_root_pos_local",
    "walker/reference_appendages_pos",
)
MULTI_CLIP = MULTI_CLIP_SANS_ID + ("walker/clip_id",)
#: Walker observables no policy set uses but MoCapAct's rollouts log, 21 dims.
EXTRA_LOGGED = (
    "walker/gyro_anticlockwise_spin",
    "walker/gyro_backward_roll",
    "walker/gyro_rightward_roll",
    "walker/head_height",
    "walker/orientation",
    "walker/position",
    "walker/torso_xvel",
    "walker/torso_yvel",
    "walker/veloc_forward",
    "walker/veloc_strafe",
    "walker/veloc_up",
)
#: Every proprioceptive observable MoCapAct logs in rollouts, 2868 dims.
ALL_PROPRIOCEPTIVE = tuple(sorted(set(MULTI_CLIP_SANS_ID) | set(HIGH_LEVEL) | set(EXTRA_LOGGED)))

OBSERVATION_SETS: dict[str, tuple[str, ...]] = {
    "base": BASE,
    "time_index": TIME_INDEX,
    "high_level_sans_reference": HIGH_LEVEL_SANS_REFERENCE,
    "high_level": HIGH_LEVEL,
    "cmu_humanoid": CMU_HUMANOID,
    "multi_clip_sans_id": MULTI_CLIP_SANS_ID,
    "multi_clip": MULTI_CLIP,
    "all_proprioceptive": ALL_PROPRIOCEPTIVE,
}


def resolve_observables(observables: str | Sequence[str], name: str = "observables") -> tuple[str, ...]:
    """A set name from :data:`OBSERVATION_SETS`, or explicit keys, as sorted keys.

    Anything else (an unknown name or key, no key at all, a value that is neither) raises naming ``name``.
    """
    choices = (
        f"choose one of {', '.join(OBSERVATION_SETS)} or pass a list of observable keys such as 'walker/joints_pos'"
    )
    if isinstance(observables, str):
        if observables not in OBSERVATION_SETS:
            raise ValueError(f"unknown observation set {observables!r} ({name}); {choices}.")
        return tuple(sorted(OBSERVATION_SETS[observables]))
    if not isinstance(observables, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be an observation set name or a list of keys, got {observables!r}; {choices}.")
    keys = tuple(observables)
    if not keys:
        # Gymnasium refuses an empty Dict space with a bare AssertionError.
        raise ValueError(f"{name} must name at least one observable, got {observables!r}; {choices}.")
    known = set(ALL_PROPRIOCEPTIVE) | set(MULTI_CLIP)
    unknown = [k for k in keys if not isinstance(k, str) or k not in known]
    if unknown:
        raise ValueError(f"unknown observable(s) {unknown} ({name}); known keys: {', '.join(sorted(known))}.")
    return tuple(sorted(set(keys)))


def flat_keyed(observation: Mapping[str, Any]) -> Mapping[str, Any]:
    """``observation`` keyed as dm_control names observables (``"walker/joints_pos"``), whether it is already or
    nested by key prefix (``{"walker": {"joints_pos": ...}}``), as Minari stores the rollouts and its recovered
    environments observe (:mod:`mocapact_envs.datasets.nested_observation`). The arrays are not copied."""
    if not any(isinstance(value, Mapping) for value in observation.values()):
        return observation
    flat: dict[str, Any] = {}
    for key, value in observation.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}/{name}": item for name, item in flat_keyed(value).items()})
        else:
            flat[key] = value
    return flat


def flatten_observation(observation: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray:
    """Concatenates ``observation[key]`` in ``keys`` order: ``(D,)`` for one observation, ``(B, D)`` for a batch.

    ``observation`` may be nested by key prefix, as Minari's recovered environments give it (:func:`flat_keyed`).
    """
    observation = flat_keyed(observation)
    missing = [key for key in keys if key not in observation]
    if missing:
        raise KeyError(f"the observation lacks {missing}; it has {sorted(observation)}.")
    parts = [np.asarray(observation[key], dtype=np.float32) for key in keys]
    if parts[0].ndim <= 1:
        return np.concatenate([p.reshape(-1) for p in parts])
    batch = parts[0].shape[0]
    return np.concatenate([p.reshape(batch, -1) for p in parts], axis=1)
