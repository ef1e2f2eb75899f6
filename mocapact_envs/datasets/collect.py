"""Rolling out clip experts into MoCapAct's per-clip HDF5 files (the ``mocapact-collect`` command is
:mod:`mocapact_envs.tools.collect`).

:func:`collect` rolls out the expert runs found by
:func:`~mocapact_envs.policies.run_layout.find_experts`, grouped by clip, into ``<clip>.hdf5`` per
clip (layout in :mod:`mocapact_envs.datasets.rollouts`) and, at the end, ``dataset_metrics.npz``
over every clip file in the output folder; :func:`collect_clip` does one clip.

As MoCapAct's ``rollout_experts.py``: per snippet expert, ``n_start_rollouts``
episodes from the snippet start then ``n_rsi_rollouts`` from random starts
(``min_steps = min(30, end - start - max(ref_steps)) - 1``); the executed action is
the expert's mean plus N(0, act_noise) noise, clipped to [-1, 1] (``actions``),
the mean itself is kept too (``mean_actions``); reference steps 1..5;
termination error 0.3; values from the expert's critic in reward units;
advantages by GAE(0.95, 0.95) with a zero bootstrap at every episode end.

Student-driven rollouts (``--driver-policy``, DAgger's data): a distilled multi-clip policy
acts instead of the expert, sampling its actions as MoCapAct evaluates it (or acting with its
means, ``--driver-deterministic``), and the expert labels every state it reaches
(``mean_actions``, ``values``). ``actions`` are the driver's, and the metrics are the driver's
episodes. Distilling on these files beside the experts' own teaches the policy what the expert
does in the states where the policy drifts, which expert-driven rollouts seldom visit. The
driver is recorded in the file's ``driver_policy`` attribute.

Each snippet's randomness (random starts, action noise, a driver's sampling) derives from
``(--seed, snippet id)`` only, so the files do not depend on the number of workers
or the order clips are done in. A finished clip file is skipped on a rerun, so an
interrupted collection resumes where it stopped, but only when what the file records
(its ``collection`` attribute: the rollout settings, the backend, a digest of each
snippet expert's files and of the driver's, and the reference clip's digest) matches
this run; a file that differs is refused, naming each difference, and collected again
only with ``--overwrite``.

Camera images (``--log-cameras``): after the reset and after every step the
collector renders the walker's egocentric camera a second time, offscreen, at
``--camera-size`` pixels square (64, as MoCapAct), and stores the frames as
``<episode>/observations/walker/egocentric_camera`` (``(T + 1, H, W, 3)`` uint8);
see :mod:`mocapact_envs.datasets.cameras`. Without a GPU a frame costs far more
than a physics step.

On a Ray cluster (``--address host:port``; ``local`` starts one here) each clip is a Ray
task of one CPU; the expert folders, the output folder and the reference clips must
be reachable under the same paths on every node.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mocapact_envs.datasets.cameras import CAMERA_OBSERVATION_KEY, DEFAULT_CAMERA_SIZE, render_egocentric
from mocapact_envs.datasets.rollouts import (
    METRIC_NAMES,
    REFERENCE_DIGEST_ATTRIBUTE,
    REFERENCE_SOURCE_ATTRIBUTE,
    Episode,
    SnippetRollouts,
    clip_files,
    generalized_advantages,
    read_rollout_file,
    write_clip_file,
    write_dataset_metrics,
)
from mocapact_envs.files import check_writable_folder, remove_stale_temporaries, tree_digest
from mocapact_envs.policies.run_layout import ExpertRun
from mocapact_envs.tasks.checks import check_non_negative, check_number
from mocapact_envs.tasks.tracking_settings import TERMINATION_ERROR_THRESHOLD
from mocapact_envs.training.ray_cluster import own_ray_at_full_priority

#: MoCapAct's two published datasets: (start, random-start) rollouts per snippet.
PRESETS = {"large": (100, 100), "small": (10, 10)}
#: What rollouts may log: everything proprioceptive (2868 dims) or what multi-clip policies see (2847).
PROPRIO_SETS = ("all_proprioceptive", "multi_clip_sans_id")
DATASET_METRICS_FILE = "dataset_metrics.npz"
#: File attribute naming the multi-clip policy that drove student-driven rollouts (absent: the experts drove).
DRIVER_POLICY_ATTRIBUTE = "driver_policy"
#: Metric datasets of a clip file and the :class:`~mocapact_envs.evaluation.metrics.EpisodeMetrics` field each holds.
METRIC_ATTRIBUTES = dict(
    zip(METRIC_NAMES, ("episode_return", "episode_length", "norm_episode_return", "norm_episode_length"), strict=True)
)


@dataclass(frozen=True)
class RolloutSettings:
    """How each snippet expert is rolled out; the defaults are MoCapAct's large dataset's."""

    n_start_rollouts: int = PRESETS["large"][0]
    n_rsi_rollouts: int = PRESETS["large"][1]
    act_noise: float = 0.1
    ref_steps: tuple[int, ...] = (1, 2, 3, 4, 5)
    min_steps: int = 30
    termination_error_threshold: float = TERMINATION_ERROR_THRESHOLD
    gamma: float = 0.95
    gae_lambda: float = 0.95
    observables: str = "all_proprioceptive"
    log_cameras: bool = False
    camera_size: int = DEFAULT_CAMERA_SIZE
    seed: int = 0
    backend: str | None = None
    mocap_path: str | None = None
    #: A saved multi-clip policy that acts in place of the expert (the expert labels its states).
    driver_policy: str | None = None
    #: The driver acts with its latent and action means instead of sampling them.
    driver_deterministic: bool = False

    def __post_init__(self):
        if self.observables not in PROPRIO_SETS:
            raise ValueError(f"unknown observables {self.observables!r}; choose one of {', '.join(PROPRIO_SETS)}.")
        if self.n_start_rollouts < 0 or self.n_rsi_rollouts < 0 or self.n_start_rollouts + self.n_rsi_rollouts == 0:
            raise ValueError(
                f"rollout counts must be >= 0 and not both 0, got n_start_rollouts={self.n_start_rollouts}, "
                f"n_rsi_rollouts={self.n_rsi_rollouts}."
            )
        check_non_negative("act_noise (--act-noise)", self.act_noise, "a finite number >= 0")
        if self.min_steps < 1:
            raise ValueError(f"min_steps must be >= 1, got {self.min_steps}.")
        for name in ("gamma", "gae_lambda"):
            check_number(name, getattr(self, name), "in [0, 1]", lambda v: 0 <= v <= 1)
        from mocapact_envs.tasks.tracking_settings import TrackingSettings

        # The tracking task's own checks, now rather than in each clip's worker after other clips were done.
        TrackingSettings(ref_steps=self.ref_steps, termination_error_threshold=self.termination_error_threshold)
        if self.camera_size < 1:
            raise ValueError(f"camera_size must be >= 1, got {self.camera_size}.")
        if self.driver_policy is not None and not Path(self.driver_policy).is_dir():
            raise ValueError(f"driver_policy {self.driver_policy} is not a saved multi-clip policy folder.")
        if self.driver_deterministic and self.driver_policy is None:
            raise ValueError("driver_deterministic needs a driver_policy.")

    @property
    def episodes_per_snippet(self) -> int:
        return self.n_start_rollouts + self.n_rsi_rollouts


def snippet_seed(seed: int, snippet_id: str) -> np.random.SeedSequence:
    """The randomness of one snippet's rollouts: a function of the run's seed and the snippet id only."""
    digest = hashlib.sha256(snippet_id.encode()).digest()
    return np.random.SeedSequence([int(seed), int.from_bytes(digest[:8], "little")])


def observable_layout(observation_space) -> dict[str, np.ndarray]:
    """Column indices of each observable in the concatenated (alphabetical) proprioceptive vector."""
    indices, offset = {}, 0
    for key, space in observation_space.spaces.items():
        size = int(np.prod(space.shape))
        indices[key] = np.arange(offset, offset + size)
        offset += size
    return indices


class SnippetRollout:
    """Rolls out one snippet's expert in its own start and random-start environments."""

    def __init__(self, run: ExpertRun, settings: RolloutSettings):
        from mocapact_envs.envs.factory import clamp_min_steps, make_tracking_env, resolve_snippet
        from mocapact_envs.policies.expert_files import load_expert

        self.run, self.settings = run, settings
        self.snippet = resolve_snippet(run.snippet.id, settings.mocap_path)
        self.expert = load_expert(run.model_dir)
        min_steps = clamp_min_steps(self.snippet, settings.min_steps, settings.ref_steps)
        self.envs = {
            random_start: make_tracking_env(
                self.snippet.id,
                settings.backend,
                mocap_path=settings.mocap_path,
                observables=settings.observables,
                ref_steps=settings.ref_steps,
                random_start=random_start,
                min_steps=min_steps,
                termination_error_threshold=settings.termination_error_threshold,
            )
            for random_start in (False, True)
        }
        self.keys = tuple(self.envs[False].observation_space.spaces)
        expert_keys = getattr(self.expert, "observation_keys", None) or ()
        missing = [k for k in expert_keys if k not in self.keys]
        if missing:
            raise ValueError(f"expert {run.model_dir} observes {missing}, which the {settings.observables} set lacks.")
        self.driver = None
        if settings.driver_policy is not None:
            from mocapact_envs.policies.multiclip import MultiClipPolicy

            self.driver = MultiClipPolicy.load(settings.driver_policy)
            self.driver.check_environment(self.envs[False])

    def act(self, observation, latent, rng: np.random.Generator):
        """The executed action, the expert's mean action (the label) and the driver's next latent; ``rng``
        draws the action noise when the expert drives."""
        mean_action, _ = self.expert.predict(observation, deterministic=True)
        mean_action = np.asarray(mean_action, dtype=np.float32)
        if self.driver is None:
            noise = rng.normal(0.0, self.settings.act_noise, mean_action.shape) if self.settings.act_noise > 0 else 0.0
            return np.clip(mean_action + noise, -1.0, 1.0).astype(np.float32), mean_action, None
        batch = {key: np.asarray(value)[None] for key, value in observation.items()}
        action, latent = self.driver.act(
            self.driver.flatten_observation(batch), latent, deterministic=self.settings.driver_deterministic
        )
        return action[0].astype(np.float32), mean_action, latent

    def close(self) -> None:
        for env in self.envs.values():
            env.close()

    def episode(self, random_start: bool, rng: np.random.Generator, env_seed: int | None):
        """One episode: the :class:`Episode` and its :class:`~mocapact_envs.evaluation.metrics.EpisodeMetrics`."""
        from mocapact_envs.evaluation.metrics import EpisodeTracker

        env, settings = self.envs[random_start], self.settings
        tracker = EpisodeTracker()
        observation, info = env.reset(seed=env_seed)
        tracker.on_reset(info)
        observations = [np.concatenate([observation[k] for k in self.keys])]
        frames = [render_egocentric(env, settings.camera_size)] if settings.log_cameras else []
        actions, mean_actions, rewards, values = [], [], [], []
        latent = None
        while True:
            action, mean_action, latent = self.act(observation, latent, rng)
            values.append(float(self.expert.value(observation)))
            observation, reward, terminated, truncated, info = env.step(action)
            finished = tracker.on_step(reward, terminated, truncated, info)
            observations.append(np.concatenate([observation[k] for k in self.keys]))
            if settings.log_cameras:
                frames.append(render_egocentric(env, settings.camera_size))
            actions.append(action)
            mean_actions.append(mean_action)
            rewards.append(float(reward))
            if terminated or truncated:
                break
        rewards_array, values_array = np.asarray(rewards), np.asarray(values)
        episode = Episode(
            observations=np.stack(observations).astype(np.float32),
            actions=np.stack(actions),
            mean_actions=np.stack(mean_actions),
            rewards=rewards_array.astype(np.float32),
            values=values_array.astype(np.float32),
            advantages=generalized_advantages(rewards_array, values_array, settings.gamma, settings.gae_lambda),
            images={CAMERA_OBSERVATION_KEY: np.stack(frames)} if settings.log_cameras else {},
        )
        return episode, finished[0]

    def collect(self, on_episode: Callable[[], None] | None = None) -> SnippetRollouts:
        """Start episodes then random-start ones, seeded from ``(settings.seed, snippet id)``."""
        settings = self.settings
        start_seed, rsi_seed, noise_seed = snippet_seed(settings.seed, self.snippet.id).spawn(3)
        rng = np.random.default_rng(noise_seed)
        if self.driver is not None:
            import torch

            # The driver samples from torch's generator: seeded per snippet, as the noise is.
            torch.manual_seed(int(noise_seed.generate_state(1)[0]))
        env_seeds = {False: int(start_seed.generate_state(1)[0]), True: int(rsi_seed.generate_state(1)[0])}
        episodes, metrics = [], []
        for index in range(settings.episodes_per_snippet):
            random_start = index >= settings.n_start_rollouts
            # Seeding the first reset of each env only: later resets continue its random state.
            first = index == 0 or index == settings.n_start_rollouts
            episode, episode_metrics = self.episode(random_start, rng, env_seeds[random_start] if first else None)
            episodes.append(episode)
            metrics.append(episode_metrics)
            if on_episode is not None:
                on_episode()

        return SnippetRollouts(
            snippet_id=self.snippet.id,
            episodes=episodes,
            early_termination=np.array([m.terminated for m in metrics], dtype=bool),
            start_metrics=_metric_arrays(metrics[: settings.n_start_rollouts]),
            rsi_metrics=_metric_arrays(metrics[settings.n_start_rollouts :]),
        )


