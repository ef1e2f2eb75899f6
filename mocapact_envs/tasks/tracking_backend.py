"""The interface between :class:`~mocapact_envs.envs.tracking.MocapTrackingEnv` and the simulation behind it.

Two backends implement :class:`TrackingBackend`: :class:`~mocapact_envs.tasks.composer_tracking.ComposerTrackingBackend`
(dm_control's composer task, the reference) and
:class:`~mocapact_envs.tasks.fast_tracking.backend.FastTrackingBackend` (the same task with the ``mujoco``
bindings and numpy). The environment checks and applies actions, keeps track of whether an episode is
running, and builds Gymnasium's spaces, ``info`` and renders from what the backend reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: The flat float32 observation of each enabled observable key, in key (alphabetical) order.
Observation = dict[str, np.ndarray]


@runtime_checkable
class TrackingBackend(Protocol):
    """One world of the tracking task, one episode at a time.

    ``physics`` is a dm_control ``mjcf.Physics`` of the world (rendering, inspection) and
    ``random_state`` the ``np.random.RandomState`` that episode starts draw from (the environment's
    action noise draws from it too). ``scene_callback`` is ``None`` or called with ``(physics, scene)``
    before each rendered frame, as dm_control's ``scene_callback``.
    """

    physics: Any
    random_state: np.random.RandomState
    scene_callback: Callable[[Any, Any], None] | None

    def action_spec(self) -> Any:
        """dm_control's action spec (a ``dm_env.specs.BoundedArray``)."""

    def observation_spec(self) -> Any:
        """dm_control's observation spec: a mapping of observable key to ``dm_env.specs.Array``."""

    def control_timestep(self) -> float:
        """Seconds per step."""

    def reset(self, snippet_index: int | None = None, start_step: int | None = None) -> Observation:
        """Starts an episode (a start drawn from ``random_state``, the walker set to the reference there).

        ``snippet_index`` draws the start in that snippet only; ``start_step`` (a clip step) fixes it as well
        (:func:`~mocapact_envs.tasks.composer_tracking.episode_starts`: the draw is made all the same). Both are checked by
        the environment."""

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, bool]:
        """One step of the running episode with ``action`` (float64, already clipped): observation, reward,
        ``terminated`` (the tracking error exceeded the threshold) and ``truncated`` (the snippet's last
        trackable step reached otherwise).

        Raises dm_control's ``PhysicsError`` when MuJoCo rejects the step; the episode is then over.
        """

    def snippet_index(self) -> int:
        """The index, in the clip set, of the snippet the episode tracks."""

    def time_in_clip(self) -> float:
        """dm_control's normalised time in the clip: 0 at the snippet start, 1 at its end."""

    def last_time_in_clip(self) -> float:
        """The time in clip at which the episode is truncated."""

    def tracking_error(self) -> float:
        """The tracking error after the last reset or step (what termination compares)."""

    def physics_state(self) -> np.ndarray:
        """MuJoCo's ``qpos, qvel, act``, as dm_control's ``physics.get_state()``: an array the backend does not
        change afterwards (a copy or a view of values gathered for this step)."""

    def close(self) -> None:
        """Frees the simulation."""
