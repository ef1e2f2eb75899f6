"""A thin Gymnasium adapter for dm_control composer environments.

Shared by every task in the package: flat float32 observations keyed as
dm_control names them (alphabetical order), seeding of dm_control's random
state from ``reset(seed=...)``, and dm_control's discount mapped onto
Gymnasium's flags (discount 0 at the last step: ``terminated``; otherwise a
last step is ``truncated``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from dm_control.rl.control import PhysicsError
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils import EzPickle

from mocapact_envs.envs.viewer import HumanViewer, check_display
from mocapact_envs.policies.saving import SavedInDirectory
from mocapact_envs.tasks.checks import check_integer, check_non_negative, describe
from mocapact_envs.tasks.dm_env_steps import episode_end_flags, flat_observation
from mocapact_envs.tasks.tracking_settings import TrackingSettings, render_fps

DEFAULT_CAMERA = "walker/side"
#: What ``render_mode`` may be, as Gymnasium's MuJoCo environments offer them: MuJoCo's viewer window, an RGB
#: image (height, width, 3) of uint8 and a depth image (height, width) of float32 metres from the camera.
RENDER_MODES = ("human", "rgb_array", "depth_array")


class SerializableEnv(EzPickle):
    """Gymnasium's conventions for environments that wrap C code, shared by every environment of the package.

    * Pickling and ``copy.deepcopy`` rebuild the environment from the arguments it was made with
      (Gymnasium's ``EzPickle``, as its MuJoCo environments): the copy is a new environment, not a
      snapshot of the running episode. The arguments are captured in ``__new__``, so no subclass
      lists them again.
    * ``spec.kwargs`` (set by ``gym.make``) hold JSON values: paths become strings and a saved policy
      its directory, so ``env.spec.to_json()`` and ``gym.make(EnvSpec.from_json(...))`` work.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        env = super().__new__(cls)
        EzPickle.__init__(env, *args, **kwargs)
        return env

    @property
    def spec(self) -> EnvSpec | None:
        return self.__dict__.get("_spec")

    @spec.setter
    def spec(self, spec: EnvSpec | None) -> None:
        if spec is not None:
            spec.kwargs = {key: json_ready(value) for key, value in spec.kwargs.items()}
        self.__dict__["_spec"] = spec


def check_act_noise(act_noise: float) -> float:
    """The action-noise std; an error naming it when it is no finite number >= 0."""
    return check_non_negative("act_noise", act_noise)


def check_reset_options(env: Any, options: Any, valid: Sequence[str] = ()) -> None:
    """Raises naming the keys of ``reset(options=...)`` that ``env`` does not read (``valid`` lists those it does):
    an option it would ignore silently is most likely a typo or meant for another environment."""
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise TypeError(f"{type(env).__name__}.reset() options must be None or a dict, got {describe(options)}.")
    unknown = [key for key in options if key not in valid]
    if unknown:
        allowed = f"its options are {', '.join(map(repr, valid))}" if valid else "it takes no options (None or {})"
        raise ValueError(
            f"{type(env).__name__}.reset() got unknown option(s) {', '.join(map(repr, unknown))}; {allowed}."
        )


def json_ready(value: Any) -> Any:
    """``value`` as JSON can hold it where it is a path (a string) or a policy saved in a directory (that directory).

    A policy object that was never saved becomes a string saying so: the spec still serialises, and
    making an environment from it fails naming that string.
    """
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return type(value)(json_ready(item) for item in value)
    if isinstance(value, Mapping):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, SavedInDirectory):
        if value.saved_directory is not None:
            return os.fspath(value.saved_directory)
        return f"unsaved {type(value).__name__} (save it and pass its directory to make this spec reproducible)"
    return value