def _metric_arrays(metrics) -> dict[str, np.ndarray]:
    """The ``start_metrics`` / ``rsi_metrics`` arrays of some episodes' metrics."""
    return {name: np.array([getattr(m, attribute) for m in metrics]) for name, attribute in METRIC_ATTRIBUTES.items()}


def rollout_driver(settings: RolloutSettings) -> str:
    """Who acted in the rollouts, as the ``driver_policy`` attribute records it."""
    if settings.driver_policy is None:
        return "the experts"
    return f"{settings.driver_policy}{' (deterministic)' if settings.driver_deterministic else ''}"


def clip_file_path(output_dir: str | Path, clip_id: str) -> Path:
    return Path(output_dir) / f"{clip_id}.hdf5"


#: File attribute: JSON of what shaped the file's data (:func:`recorded_collection`), checked before a
#: finished file is reused.
COLLECTION_ATTRIBUTE = "collection"


def recorded_collection(runs: Sequence[ExpertRun], settings: RolloutSettings) -> dict:
    """What a clip file's data depends on, as JSON values: the rollout settings (the reference clips'
    digest is recorded apart, :data:`REFERENCE_DIGEST_ATTRIBUTE`), the backend, each snippet expert's
    files' digest and the driver's (``None``: the experts drove)."""
    from mocapact_envs.envs.factory import check_backend

    recorded = {
        field.name: getattr(settings, field.name)
        for field in dataclasses.fields(settings)
        # Paths differ between machines and spellings: the reference's and the driver's digests stand for them.
        if field.name not in ("mocap_path", "driver_policy")
    }
    recorded.update(
        ref_steps=list(settings.ref_steps),
        backend=check_backend(settings.backend),
        driver_digest=None if settings.driver_policy is None else tree_digest(settings.driver_policy),
        experts={run.snippet.id: tree_digest(run.model_dir) for run in runs},
    )
    return json.loads(json.dumps(recorded))  # as it reads back (lists, not tuples)


