"""Observations nested by key prefix (``{"walker": {"joints_pos": ...}}``), as Minari can store them.

The tracking environment keys observations as dm_control names them,
``"walker/joints_pos"``; Minari's HDF5 storage would read such a key back as a
nested group (so the loaded observation would not match the space), and its
Arrow storage fails on zero-size arrays. :class:`NestedObservation` turns an
environment's observations into the nested, non-empty form the Minari export
stores, so ``MinariDataset.recover_environment()`` rebuilds a matching env.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mocapact_envs.datasets.cameras import CAMERA_OBSERVATION_KEY, camera_space, render_egocentric

WRAPPER_ENTRY_POINT = "mocapact_envs.datasets.nested_observation:NestedObservation"


def split_key(key: str) -> tuple[str, ...]:
    """``"walker/joints_pos"`` -> ``("walker", "joints_pos")``."""
    return tuple(key.split("/"))


def nested_space(flat: Mapping[str, spaces.Space]) -> spaces.Dict:
    """A Dict space nested by the ``/`` in each key, without zero-size entries."""
    tree: dict = {}
    for key, space in flat.items():
        if space.shape is not None and int(np.prod(space.shape)) == 0:
            continue
        *groups, name = split_key(key)
        node = tree
        for group in groups:
            node = node.setdefault(group, {})
        node[name] = space

    def to_space(node) -> spaces.Dict:
        return spaces.Dict({k: to_space(v) if isinstance(v, dict) else v for k, v in node.items()})

    return to_space(tree)


def nest(flat: Mapping[str, np.ndarray], space: spaces.Dict) -> dict:
    """The values of ``flat`` arranged as ``space`` (from :func:`nested_space`); dropped keys are skipped."""

    def fill(node: spaces.Dict, prefix: str) -> dict:
        return {
            name: fill(sub, f"{prefix}{name}/") if isinstance(sub, spaces.Dict) else flat[f"{prefix}{name}"]
            for name, sub in node.spaces.items()
        }

    return fill(space, "")


class NestedObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Nests a tracking env's observations by key prefix and drops zero-size ones.

    Args:
        env: an environment with a flat ``Dict`` observation space keyed ``"walker/..."``.
        camera_size: also observe the walker's egocentric camera at this many
            pixels square (``walker/egocentric_camera``), rendered as the rollout
            collector renders it (:mod:`mocapact_envs.datasets.cameras`); ``None`` for none.
    """

    def __init__(self, env: gym.Env, camera_size: int | None = None):
        gym.utils.RecordConstructorArgs.__init__(self, camera_size=camera_size)
        gym.ObservationWrapper.__init__(self, env)
        if not isinstance(env.observation_space, spaces.Dict):
            raise ValueError(f"NestedObservation needs a Dict observation space, got {env.observation_space}.")
        self.camera_size = camera_size
        flat = dict(env.observation_space.spaces)
        if camera_size is not None:
            flat[CAMERA_OBSERVATION_KEY] = camera_space(camera_size)
        self.observation_space = nested_space(flat)

    def observation(self, observation: Mapping[str, np.ndarray]) -> dict:
        flat = dict(observation)
        if self.camera_size is not None:
            flat[CAMERA_OBSERVATION_KEY] = render_egocentric(self.env, self.camera_size)
        return nest(flat, self.observation_space)
