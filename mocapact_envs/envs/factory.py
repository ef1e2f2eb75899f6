"""Creating tracking environments for one snippet: the one place vector envs are built.

Trainers, evaluation and rollout collection call :func:`make_tracking_vec_env`
so the backend and the vectorisation mode are chosen the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from mocapact_envs.mocap.ids import Snippet
from mocapact_envs.tasks.checks import check_integer

GENERIC_TRACKING_ID = "mocapact/MocapTracking-v0"
VECTORIZATION_MODES = ("sync", "async", "vector_entry_point")


def available_backends() -> tuple[str, ...]:
    from mocapact_envs.envs.tracking import BACKENDS

    return tuple(BACKENDS)


def default_backend() -> str:
    """The tracking env's default backend (``"fast"``)."""
    from mocapact_envs.envs.tracking import DEFAULT_BACKEND

    return DEFAULT_BACKEND


def check_backend(backend: str | None) -> str:
    backend = backend or default_backend()
    if backend not in available_backends():
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(available_backends())}.")
    return backend


def resolve_snippet(clip: str, mocap_path: str | None = None) -> Snippet:
    """The one snippet a clip id (``CMU_016_22``) or snippet id (``CMU_016_22-0-82``) names, ``end`` resolved.

    Raises ``ValueError`` naming the bad id (and close ids) when the source lacks it.
    """
    from mocapact_envs.mocap.source import get_source

    snippets = get_source(mocap_path).clip_set(clip).snippets
    if len(snippets) != 1:
        raise ValueError(f"{clip!r} names {len(snippets)} snippets; an expert tracks one clip or snippet id.")
    return snippets[0]


def clamp_min_steps(snippet: Snippet, min_steps: int, ref_steps: Sequence[int] = (0,)) -> int:
    """The environment's ``min_steps`` for random starts that leave at least ``min_steps`` steps to track:
    MoCapAct's rule, ``min(min_steps, end - start - max(ref_steps)) - 1``, the one rule its expert training,
    evaluation and rollouts use (``snippet.end`` resolved).

    dm_control draws starts from ``[start, end - max(ref_steps) - env_min_steps)`` and an episode runs to
    ``end - max(ref_steps)``, so ``env_min_steps = min_steps - 1`` leaves ``min_steps`` steps; a snippet too
    short for that lowers it to what the snippet has.
    """
    min_steps = check_integer("min_steps", min_steps, 1)
    trackable = snippet.end - snippet.start - max(ref_steps)  # type: ignore[operator]
    if trackable < 1:
        raise ValueError(
            f"snippet {snippet.id} has {snippet.end - snippet.start} steps after its start, too few to look "
            f"{max(ref_steps)} steps ahead (ref_steps={tuple(ref_steps)})."
        )
    return min(int(min_steps), trackable) - 1


def check_num_envs(num_envs: object) -> int:
    """``num_envs`` as an int, when it is a positive integer (numpy's messages would name neither it nor the rule)."""
    return check_integer("num_envs", num_envs, 1, "a positive integer (the number of worlds)")


def resolve_vectorization_mode(vectorization_mode: str | None, backend: str) -> str:
    """``None`` picks the native vector env for the fast backend when registered, else ``"sync"``."""
    if vectorization_mode is None:
        native = gym.spec(GENERIC_TRACKING_ID).vector_entry_point is not None
        return "vector_entry_point" if native and backend == "fast" else "sync"
    if vectorization_mode not in VECTORIZATION_MODES:
        raise ValueError(
            f"unknown vectorization mode {vectorization_mode!r}; choose one of {', '.join(VECTORIZATION_MODES)}."
        )
    if vectorization_mode == "vector_entry_point" and gym.spec(GENERIC_TRACKING_ID).vector_entry_point is None:
        raise ValueError(
            f"{GENERIC_TRACKING_ID} has no native vector env (vector_entry_point) yet; use 'sync' or 'async'."
        )
    return vectorization_mode


def make_tracking_env(clip: str, backend: str | None = None, **kwargs: Any) -> gym.Env:
    """One tracking env for ``clip`` (a clip or snippet id); ``kwargs`` go to :class:`MocapTrackingEnv`."""
    return gym.make(GENERIC_TRACKING_ID, clips=clip, backend=check_backend(backend), **kwargs)


def make_tracking_vec_env(
    clip: str,
    num_envs: int,
    backend: str | None = None,
    vectorization_mode: str | None = None,
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    """A Gymnasium vector env of ``num_envs`` tracking envs for ``clip``.

    Args:
        clip: a clip id or snippet id.
        num_envs: sub-environments.
        backend: a name from ``mocapact_envs.envs.tracking.BACKENDS``; ``None`` picks
            :func:`default_backend`.
        vectorization_mode: ``"sync"`` (one process), ``"async"`` (a process each),
            ``"vector_entry_point"`` (the env's native batched implementation), or
            ``None`` for the native one where it exists with the fast backend.
        kwargs: :class:`~mocapact_envs.envs.tracking.MocapTrackingEnv` arguments; ``random_start`` may also be
            ``num_envs`` bools, one per sub-environment.

    The result autoresets in Gymnasium's default next-step mode: the step after an
    episode ends returns the reset observation with reward 0.
    """
    num_envs = check_num_envs(num_envs)
    from mocapact_envs.envs.dm_control_adapter import json_ready

    backend = check_backend(backend)
    mode = resolve_vectorization_mode(vectorization_mode, backend)
    # JSON values (paths as strings): Gymnasium's sync and async vector envs keep kwargs in their spec as given.
    kwargs = {key: json_ready(value) for key, value in kwargs.items()}
    random_start = kwargs.get("random_start")
    if isinstance(random_start, Sequence) and mode != "vector_entry_point":
        from mocapact_envs.tasks.tracking_settings import TrackingSettings

        # Sub-environments that differ in one argument: Gymnasium's make_vec passes every one the same kwargs.
        starts = TrackingSettings(random_start=tuple(random_start)).random_start_per_world(num_envs)
        env_fns = [
            partial(gym.make, GENERIC_TRACKING_ID, clips=clip, backend=backend, **{**kwargs, "random_start": start})
            for start in starts.tolist()
        ]
        vector_env = gym.vector.SyncVectorEnv if mode == "sync" else gym.vector.AsyncVectorEnv
        return vector_env(env_fns)
    return gym.make_vec(
        GENERIC_TRACKING_ID, num_envs=num_envs, vectorization_mode=mode, clips=clip, backend=backend, **kwargs
    )


def batched_observation(observation: Mapping[str, Any], num_envs: int) -> dict[str, np.ndarray]:
    """A vector env's Dict observation as ``(num_envs, size)`` arrays, whatever shape a 1-env vector env gives."""
    return {key: np.asarray(value).reshape(num_envs, -1) for key, value in observation.items()}