def finished_clip_matches(path: Path, runs: Sequence[ExpertRun], settings: RolloutSettings) -> str | None:
    """``None`` when an existing clip file holds exactly what this run would write, else every difference,
    each naming the setting with the file's value and this run's."""
    from mocapact_envs.mocap.source import get_source

    with read_rollout_file(path) as h5:
        snippets = sorted(k for k in h5.keys() if k.startswith("CMU_"))
        recorded_text = h5.attrs.get(COLLECTION_ATTRIBUTE)
        reference_digest = h5.attrs.get(REFERENCE_DIGEST_ATTRIBUTE)
    wanted = sorted(run.snippet.id for run in runs)
    if snippets != wanted:
        return f"it holds snippets {snippets}, the experts found track {wanted}"
    if recorded_text is None:
        return (
            f"it does not record the settings it was collected with (no {COLLECTION_ATTRIBUTE!r} attribute: "
            "written by an older mocapact-collect or by MoCapAct), so it cannot be checked against this run"
        )
    recorded = json.loads(recorded_text)
    this_run = recorded_collection(runs, settings)
    differences = []
    for name, value in this_run.items():
        if name == "experts":
            for snippet_id, digest in value.items():
                if recorded.get(name, {}).get(snippet_id) != digest:
                    run = next(r for r in runs if r.snippet.id == snippet_id)
                    differences.append(
                        f"the expert of {snippet_id} differs (the file's {recorded.get(name, {}).get(snippet_id)}, "
                        f"{run.model_dir}: {digest})"
                    )
        elif recorded.get(name) != value:
            differences.append(f"{name} is {recorded.get(name)!r} in the file, {value!r} in this run")
    clip_id = path.stem
    current = get_source(settings.mocap_path).clip_set(clip_id).clip_digests()[clip_id]
    if reference_digest != current:
        differences.append(
            f"it tracked other reference motion (clip digest {reference_digest}, the mocap source's now {current})"
        )
    return "; ".join(differences) or None


