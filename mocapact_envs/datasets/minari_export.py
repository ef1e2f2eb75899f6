"""Expert rollout files as Minari datasets (the ``mocapact-minari`` command is
:mod:`mocapact_envs.tools.minari_export`).

One dataset per clip file (``mocapact/CMU_016_22/expert-v0``) or one for all the
files given (``--collection locomotion``: ``mocapact/locomotion/expert-v0``; the expert
zoo's rollouts: ``--zoo small`` or ``--zoo large``, ``mocapact/zoo/small-v0``, whose
files must hold that preset's 10 + 10 or 100 + 100 rollouts per snippet).

What is stored, per episode of the rollout files:

* ``observations``: the logged proprioceptive observables, nested by key
  (``obs["walker"]["joints_pos"]``, since Minari cannot store ``/`` in a key),
  zero-size ones dropped; with ``--include-cameras`` also
  ``obs["walker"]["egocentric_camera"]``; ``T + 1`` rows.
* ``actions``: the executed (noisy, clipped) actions, or the experts' mean
  actions with ``--action-key mean_actions``.
* ``rewards``; ``terminations`` (the expert lost track: MoCapAct's
  ``early_termination``) and ``truncations`` (the snippet's end), on the last step.
* ``infos``: ``mean_actions``, ``values`` and ``advantages`` aligned with the
  observations (row ``t`` belongs to observation ``t``), NaN on the final row.
* episode metadata: ``snippet_id``, ``rollout`` (the episode's number in its
  snippet group), ``random_start`` and ``source_file``.
* dataset metadata: ``reference_source`` and ``reference_digest``, the motion data the
  rollouts tracked, where the rollout files record it.

The dataset's ``env_spec`` (and ``eval_env_spec``) is the tracking env over the
dataset's snippets with random starts, the logged observables and reference
steps, wrapped in :class:`~mocapact_envs.datasets.nested_observation.NestedObservation`,
so ``dataset.recover_environment()`` observes exactly the stored space.
``ref_min_score`` is the mean return of a zero-action policy in that env,
``ref_max_score`` the mean return of the dataset's episodes.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from mocapact_envs.datasets.cameras import CAMERA_OBSERVATION_KEY
from mocapact_envs.datasets.collect import PRESETS, RolloutSettings
from mocapact_envs.datasets.nested_observation import WRAPPER_ENTRY_POINT, nest, nested_space
from mocapact_envs.datasets.rollouts import (
    REFERENCE_DIGEST_ATTRIBUTE,
    REFERENCE_SOURCE_ATTRIBUTE,
    RolloutFiles,
    open_rollout_file,
    read_episode,
    read_rollout_file,
)
from mocapact_envs.envs.factory import clamp_min_steps
from mocapact_envs.files import (
    check_free_space,
    check_writable_folder,
    replace_directory,
    restore_replaced_directory,
    writing,
)
from mocapact_envs.mocap.ids import parse_snippet
from mocapact_envs.mocap.source import combine_clip_digests
from mocapact_envs.tasks.checks import check_integer
from mocapact_envs.tasks.observables import OBSERVATION_SETS

NAMESPACE = "mocapact"
DATASET_NAME = "expert"
TRACKING_ENV_ID = "mocapact/MocapTracking-v0"
TRACKING_ENTRY_POINT = "mocapact_envs.envs.tracking:MocapTrackingEnv"
ACTION_DESCRIPTIONS = {"actions": "executed (noisy) actions", "mean_actions": "experts' mean actions"}
ACTION_KEYS = tuple(ACTION_DESCRIPTIONS)
DATA_FORMATS = ("hdf5", "arrow", "parquet")
INFO_KEYS = ("mean_actions", "values", "advantages")
DEFAULT_AUTHOR = "mocapact-envs"
ALGORITHM_NAME = "MoCapAct clip experts (PPO) rolled out with N(0, 0.1) action noise"


def check_version(version: int) -> int:
    """A dataset version: an integer >= 0, as Minari ids end in ``-v<N>`` (``-v-1`` breaks Minari's listing)."""
    return check_integer("dataset version (--version)", version, 0, "an integer >= 0 (ids end in -v<N>)")


def minari_dataset_id(name: str, version: int = 0) -> str:
    """``mocapact/<name>/expert-v<version>``; ``name`` is a clip id or a collection name."""
    version = check_version(version)
    if not name or not re.fullmatch(r"\w+", name):
        raise ValueError(
            f"dataset name {name!r} must be letters, digits and '_' only, non-empty (e.g. CMU_016_22 or walk)."
        )
    return f"{NAMESPACE}/{name}/{DATASET_NAME}-v{version}"


def zoo_dataset_id(variant: str, version: int = 0) -> str:
    """``mocapact/zoo/<variant>-v<version>``: the expert zoo's small or large rollouts."""
    version = check_version(version)
    if variant not in PRESETS:
        raise ValueError(f"unknown zoo variant {variant!r}; choose one of {', '.join(PRESETS)}.")
    return f"{NAMESPACE}/zoo/{variant}-v{version}"


def check_preset(paths: Sequence[Path], variant: str) -> None:
    """Every file holds the ``variant`` preset's start and random-start rollouts per snippet."""
    for path in paths:
        with read_rollout_file(path) as h5:
            counts = (int(h5["n_start_rollouts"][...]), int(h5["n_rsi_rollouts"][...]))
        if counts != PRESETS[variant]:
            raise ValueError(
                f"{path} holds {counts[0]} + {counts[1]} rollouts per snippet, not the {variant} preset's "
                f"{PRESETS[variant][0]} + {PRESETS[variant][1]} (mocapact-collect --{variant})."
            )


def observation_set_name(keys: Sequence[str]) -> str | list[str]:
    """The observation set the logged keys form, else the keys themselves."""
    for name in ("all_proprioceptive", "multi_clip_sans_id"):
        if set(keys) == set(OBSERVATION_SETS[name]):
            return name
    return sorted(keys)


def recorded_reference(files: RolloutFiles) -> tuple[list[str], str | None]:
    """The reference sources the collector recorded in the files, and the content digest of the clips
    they tracked (:meth:`~mocapact_envs.mocap.source.ClipSet.content_digest`); ``None`` when a file does
    not record it (MoCapAct's published files)."""
    sources, clip_digests = set(), {}
    for path in files.paths:
        with read_rollout_file(path) as h5:
            clips = {key.split("-")[0] for key in h5.keys() if key.startswith("CMU_")}
            source = h5.attrs.get(REFERENCE_SOURCE_ATTRIBUTE)
            digest = h5.attrs.get(REFERENCE_DIGEST_ATTRIBUTE)
        if source is None or digest is None or len(clips) != 1:
            return sorted(sources), None
        sources.add(str(source))
        clip_digests[clips.pop()] = str(digest)
    return sorted(sources), combine_clip_digests(clip_digests)


def tracking_env_spec(files: RolloutFiles, camera_size: int | None) -> gym.envs.registration.EnvSpec:
    """The env the files' episodes came from, observing what the Minari dataset stores.

    Where the files record their reference, the spec's ``reference_digest`` makes the recovered
    environment refuse other motion data (another ``MOCAPACT_MOCAP_PATH``) instead of silently tracking it.
    """
    from gymnasium.envs.registration import EnvSpec, WrapperSpec

    snippet_ids = sorted({ref.snippet_id for ref in files.episodes})
    defaults = RolloutSettings()
    # One min_steps valid for every snippet: the smallest of the collector's per-snippet values.
    min_steps = min(clamp_min_steps(parse_snippet(s), defaults.min_steps, files.ref_steps) for s in snippet_ids)
    kwargs = {
        "clips": snippet_ids if len(snippet_ids) > 1 else snippet_ids[0],
        "observables": observation_set_name(list(files.observable_indices)),
        "ref_steps": list(files.ref_steps),
        "random_start": True,
        "min_steps": min_steps,
        "termination_error_threshold": defaults.termination_error_threshold,
    }
    _, digest = recorded_reference(files)
    if digest is not None:
        kwargs["reference_digest"] = digest
    wrapper = WrapperSpec(
        name="NestedObservation", entry_point=WRAPPER_ENTRY_POINT, kwargs={"camera_size": camera_size}
    )
    return EnvSpec(
        id=TRACKING_ENV_ID,
        entry_point=TRACKING_ENTRY_POINT,
        kwargs=kwargs,
        additional_wrappers=(wrapper,),
        disable_env_checker=True,
    )


def zero_action_return(env_spec, episodes: int, seed: int = 0) -> float:
    """Mean return of the all-zero action (hold the actuators' neutral targets) over random-start episodes."""
    env = gym.make(env_spec)
    try:
        returns = []
        env.reset(seed=seed)
        action = np.zeros(env.action_space.shape, env.action_space.dtype)
        for _ in range(episodes):
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
            env.reset()
        return float(np.mean(returns))
    finally:
        env.close()


def dataset_mean_return(files: RolloutFiles) -> float:
    returns = []
    for path in files.paths:
        with read_rollout_file(path) as h5:
            for snippet_id in {ref.snippet_id for ref in files.episodes}:
                if snippet_id in h5:
                    for part in ("start_metrics", "rsi_metrics"):
                        returns.append(np.asarray(h5[f"{snippet_id}/{part}/episode_returns"][...]))
    return float(np.mean(np.concatenate(returns)))


def describe(files: RolloutFiles, action_key: str, include_cameras: bool) -> str:
    snippets = sorted({ref.snippet_id for ref in files.episodes})
    clips = sorted({s.split("-")[0] for s in snippets})
    shown = ", ".join(clips[:10]) + (f" and {len(clips) - 10} more" if len(clips) > 10 else "")
    sources, digest = recorded_reference(files)
    reference_note = (
        f"Reference motion: {'; '.join(sources)} (content digest {digest}; the env spec checks it)."
        if digest is not None
        else "Reference motion: not recorded in the rollout files."
    )
    return (
        f"MoCapAct-style expert rollouts of the CMU humanoid tracking {len(snippets)} snippets of "
        f"{len(clips)} motion-capture clips ({shown}): {len(files.episodes)} episodes, start and random-start, "
        f"each clip expert's mean action plus N(0, 0.1) noise, clipped to [-1, 1]. "
        f"actions are the {ACTION_DESCRIPTIONS[action_key]}; "
        f"observations are the {sum(len(v) for v in files.observable_indices.values())} logged proprioceptive "
        f"dims (reference steps {list(files.ref_steps)}) nested by key"
        + (" plus egocentric camera frames" if include_cameras else "")
        + "; infos hold the experts' mean_actions, values (reward units) and GAE(0.95, 0.95) advantages per "
        "observation (NaN on the final one); terminations mark lost tracking, truncations the snippet end. "
        "Converted from per-clip HDF5 rollout files by mocapact_envs.datasets.minari_export. " + reference_note
    )


def _episode_buffers(
    files: RolloutFiles, space, action_key: str, include_cameras: bool
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """``(EpisodeBuffer, episode metadata)`` for every episode, in file order."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    handles: dict[int, h5py.File] = {}
    try:
        for episode_id, ref in enumerate(files.episodes):
            if ref.file_index not in handles:
                handles[ref.file_index] = open_rollout_file(files.paths[ref.file_index])
            path, h5 = files.paths[ref.file_index], handles[ref.file_index]
            camera = f"observations/{CAMERA_OBSERVATION_KEY}"
            if include_cameras and camera not in h5[ref.group]:
                raise ValueError(
                    f"{path}:{ref.group} has no camera frames; "
                    "collect with --log-cameras or export without --include-cameras."
                )
            keys = ("observations/proprioceptive", action_key, "rewards", *INFO_KEYS)
            episode = read_episode(path, h5, ref.group, (*keys, camera) if include_cameras else keys)
            proprio = episode["observations/proprioceptive"].astype(np.float32)
            flat = {key: proprio[:, columns] for key, columns in files.observable_indices.items()}
            if include_cameras:
                flat[CAMERA_OBSERVATION_KEY] = episode[camera]
            steps = len(proprio) - 1
            terminations = np.zeros(steps, dtype=bool)
            truncations = np.zeros(steps, dtype=bool)
            terminations[-1] = ref.early_termination
            truncations[-1] = not ref.early_termination
            infos = {}
            for key in INFO_KEYS:
                values = episode[key].astype(np.float32)
                padding = np.full((1, *values.shape[1:]), np.nan, dtype=np.float32)
                infos[key] = np.concatenate([values, padding])
            buffer = EpisodeBuffer(
                id=episode_id,
                observations=nest(flat, space),
                actions=episode[action_key].astype(np.float32),
                rewards=episode["rewards"].astype(np.float64),
                terminations=terminations,
                truncations=truncations,
                infos=infos,
            )
            metadata = {
                "snippet_id": ref.snippet_id,
                "rollout": int(ref.group.rsplit("/", 1)[1]),
                "random_start": not ref.is_start,
                "source_file": files.paths[ref.file_index].name,
            }
            yield buffer, metadata
    finally:
        for handle in handles.values():
            handle.close()


def _check_consistent(paths: Sequence[Path], files: RolloutFiles) -> None:
    for path in paths:
        with read_rollout_file(path) as h5:
            ref_steps = tuple(int(s) for s in h5["ref_steps"][...])
            keys = {f"walker/{name}" for name in h5["observable_indices/walker"]}
        if ref_steps != files.ref_steps or keys != set(files.observable_indices):
            raise ValueError(
                f"{path} logs reference steps {ref_steps} and {len(keys)} observables, but {files.paths[0]} "
                f"logs {files.ref_steps} and {len(files.observable_indices)}: export them as separate datasets."
            )


def check_export_options(action_key: str, data_format: str, ref_min_episodes: int) -> None:
    """Refuses export options no dataset can be written with, before anything is read or written."""
    if action_key not in ACTION_KEYS:
        raise ValueError(f"unknown action_key {action_key!r}; choose one of {', '.join(ACTION_KEYS)}.")
    if data_format not in DATA_FORMATS:
        raise ValueError(f"unknown data_format {data_format!r}; choose one of {', '.join(DATA_FORMATS)}.")
    # ref_min_score is the mean return of these episodes: none would make it NaN.
    check_integer("ref_min_episodes (--ref-min-episodes)", ref_min_episodes, 1)


def dataset_folder(dataset_id: str = "") -> Path:
    """Where Minari keeps ``dataset_id``, by Minari's rule: under ``MINARI_DATASETS_PATH``, else
    ``~/.minari/datasets`` (its own ``get_dataset_path`` also creates the root, which must first be
    checked for being writable). Without an id, the datasets root."""
    root = os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets"
    return Path(root) / dataset_id


def check_can_write(dataset_id: str, overwrite: bool) -> None:
    """A dataset already under ``dataset_id`` is replaced only with ``overwrite``."""
    if dataset_folder(dataset_id).exists() and not overwrite:
        raise ValueError(f"Minari dataset {dataset_id} already exists; pass --overwrite to replace it.")


#: Hidden folders in the datasets root (Minari's listing skips them) where exports are written first.
STAGING_PREFIX = ".mocapact-export-"


def _remove_stale_staging(root: Path) -> None:
    """Deletes what exports that were killed left in their staging folders (their process is gone)."""
    for folder in root.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name.removeprefix(STAGING_PREFIX).split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Makes ``root`` Minari's datasets root (``MINARI_DATASETS_PATH``, which Minari reads on every call)."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


@contextlib.contextmanager
def _staged_datasets_root(root: Path) -> Iterator[Path]:
    """A fresh staging folder in ``root``, Minari's datasets root while the context runs, then deleted.

    On the same file system as ``root``, so the finished dataset is renamed into place, not copied.
    """
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=root))
    try:
        with _minari_root(staging):
            yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def stored_bytes(files: RolloutFiles, include_cameras: bool, camera_size: int | None) -> int:
    """The bytes of data the export stores (HDF5 adds its own overhead on top): observations and infos
    have ``T + 1`` rows, actions, rewards and the end flags ``T``."""
    row_floats = sum(len(columns) for columns in files.observable_indices.values()) + 56 + 2  # + infos
    row_bytes = 4 * row_floats + (3 * camera_size**2 if include_cameras else 0)
    steps = sum(ref.length for ref in files.episodes)
    return (steps + len(files.episodes)) * row_bytes + steps * (4 * 56 + 8 + 2)


def export_to_minari(
    paths: Sequence[str | Path],
    dataset_id: str,
    *,
    action_key: str = "actions",
    include_cameras: bool = False,
    author: str = DEFAULT_AUTHOR,
    author_email: str | None = None,
    code_permalink: str | None = None,
    ref_min_episodes: int = 10,
    data_format: str = "hdf5",
    jpeg_encoding: bool = False,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
):
    """Writes the rollout files' episodes as one Minari dataset; returns the ``MinariDataset``.

    The dataset is written in a hidden staging folder of the datasets root and moved to its id only
    once complete: an export that fails, or is killed, leaves the dataset it would replace
    (``overwrite``) as it was. ``progress(n)`` is called as episodes are written.
    """
    import minari
    from minari.namespace import create_namespace, list_local_namespaces

    check_export_options(action_key, data_format, ref_min_episodes)
    paths = [Path(p) for p in paths]
    files = RolloutFiles(paths)
    _check_consistent(paths, files)
    target, root = dataset_folder(dataset_id), check_writable_folder(dataset_folder(), "Minari datasets folder")
    restore_replaced_directory(target)  # an earlier export killed between its two renames
    check_can_write(dataset_id, overwrite)
    _remove_stale_staging(root)

    camera_size = None
    flat_spaces = {
        key: gym.spaces.Box(-np.inf, np.inf, (len(columns),), np.float32)
        for key, columns in files.observable_indices.items()
    }
    if include_cameras:
        with read_rollout_file(paths[0]) as h5:
            frames = h5[f"{files.episodes[0].group}/observations/{CAMERA_OBSERVATION_KEY}"]
            camera_size = int(frames.shape[1])
        flat_spaces[CAMERA_OBSERVATION_KEY] = gym.spaces.Box(0, 255, (camera_size, camera_size, 3), np.uint8)
    observation_space = nested_space(flat_spaces)
    env_spec = tracking_env_spec(files, camera_size)
    action_space = gym.spaces.Box(-1.0, 1.0, (56,), np.float32)
    # Refused now, not by Minari's writer midway (h5py then prints a traceback per open object).
    check_free_space(root, stored_bytes(files, include_cameras, camera_size))
    ref_min_score = zero_action_return(env_spec, ref_min_episodes)
    ref_max_score = dataset_mean_return(files)

    progress = progress or (lambda n: None)
    version = importlib.metadata.version("mocapact-envs")
    with writing(root), _staged_datasets_root(root) as staging:
        episodes = _episode_buffers(files, observation_space, action_key, include_cameras)
        first_buffer, first_metadata = next(episodes)
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            [first_buffer],
            env=env_spec,
            eval_env=env_spec,
            algorithm_name=ALGORITHM_NAME,
            author=author,
            author_email=author_email,
            code_permalink=code_permalink or f"mocapact-envs {version}: mocapact_envs/datasets/collect.py",
            action_space=action_space,
            observation_space=observation_space,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            description=describe(files, action_key, include_cameras),
            data_format=data_format,
            requirements=[f"mocapact-envs>={version}"],
            jpeg_encoding=jpeg_encoding,
        )
        metadata = [first_metadata]
        progress(1)
        batch: list = []
        for buffer, episode_metadata in episodes:
            batch.append(buffer)
            metadata.append(episode_metadata)
            if len(batch) == 64:  # bounded memory, few storage calls
                dataset.update_dataset_from_buffer(batch)
                progress(len(batch))
                batch = []
        if batch:
            dataset.update_dataset_from_buffer(batch)
            progress(len(batch))
        dataset.storage.update_episode_metadata(metadata, range(len(metadata)))
        sources, digest = recorded_reference(files)
        if digest is not None:
            dataset.storage.update_metadata({"reference_source": "; ".join(sources), "reference_digest": digest})
        del dataset  # its storage points into the staging folder
        namespace = dataset_id.rsplit("/", 1)[0]
        # As Minari's create_dataset would have done in the datasets root itself (outside the staging context).
        with _minari_root(root):
            if namespace not in list_local_namespaces():
                create_namespace(namespace)
        replace_directory(staging / dataset_id, target)
    return minari.load_dataset(dataset_id)
