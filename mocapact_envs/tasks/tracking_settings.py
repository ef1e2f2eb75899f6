"""The tracking task's settings: one frozen value with every default, checked once when made.

:class:`~mocapact_envs.envs.tracking.MocapTrackingEnv` and
:class:`~mocapact_envs.envs.tracking_vector.MocapTrackingVectorEnv` take these as typed constructor
arguments (their defaults are the ones here) and build a :class:`TrackingSettings`; the task
builders, :func:`~mocapact_envs.tasks.composer_tracking.build_tracking_environment` and
:class:`~mocapact_envs.tasks.fast_tracking.worlds.TrackingWorlds`, take that object.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mocapact_envs.mocap.source import ClipSet, get_source
from mocapact_envs.tasks.checks import check_integer, check_number, check_positive, describe, is_integer, is_number

#: MoCapAct bounds each latent dimension of a low-level policy (the NPMP decoder) to [-3, 3] for the
#: high-level policy of the transfer tasks: ``max_latent``'s default wherever it is taken.
DEFAULT_MAX_LATENT = 3.0

#: Reward names of dm_control's ``reference_pose.rewards``.
REWARD_TYPES = ("comic", "termination_reward", "multi_term_pose_reward")


#: MoCapAct's tracking error that ends an episode (its experts' training, evaluations and rollouts).
TERMINATION_ERROR_THRESHOLD = 0.3


@dataclasses.dataclass(frozen=True)
class TrackingSettings:
    """What defines MoCapAct's tracking task apart from the clips and the observables.

    Making one checks each value and raises ``ValueError`` naming a bad one; :meth:`check_snippets`
    checks what depends on the clips as well.

    Attributes:
        ref_steps: which future reference steps the reference observables show (a tuple of ints >= 0).
        random_start: start anywhere in the snippet (True) or at its start; or one bool per world
            (a tuple) for :class:`~mocapact_envs.tasks.fast_tracking.worlds.TrackingWorlds`.
        min_steps: dm_control's: random starts are drawn from ``[start, end - max(ref_steps) - min_steps)``.
        termination_error_threshold: tracking error that ends an episode.
        reward_type: a dm_control ``reference_pose.rewards`` reward name (:data:`REWARD_TYPES`).
        physics_timestep: MuJoCo's step in seconds.
        control_timestep: seconds per environment step; must match the clips.
    """

    ref_steps: tuple[int, ...] = (0,)
    random_start: bool | tuple[bool, ...] = True
    min_steps: int = 10
    termination_error_threshold: float = TERMINATION_ERROR_THRESHOLD
    reward_type: str = "comic"
    physics_timestep: float = 0.005
    control_timestep: float = 0.03

    def __post_init__(self) -> None:
        if self.reward_type not in REWARD_TYPES:
            raise ValueError(f"unknown reward_type {self.reward_type!r}; choose one of {', '.join(REWARD_TYPES)}.")
        object.__setattr__(self, "ref_steps", check_ref_steps(self.ref_steps))
        check_number(
            "termination_error_threshold",
            self.termination_error_threshold,
            "> 0 (float('inf') never terminates)",
            lambda v: v > 0,
        )
        check_positive("physics_timestep", self.physics_timestep, "> 0 seconds")
        check_positive("control_timestep", self.control_timestep, "> 0 seconds")
        object.__setattr__(self, "min_steps", check_integer("min_steps", self.min_steps, 0))
        random_start = np.asarray(self.random_start)
        if random_start.dtype != bool or random_start.ndim > 1 or random_start.size == 0:
            raise ValueError(
                f"random_start must be a bool or a sequence of bools (one per world), got {self.random_start!r}."
            )
        # Plain Python values, so the settings compare, hash and print as values.
        object.__setattr__(
            self, "random_start", bool(random_start) if random_start.ndim == 0 else tuple(random_start.tolist())
        )

    @property
    def max_ref_step(self) -> int:
        return max(self.ref_steps)

    @property
    def any_random_start(self) -> bool:
        """Whether some world starts at random steps (the list of starts dm_control's task builds needs them)."""
        return any(self.random_start) if isinstance(self.random_start, tuple) else self.random_start

    def random_start_per_world(self, num_worlds: int) -> np.ndarray:
        """``random_start`` of each of ``num_worlds`` worlds: (num_worlds,) bools, read-only."""
        random_start = np.asarray(self.random_start)
        if random_start.shape not in ((), (num_worlds,)):
            raise ValueError(
                f"random_start must be a bool or {num_worlds} bools (one per world), got {self.random_start!r}."
            )
        return np.broadcast_to(random_start, (num_worlds,))

    def check_snippets(self, clip_set: ClipSet) -> None:
        """Raises ``ValueError`` naming the bad value where these settings and the clips do not go together
        (dm_control would fail later, or run episodes that make no sense)."""
        max_ref_step = self.max_ref_step
        too_short = [s for s in clip_set.snippets if s.end - s.start <= max_ref_step]
        if too_short:
            snippet = too_short[0]
            raise ValueError(
                f"ref_steps={self.ref_steps} looks {max_ref_step} steps ahead, but snippet {snippet.id} has only "
                f"{snippet.end - snippet.start} steps after its start; the largest reference step must be smaller."
            )
        min_steps = self.min_steps
        if self.any_random_start and all(s.end - max_ref_step - min_steps <= s.start for s in clip_set.snippets):
            longest = max(clip_set.snippets, key=lambda s: s.end - s.start)
            allowed = longest.end - longest.start - max_ref_step - 1
            raise ValueError(
                f"min_steps={min_steps} leaves no random start: a start must leave min_steps steps before the "
                f"last trackable step, and the longest snippet, {longest.id}, allows at most min_steps={allowed} "
                f"with ref_steps={self.ref_steps}."
            )


def render_fps(control_timestep: float) -> float:
    """``metadata["render_fps"]`` of an environment that steps every ``control_timestep`` seconds: a frame a step."""
    return 1.0 / control_timestep


def check_ref_steps(ref_steps: Any) -> tuple[int, ...]:
    """``ref_steps`` as a tuple of ints, when it is a non-empty sequence of integer step offsets >= 0."""
    rule = "a non-empty sequence of integer step offsets >= 0, such as (0,) or (1, 2, 3, 4, 5)"
    # A bare int is refused rather than guessed at: 5 could mean (5,) or MoCapAct's (1, 2, 3, 4, 5).
    if isinstance(ref_steps, (str, bytes)) or not isinstance(ref_steps, (Sequence, np.ndarray)):
        hint = f"; for step {ref_steps} alone pass ({ref_steps},)" if is_integer(ref_steps) else ""
        raise TypeError(f"ref_steps must be {rule}, got {describe(ref_steps)}{hint}.")
    steps = tuple(ref_steps)
    if not all(is_number(s) for s in steps):
        raise TypeError(f"ref_steps must be {rule}, got {ref_steps!r}.")
    if not steps or not all(is_integer(s) and s >= 0 for s in steps):
        raise ValueError(f"ref_steps must be {rule}, got {ref_steps!r}.")
    return tuple(int(s) for s in steps)


def load_clip_set(
    clips: str | os.PathLike | Sequence[str],
    mocap_path: str | Path | None = None,
    *,
    skip_missing_clips: bool = False,
    strict: bool = False,
) -> ClipSet:
    """The snippets ``clips`` names in the reference source at ``mocap_path``, as the tracking envs read them.

    ``clips``: a clip or snippet id, a dm_control collection name, a path to a text file of ids, or a list of these.
    """
    if not isinstance(clips, (str, os.PathLike, Sequence)):
        raise TypeError(
            f"clips must be a clip or snippet id, a collection name, a path to an id list or a list of these; "
            f"got {clips!r} ({type(clips).__name__})."
        )
    if isinstance(clips, os.PathLike):  # a clip list file
        clips = os.fspath(clips)
    return get_source(mocap_path).clip_set(clips, skip_missing_clips=skip_missing_clips, strict=strict)