def collect_clip(
    clip_id: str,
    runs: Sequence[ExpertRun],
    settings: RolloutSettings,
    output_dir: str | Path,
    on_episode: Callable[[], None] | None = None,
) -> Path:
    """Rolls out every snippet expert of one clip into ``<output_dir>/<clip_id>.hdf5``.

    Snippets are written as they finish, so at most one snippet's episodes are held
    in memory; the file appears under its name only once complete.
    """
    import torch

    torch.set_num_threads(1)  # one core per clip; parallelism comes from worker processes
    path = clip_file_path(output_dir, clip_id)
    remove_stale_temporaries(path)
    rollouts = [SnippetRollout(run, settings) for run in runs]
    try:
        first_env = rollouts[0].envs[False].unwrapped
        layout = observable_layout(first_env.observation_space)
        reference = {
            REFERENCE_SOURCE_ATTRIBUTE: first_env.reference_source["source"],
            REFERENCE_DIGEST_ATTRIBUTE: first_env.clip_set.clip_digests()[clip_id],
        }
        if settings.driver_policy is not None:
            reference[DRIVER_POLICY_ATTRIBUTE] = rollout_driver(settings)
        reference[COLLECTION_ATTRIBUTE] = json.dumps(recorded_collection(runs, settings), sort_keys=True)
        write_clip_file(
            path,
            (rollout.collect(on_episode) for rollout in rollouts),
            observable_indices=layout,
            ref_steps=settings.ref_steps,
            n_start_rollouts=settings.n_start_rollouts,
            n_rsi_rollouts=settings.n_rsi_rollouts,
            attributes=reference,
        )
    finally:
        for rollout in rollouts:
            rollout.close()
    return path