class DmControlEnv(SerializableEnv, gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Base class: subclasses build ``self._dm_env`` and call :meth:`_setup_spaces`.

    ``self._dm_env`` is a composer environment or anything with its interface: ``reset`` and
    ``step`` returning ``dm_env.TimeStep`` s, ``action_spec``, ``observation_spec``,
    ``control_timestep``, ``random_state``, ``physics`` and ``close``. A subclass whose ``_dm_env``
    steps otherwise (a :class:`~mocapact_envs.tasks.tracking_backend.TrackingBackend`) overrides
    :meth:`_start_episode` and :meth:`_advance`.

    ``step`` before the first ``reset`` or after an episode has ended raises ``RuntimeError``; an
    action with NaN entries raises ``ValueError`` naming them and ends the episode.

    Rendering (``render_mode``), as Gymnasium's MuJoCo environments render:

    * ``"rgb_array"``: ``render()`` returns the camera's image, ``(height, width, 3)`` uint8.
    * ``"depth_array"``: ``render()`` returns the camera's depth image, ``(height, width)`` float32, in metres
      from the camera (dm_control's ``physics.render(depth=True)``; far planes and the sky read as the
      camera's far clipping distance).
    * ``"human"``: MuJoCo's viewer window (``mujoco.viewer``'s passive viewer, :mod:`mocapact_envs.envs.viewer`)
      shows every reset and step, in real time, from the camera; ``render()`` returns ``None``. Without a
      display the environment raises ``RuntimeError`` saying so when it is made.

    Each image shows what the environment's scene holds, the tracking envs' reference ghost included.
    """

    metadata = {
        "render_modes": list(RENDER_MODES),
        "render_fps": round(render_fps(TrackingSettings.control_timestep), 6),
    }

    def __init__(
        self,
        *,
        act_noise: float = 0.0,
        render_mode: str | None = None,
        width: int = 640,
        height: int = 480,
        camera: str | int = DEFAULT_CAMERA,
    ):
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(
                f"unknown render_mode {render_mode!r}; choose None or one of {', '.join(map(repr, RENDER_MODES))}."
            )
        self.act_noise = check_act_noise(act_noise)
        for name, size in (("width", width), ("height", height)):
            check_integer(name, size, 1, "a positive number of pixels")
        if render_mode == "human":  # before anything is built: no window, no environment
            check_display(type(self).__name__)
        self._viewer: HumanViewer | None = None
        self.render_mode = render_mode
        self.width, self.height, self.camera = width, height, camera
        self._dm_env = None
        self._episode_over = True
        #: Called with ``(physics, scene)`` before each rendered frame, as dm_control's ``scene_callback``.
        self._scene_callback = None

    def _setup_spaces(self, observable_keys: Sequence[str]) -> None:
        self.observable_keys = tuple(sorted(observable_keys))
        self.metadata = {**self.metadata, "render_fps": render_fps(self._dm_env.control_timestep())}
        self.action_space = action_space_from_spec(self._dm_env.action_spec())
        # The float32 bounds in float64 (exactly), so clipping a float64 action mixes no dtypes.
        self._action_low = self.action_space.low.astype(np.float64)
        self._action_high = self.action_space.high.astype(np.float64)
        self.observation_space = observation_space_from_spec(self._dm_env.observation_spec(), self.observable_keys)

    @property
    def physics(self):
        """dm_control's ``mjcf.Physics`` of the current episode."""
        return self._dm_env.physics

    @property
    def random_state(self) -> np.random.RandomState:
        """dm_control's random state: episode initialisation and action noise draw from it."""
        return self._dm_env.random_state

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        check_reset_options(self, options)
        super().reset(seed=seed)
        if seed is not None:
            self._dm_env.random_state.seed(seed)
        observation = self._start_episode()
        self._episode_over = False
        self._after_reset()
        if self.render_mode == "human":
            self.render()
        return observation, self._info()

    def step(self, action: np.ndarray):
        if self._episode_over:
            raise reset_needed_error(self)
        applied = self._applied_action(action)
        try:
            observation, reward, terminated, truncated = self._advance(applied)
        except PhysicsError as error:
            self._episode_over = True
            bad_action = invalid_action_error(action)
            if bad_action is None:
                raise
            raise bad_action from error
        self._episode_over = terminated or truncated
        if self.render_mode == "human":
            self.render()
        return observation, float(reward), terminated, truncated, self._info()

    def _start_episode(self) -> dict[str, np.ndarray]:
        """Starts an episode of ``self._dm_env`` and returns its first observation.

        This and :meth:`_advance` are what a subclass whose simulation is not a ``dm_env`` overrides.
        """
        return self._observation(self._dm_env.reset().observation)

    def _advance(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool]:
        """One step of the running episode with the applied action: observation, reward, terminated, truncated."""
        timestep = self._dm_env.step(action)
        return self._observation(timestep.observation), timestep.reward, *episode_end_flags(timestep)

    def _applied_action(self, action: np.ndarray) -> np.ndarray:
        """The action the environment applies: checked, with ``act_noise`` added, clipped, float64."""
        try:
            action = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"action must be an array of {self.action_space.shape} numbers, got {action!r}."
            ) from error
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}.")
        if self.act_noise > 0:
            action = action + self._dm_env.random_state.normal(scale=self.act_noise, size=action.shape)
        # np.minimum(np.maximum(...)) is np.clip without its Python overhead.
        return np.minimum(np.maximum(action, self._action_low), self._action_high)

    def render(self):
        """The camera's image for ``"rgb_array"`` and ``"depth_array"``; for ``"human"`` the viewer window shows
        the current state (``None`` is returned, as without a render mode)."""
        if self.render_mode in ("rgb_array", "depth_array"):
            return self.physics.render(
                height=self.height,
                width=self.width,
                camera_id=self.camera,
                depth=self.render_mode == "depth_array",
                scene_callback=self._scene_callback,
            )
        if self.render_mode == "human" and self._dm_env is not None:
            if self._viewer is not None and not self._viewer.shows(self.physics):
                self._viewer.close()  # a recompiled model: a window for the new one
                self._viewer = None
            if self._viewer is None:
                self._viewer = HumanViewer(self.physics, self.camera, self.metadata["render_fps"], self._scene_callback)
            self._viewer.render()
        return None

    def close(self):
        if self._viewer is not None:
            self._viewer.close()
            self._viewer = None
        if self._dm_env is not None:
            self._dm_env.close()
            self._dm_env = None

    def _observation(self, observation) -> dict[str, np.ndarray]:
        return flat_observation(observation, self.observable_keys)

    def _after_reset(self) -> None:
        """Hook for subclasses, called after dm_control's reset."""

    def _info(self) -> dict[str, Any]:
        return {"physics_state": self.physics.get_state().copy()}


