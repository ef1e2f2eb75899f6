"""``MocapTracking``: MoCapAct's clip-tracking task as a Gymnasium environment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mocapact_envs.envs.dm_control_adapter import DEFAULT_CAMERA, DmControlEnv, check_reset_options
from mocapact_envs.mocap.ids import Snippet, suggest
from mocapact_envs.mocap.source import MOCAP_PATH_ENV, ClipSet, MocapSourceError, get_source
from mocapact_envs.tasks.checks import describe, is_integer
from mocapact_envs.tasks.composer_tracking import ComposerTrackingBackend
from mocapact_envs.tasks.fast_tracking.backend import FastTrackingBackend
from mocapact_envs.tasks.observables import resolve_observables
from mocapact_envs.tasks.tracking_backend import Observation, TrackingBackend
from mocapact_envs.tasks.tracking_settings import TrackingSettings, load_clip_set

#: Each backend's :class:`~mocapact_envs.tasks.tracking_backend.TrackingBackend`. ``"fast"``: the ``mujoco``
#: bindings and numpy (:mod:`mocapact_envs.tasks.fast_tracking`), equal to dm_control step for step;
#: ``"dm_control"``: composer's ``MultiClipMocapTracking``, the reference.
BACKEND_CLASSES: dict[str, type[TrackingBackend]] = {
    "fast": FastTrackingBackend,
    "dm_control": ComposerTrackingBackend,
}
BACKENDS = tuple(BACKEND_CLASSES)
DEFAULT_BACKEND = "fast"
#: What ``reset(options=...)`` of the tracking envs reads: the snippet to track and the clip step to start at.
RESET_OPTIONS = ("snippet", "start_step")


class MocapTrackingEnv(DmControlEnv):
    """Track motion-capture clips with dm_control's CMU humanoid, as in MoCapAct.

    The walker is ``CMUHumanoidPositionControlledV2020`` (56 position actuators
    with activation dynamics) on an 8 m x 8 m floor. Each episode picks a snippet
    and a start step (uniformly over the snippet's possible starts, or the snippet
    start) and sets the walker exactly to the reference pose there.

    Both backends give the same episodes for the same seed and actions. ``gym.make_vec(id,
    num_envs=N, vectorization_mode="vector_entry_point")`` steps N copies of the fast backend in
    one batched environment (:class:`~mocapact_envs.envs.tracking_vector.MocapTrackingVectorEnv`).

    Action space:
        ``Box(-1, 1, (56,), float32)``: normalised actuator targets, in the
        walker's (alphabetical) actuator order. With ``act_noise > 0`` the
        environment adds Gaussian noise of that standard deviation before
        clipping to [-1, 1], as MoCapAct's experts were trained and rolled out.

    Observation space:
        ``Dict`` of float32 ``Box`` es keyed as dm_control names the observables
        (``"walker/joints_pos"``, ...), in alphabetical key order. ``observables``
        chooses a set: ``"time_index"`` (206 dims, experts), ``"base"`` (205),
        ``"high_level_sans_reference"`` (206, GPT), ``"high_level"`` (1291 with
        reference steps 1..5, NPMP encoder), ``"cmu_humanoid"`` (224),
        ``"multi_clip_sans_id"`` (2847), ``"multi_clip"`` (2848) or
        ``"all_proprioceptive"`` (2868, what rollouts log); or explicit keys.

    Reward:
        dm_control's ``comic`` reward (at most 1.45 a step):
        ``0.5 * (1 - error / threshold) + 0.5 * (0.1 exp(-10 d_com^2) +
        exp(-0.1 d_jointvel^2) + 0.15 exp(-40 d_appendages^2) + 0.65 exp(-2 d_quat^2))``
        where ``error = 0.5 * mean |body position error| + 0.5 * mean |joint error|``.

    Episode end:
        ``terminated`` when the tracking error exceeds
        ``termination_error_threshold`` (dm_control's discount 0); ``truncated``
        at the snippet's last trackable step, ``end - max(ref_steps)`` (discount 1).
        There is no other time limit.

    Info:
        ``time_in_clip`` (0 at the snippet start, 1 at its end),
        ``start_time_in_clip``, ``last_time_in_clip`` (the value at truncation),
        ``snippet_index`` (an ``int``: the snippet tracked is ``env.snippet_ids[snippet_index]``; also
        ``env.snippet_id``), ``tracking_error`` and ``physics_state`` (MuJoCo's ``qpos, qvel, act``,
        copied). Every value is a number or an array of numbers, so other libraries' vector wrappers
        (torchrl's batched ``GymEnv``, SB3's ``VecEnv`` s) batch them.

    Args:
        clips: a clip id (``"CMU_016_22"``), a snippet id (``"CMU_016_22-0-82"``),
            a dm_control collection (``"WALK_TINY"``), a text file of ids, or a
            list of any of these.
        mocap_path: the reference source (a dm_control-format HDF5 file or a folder
            of ``.amc`` files); defaults to ``$MOCAPACT_MOCAP_PATH``, then to
            dm_control's official file.
        observables: an observation set name or a list of observable keys.
        ref_steps: which future reference steps the reference observables show.
        random_start: start anywhere in the snippet (True) or at its start.
        min_steps: dm_control's: random starts are drawn from ``[start, end - max(ref_steps) - min_steps)``,
            so an episode that does not terminate lasts at least ``min_steps + 1`` steps.
            :func:`mocapact_envs.envs.factory.clamp_min_steps` gives the value for MoCapAct's "at least N steps".
        termination_error_threshold: tracking error that ends an episode.
        act_noise: standard deviation of Gaussian action noise.
        physics_timestep: MuJoCo's step in seconds.
        control_timestep: seconds per environment step; must match the clips.
        reward_type: a dm_control ``reference_pose.rewards`` reward name.
        skip_missing_clips: use the clips the source has instead of failing on
            those it lacks.
        strict: refuse snippets whose clip the AMC conversion could not make plausible (its quality
            report lists problems, e.g. broken steps inside the snippet); False tracks every clip.
        render_mode: ``None``, ``"rgb_array"``, ``"depth_array"`` or ``"human"`` (MuJoCo's viewer window; see
            :class:`~mocapact_envs.envs.dm_control_adapter.DmControlEnv`); any of them adds the reference ghost.
        width, height, camera: the rendered image and the camera's name or id.
        backend: ``"fast"`` (the default: the same task stepped with the ``mujoco`` bindings and
            numpy, equal to dm_control step for step and several times faster) or
            ``"dm_control"`` (composer, the reference implementation).
        reference_digest: the ``metadata["reference_source"]["digest"]`` the reference must have (a
            dataset's env spec records it); another digest raises ``MocapSourceError``.

        ``ref_steps``, ``random_start``, ``min_steps``, ``termination_error_threshold``, ``reward_type``,
        ``physics_timestep`` and ``control_timestep`` make the task's
        :class:`~mocapact_envs.tasks.tracking_settings.TrackingSettings` (``self.settings``), which holds
        their defaults and checks them.

    Reset options:
        ``reset(options={"snippet": ..., "start_step": ...})`` chooses the episode instead of drawing it (LocoMuJoCo's
        convention); each key may be left out or ``None``, other keys raise ``ValueError`` naming the valid ones.

        * ``snippet``: a snippet id of ``env.snippet_ids`` (``"CMU_016_22-0-85"``), a clip id with one snippet in
          the set (``"CMU_016_22"``), or an index into ``env.snippet_ids`` (``info["snippet_index"]``). The start
          is drawn in that snippet as usual (a random start, or its start with ``random_start=False``).
        * ``start_step``: the clip step to start at (the units of snippet ids), from the snippet's start to the
          last start a random start may draw, ``end - max(ref_steps) - min_steps - 1`` (the snippet's start
          alone when that is earlier). With one snippet in the set ``snippet`` may be left out.

        A snippet or step outside these raises ``ValueError`` naming the value and the valid choices. The choice
        holds for that reset only. The random state is drawn from as for any reset, so the episodes that
        follow are the same on both backends.

    Metadata:
        ``metadata["reference_source"]``: ``{"source": ..., "digest": ...}``, the source the clips were
        read from (``"AMC folder /path"`` or ``"HDF5 file /path"``) and
        :meth:`~mocapact_envs.mocap.source.ClipSet.content_digest` of the reference tracked, so two
        environments of the same id over different ``MOCAPACT_MOCAP_PATH`` data tell themselves apart.

    Version history:
        * v0: MoCapAct's tracking task (mocapact-envs 0.1). Changes since keep the id and the
          task (dynamics, reward, episode ends): ``backend="fast"`` (the default, equal to
          dm_control step for step), ``reference_digest``; ``step()`` with no episode running
          raises ``RuntimeError`` (it raised ``TypeError`` or stepped a new episode), NaN actions
          raise ``ValueError`` naming them and end the episode, bad arguments (``ref_steps=5`` too:
          pass ``(5,)``) and unknown ``reset()`` options raise errors naming them,
          ``metadata["reference_source"]``, pickling and ``copy.deepcopy``, ``spec.to_json()`` with
          path arguments; ``reset(options={"snippet": ..., "start_step": ...})``; ``info["snippet_index"]`` (an
          ``int``) instead of ``info["snippet_id"]`` (a string, which torchrl's batched ``GymEnv`` cannot batch;
          the id is ``env.snippet_id``);
          ``render_mode="human"`` (MuJoCo's viewer) and ``"depth_array"``.
    """

    def __init__(
        self,
        clips: str | Sequence[str] = "CMU_016_22",
        *,
        mocap_path: str | Path | None = None,
        observables: str | Sequence[str] = "time_index",
        ref_steps: Sequence[int] = TrackingSettings.ref_steps,
        random_start: bool = TrackingSettings.random_start,
        min_steps: int = TrackingSettings.min_steps,
        termination_error_threshold: float = TrackingSettings.termination_error_threshold,
        act_noise: float = 0.0,
        physics_timestep: float = TrackingSettings.physics_timestep,
        control_timestep: float = TrackingSettings.control_timestep,
        reward_type: str = TrackingSettings.reward_type,
        skip_missing_clips: bool = False,
        strict: bool = False,
        render_mode: str | None = None,
        width: int = 640,
        height: int = 480,
        camera: str | int = DEFAULT_CAMERA,
        backend: str = DEFAULT_BACKEND,
        reference_digest: str | None = None,
    ):
        super().__init__(act_noise=act_noise, render_mode=render_mode, width=width, height=height, camera=camera)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
        self.settings = TrackingSettings(
            ref_steps=ref_steps,
            random_start=random_start,
            min_steps=min_steps,
            termination_error_threshold=termination_error_threshold,
            reward_type=reward_type,
            physics_timestep=physics_timestep,
            control_timestep=control_timestep,
        )
        self.clip_set = load_clip_set(clips, mocap_path, skip_missing_clips=skip_missing_clips, strict=strict)
        observable_keys = resolve_observables(observables)
        self.ref_steps = self.settings.ref_steps
        self._snippet_ids = tuple(snippet.id for snippet in self.clip_set.snippets)
        self.backend = backend
        #: The simulation (:class:`~mocapact_envs.tasks.tracking_backend.TrackingBackend`); the base class
        #: reads its specs, ``physics`` and ``random_state``.
        self._dm_env: TrackingBackend = BACKEND_CLASSES[backend](
            self.clip_set, observable_keys, self.settings, with_ghost=render_mode is not None
        )
        self._scene_callback = self._dm_env.scene_callback
        self._setup_spaces(observable_keys)
        self.reference_source = reference_source(self.clip_set, mocap_path, reference_digest)
        self.metadata = {**self.metadata, "reference_source": self.reference_source}
        self._start_time_in_clip = 0.0
        self._choice: tuple[int | None, int | None] = (None, None)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Starts an episode; ``options`` may choose its snippet and start step (see "Reset options")."""
        self._choice = episode_choice(self, self.clip_set, self.settings, options)
        return super().reset(seed=seed)

    # -- the backend's episodes (DmControlEnv checks and applies actions and keeps track of episode ends) -----

    def _start_episode(self) -> Observation:
        return self._dm_env.reset(*self._choice)

    def _advance(self, action: np.ndarray) -> tuple[Observation, float, bool, bool]:
        return self._dm_env.step(action)

    def _after_reset(self) -> None:
        self._start_time_in_clip = self._dm_env.time_in_clip()

    @property
    def snippet_ids(self) -> tuple[str, ...]:
        """The id of each snippet of the clip set: ``info["snippet_index"]`` indexes it."""
        return self._snippet_ids

    @property
    def snippet_id(self) -> str:
        """The id of the snippet the episode tracks."""
        return self._snippet_ids[self._dm_env.snippet_index()]

    def _info(self) -> dict[str, Any]:
        episode = self._dm_env
        return {
            "time_in_clip": episode.time_in_clip(),
            "start_time_in_clip": self._start_time_in_clip,
            "last_time_in_clip": episode.last_time_in_clip(),
            "snippet_index": self._dm_env.snippet_index(),
            "tracking_error": episode.tracking_error(),
            "physics_state": episode.physics_state(),
        }


def start_step_range(snippet: Snippet, settings: TrackingSettings) -> tuple[int, int]:
    """The clip steps an episode of ``snippet`` may start at, first and last: its start up to the last start a
    random start draws (``end - max(ref_steps) - min_steps - 1``; the start alone when that is earlier)."""
    last = snippet.end - settings.max_ref_step - settings.min_steps - 1
    return snippet.start, max(snippet.start, last)


def _listed(ids: Sequence[str], shown: int = 10) -> str:
    more = f" and {len(ids) - shown} more (env.snippet_ids)" if len(ids) > shown else ""
    return ", ".join(map(repr, ids[:shown])) + more


def snippet_index_of(env: Any, snippets: Sequence[Snippet], snippet: Any) -> int:
    """The index of ``options["snippet"]`` in ``snippets``: an id among theirs, a clip id with one snippet among
    them, or an index; else a ``ValueError`` (``TypeError`` for neither a string nor an integer) naming the
    value and the valid choices."""
    name, ids = type(env).__name__, [s.id for s in snippets]
    what = f"{name}.reset() option 'snippet'"
    if isinstance(snippet, str):
        if snippet in ids:
            return ids.index(snippet)
        of_clip = [i for i, s in enumerate(snippets) if s.clip_id == snippet]
        if len(of_clip) == 1:
            return of_clip[0]
        if of_clip:
            raise ValueError(
                f"{what} {snippet!r} is a clip with {len(of_clip)} snippets here; name one of "
                f"{_listed([ids[i] for i in of_clip])}."
            )
        raise ValueError(
            f"{what} {snippet!r} is not a snippet of this environment.{suggest(snippet, ids)} Its snippets are "
            f"{_listed(ids)} (or their index, 0 to {len(ids) - 1})."
        )
    if not is_integer(snippet) or isinstance(snippet, float):
        raise TypeError(
            f"{what} must be a snippet id or an index into env.snippet_ids, got {describe(snippet)}; its snippets "
            f"are {_listed(ids)}."
        )
    if not 0 <= snippet < len(ids):
        raise ValueError(
            f"{what} {snippet} is no index of its {len(ids)} snippet(s): choose 0 to {len(ids) - 1} ({_listed(ids)})."
        )
    return int(snippet)


def episode_choice(
    env: Any, clip_set: ClipSet, settings: TrackingSettings, options: Any, other_options: Sequence[str] = ()
) -> tuple[int | None, int | None]:
    """``reset(options=...)`` of a tracking env checked: ``(snippet index, start clip step)``, each ``None`` where
    the reset draws it. Raises naming an unknown key (``other_options`` are keys the env reads itself), a snippet
    not in ``clip_set`` or a start outside :func:`start_step_range`, with the valid choices."""
    check_reset_options(env, options, valid=(*RESET_OPTIONS, *other_options))
    options = dict(options or {})
    snippet, start_step = options.get("snippet"), options.get("start_step")
    snippets = clip_set.snippets
    name = type(env).__name__
    if snippet is None:
        if start_step is None:
            return None, None
        if len(snippets) != 1:
            raise ValueError(
                f"{name}.reset() option 'start_step' needs the option 'snippet' too: this environment tracks "
                f"{len(snippets)} snippets ({_listed([s.id for s in snippets])})."
            )
        index = 0
    else:
        index = snippet_index_of(env, snippets, snippet)
    if start_step is None:
        return index, None
    chosen = snippets[index]
    first, last = start_step_range(chosen, settings)
    if not is_integer(start_step) or not first <= start_step <= last:
        kind = TypeError if not is_integer(start_step) else ValueError
        shown = repr(start_step) if kind is ValueError else describe(start_step)
        raise kind(
            f"{name}.reset() option 'start_step' {shown} is not a start of snippet {chosen.id}: "
            f"choose a clip step from {first} to {last} (a start leaves min_steps={settings.min_steps} steps "
            f"before the snippet's last trackable step, {chosen.end - settings.max_ref_step}, with "
            f"ref_steps={settings.ref_steps})."
        )
    return index, int(start_step)


def reference_source(clip_set: ClipSet, mocap_path: str | Path | None, expected_digest: str | None = None) -> dict:
    """What an environment reports of its reference: ``{"source": description, "digest": content digest}``.

    Raises ``MocapSourceError`` when ``expected_digest`` is given and the reference differs.
    """
    source = get_source(mocap_path)
    digest = clip_set.content_digest()
    if expected_digest is not None and expected_digest != digest:
        raise MocapSourceError(
            f"the reference of {', '.join(s.id for s in clip_set.snippets[:3])} in {source.description} has digest "
            f"{digest}, not the expected {expected_digest}: this is different motion data from what the spec (or "
            f"dataset) was made with. Point {MOCAP_PATH_ENV} (or mocap_path=) at that data, or drop reference_digest."
        )
    return {"source": source.description, "digest": digest}