# -- running many clips -------------------------------------------------------------

_progress_queue = None
_parent_pid = None


def _init_worker(progress_queue) -> None:
    global _progress_queue, _parent_pid
    _progress_queue, _parent_pid = progress_queue, os.getppid()


def _report_episode() -> None:
    # A worker whose parent died (killed collection) stops instead of running on orphaned.
    if os.getppid() != _parent_pid:
        raise SystemExit(f"collection parent {_parent_pid} is gone; stopping.")
    _progress_queue.put(1)


def _collect_clip_in_worker(clip_id, runs, settings, output_dir) -> str:
    return str(collect_clip(clip_id, runs, settings, output_dir, _report_episode))


def collect(
    runs_by_clip: dict[str, list[ExpertRun]],
    output_dir: str | Path,
    settings: RolloutSettings,
    workers: int = 1,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    on_clip: Callable[[str, str], None] | None = None,
    address: str | None = None,
) -> list[Path]:
    """Collects every clip not already finished in ``output_dir``, then writes ``dataset_metrics.npz``.

    ``progress(n)`` is called as episodes finish; ``on_clip(clip_id, status)`` when a
    clip is done (``"written"``) or skipped (``"skipped"``). With ``address`` (a Ray
    cluster's, or ``"local"``) clips are Ray tasks instead of worker processes.
    Returns the clip files.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}.")
    output_dir = check_writable_folder(output_dir, "output folder (--output-dir)")
    progress = progress or (lambda n: None)
    on_clip = on_clip or (lambda clip_id, status: None)
    todo = {}
    for clip_id, runs in runs_by_clip.items():
        path = clip_file_path(output_dir, clip_id)
        if path.exists() and not overwrite:
            mismatch = finished_clip_matches(path, runs, settings)
            if mismatch is not None:
                raise ValueError(f"{path} exists but {mismatch}; pass --overwrite to collect it again.")
            progress(len(runs) * settings.episodes_per_snippet)
            on_clip(clip_id, "skipped")
        else:
            todo[clip_id] = runs

    if address is not None and todo:
        _collect_on_ray(todo, output_dir, settings, address, progress, on_clip)
    elif workers == 1 or len(todo) <= 1:
        for clip_id, runs in todo.items():
            collect_clip(clip_id, runs, settings, output_dir, lambda: progress(1))
            on_clip(clip_id, "written")
    else:
        _collect_in_pool(todo, output_dir, settings, min(workers, len(todo)), progress, on_clip)

    paths = clip_files(output_dir)
    if paths:
        write_dataset_metrics(paths, output_dir / DATASET_METRICS_FILE)
    return [clip_file_path(output_dir, clip_id) for clip_id in runs_by_clip]


def _collect_in_pool(todo, output_dir, settings, workers, progress, on_clip) -> None:
    context = multiprocessing.get_context("spawn")  # fork would copy MuJoCo/EGL and torch state
    progress_queue = context.Queue()
    with context.Pool(workers, initializer=_init_worker, initargs=(progress_queue,)) as pool:
        pending = {
            clip_id: pool.apply_async(_collect_clip_in_worker, (clip_id, runs, settings, output_dir))
            for clip_id, runs in todo.items()
        }
        while pending:
            try:
                progress(progress_queue.get(timeout=0.2))
                continue
            except queue.Empty:
                pass
            for clip_id in [c for c, result in pending.items() if result.ready()]:
                pending.pop(clip_id).get()  # re-raises a worker's error here
                on_clip(clip_id, "written")
        while not progress_queue.empty():
            progress(progress_queue.get())


#: Settings Ray workers need from this process's environment (where the clips are, how to render).
RAY_FORWARDED_VARIABLES = ("MOCAPACT_MOCAP_PATH", "MOCAPACT_CACHE_DIR", "MUJOCO_GL", "HF_HUB_OFFLINE")


def _collect_on_ray(todo, output_dir, settings, address, progress, on_clip) -> None:
    """One Ray task (one CPU) per clip; progress advances a clip at a time."""
    import ray

    # Absolute paths: Ray's workers need not share this process's working directory.
    env_vars = {name: os.environ[name] for name in RAY_FORWARDED_VARIABLES if name in os.environ}
    for name in ("MOCAPACT_MOCAP_PATH", "MOCAPACT_CACHE_DIR"):
        if name in env_vars:
            env_vars[name] = str(Path(env_vars[name]).expanduser().resolve())
    if settings.mocap_path is not None:
        settings = dataclasses.replace(settings, mocap_path=str(Path(settings.mocap_path).expanduser().resolve()))
    own_ray_at_full_priority(address)
    ray.init(
        address=address,  # "local" starts a Ray of its own here, even beside another one
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": env_vars},
    )
    try:
        remote_collect = ray.remote(num_cpus=1, max_retries=2)(collect_clip)
        pending = {
            remote_collect.remote(
                clip_id,
                [dataclasses.replace(run, run_dir=run.run_dir.resolve()) for run in runs],
                settings,
                str(Path(output_dir).resolve()),
            ): (clip_id, len(runs))
            for clip_id, runs in todo.items()
        }
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            clip_id, num_runs = pending.pop(done)
            ray.get(done)  # re-raises a task's error here
            progress(num_runs * settings.episodes_per_snippet)
            on_clip(clip_id, "written")
    finally:
        ray.shutdown()