def reset_needed_error(env: gym.Env) -> RuntimeError:
    """What stepping an environment whose episode has ended (or not begun) raises."""
    return RuntimeError(
        f"{type(env).__name__}.step() called with no episode running: the last one ended (terminated or "
        "truncated) or reset() was never called. Call reset() to start an episode."
    )


def invalid_action_error(action: Any) -> ValueError | None:
    """A ``ValueError`` naming an action's NaN entries (MuJoCo rejects them as it steps), or ``None`` if it has none.

    Called only once a step has failed, so valid actions pay nothing for the check.
    """
    values = np.asarray(action, dtype=np.float64)
    bad = np.flatnonzero(np.isnan(values))
    if not len(bad):
        return None
    shown = ", ".join(str(i) for i in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    return ValueError(
        f"the action has NaN at {len(bad)} of its {values.size} entries (flat indices {shown}); actions must be "
        "numbers (values outside [-1, 1] are clipped). MuJoCo rejected the step, so the episode has ended: "
        "call reset()."
    )


def action_space_from_spec(spec) -> spaces.Box:
    """A float32 ``Box`` of a dm_env ``BoundedArray`` action spec."""
    return spaces.Box(
        np.asarray(spec.minimum, np.float32), np.asarray(spec.maximum, np.float32), spec.shape, np.float32
    )


def observation_space_from_spec(obs_spec, observable_keys: Sequence[str]) -> spaces.Dict:
    """A ``Dict`` of flat float32 ``Box`` es, in alphabetical key order, of a dm_env observation spec."""
    missing = [k for k in observable_keys if k not in obs_spec]
    if missing:
        raise ValueError(f"the task has no observable(s) {missing}; it has {', '.join(sorted(obs_spec))}.")
    return spaces.Dict(
        {
            key: spaces.Box(-np.inf, np.inf, (int(np.prod(obs_spec[key].shape, dtype=int)),), np.float32)
            for key in sorted(observable_keys)
        }
    )
