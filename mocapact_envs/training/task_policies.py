"""Training and loading transfer-task policies (GoToTarget, VelocityControl) with stable-baselines3.

The one place that builds the transfer tasks' SB3 vector envs and reads and writes
the trained policies, so ``baselines/transfer/train.py`` and ``evaluate.py`` agree:

* :func:`make_transfer_vec_env`: ``n_envs`` Monitor-wrapped tasks in an SB3 ``VecEnv``
  (SB3 needs its own vector envs, not Gymnasium's); observations stay ``Dict`` and
  the policies are SB3's ``MultiInput`` ones.
* :func:`save_task_policy` / :func:`load_task_policy`: a pickle-free policy
  directory (safetensors weights, the ``VecNormalize`` statistics as safetensors,
  a JSON config and a copy of the low-level policy) that loads back on any torch
  without SB3's zip or pickles.
* :func:`save_vec_normalize` / :func:`restore_vec_normalize`: ``VecNormalize``
  statistics without pickling; :func:`sb3_model_state` / :func:`restore_sb3_model`: an SB3
  model and its statistics as tensors and plain values of a trainer checkpoint
  (``mocapact_envs.training.run_folder``), without SB3's zip.
* :func:`run_task_episodes` and :func:`read_learning_curve` for evaluation and plots.

A saved policy directory holds:

* ``config.json``: format name and version, the algorithm, the policy class and its
  keyword arguments, the observation and action spaces the policy was built with,
  the environment (id, keyword arguments, low-level policy) and free-form metadata;
* ``model.safetensors``: ``model.policy.state_dict()`` (``policy.safetensors`` in folders saved before 0.2);
* ``vec_normalize.safetensors`` and ``vec_normalize.json`` when observations were normalised;
* ``low_level_policy/``: the decoder the policy acts through, when it has one.

``config.json`` is written last: a directory with it is complete.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from mocapact_envs.files import read_tensors, write_json, write_tensors
from mocapact_envs.policies.low_level import ACTIVATIONS, check_activation
from mocapact_envs.policies.saving import CONFIG_FILE, WEIGHTS_FILE
from mocapact_envs.tasks.tracking_settings import DEFAULT_MAX_LATENT
from mocapact_envs.training.run_folder import TENSORBOARD_DIR

#: Short task names and the environment ids they stand for.
TRANSFER_TASKS = {"go_to_target": "mocapact/GoToTarget-v0", "velocity_control": "mocapact/VelocityControl-v0"}
#: Algorithms by flag name: the class and the Dict-observation policy class, as "module:attribute".
ALGORITHMS = {
    "ppo": ("stable_baselines3:PPO", "stable_baselines3.common.policies:MultiInputActorCriticPolicy"),
    "recurrent_ppo": (
        "sb3_contrib:RecurrentPPO",
        "sb3_contrib.common.recurrent.policies:RecurrentMultiInputActorCriticPolicy",
    ),
    "tqc": ("sb3_contrib:TQC", "sb3_contrib.tqc.policies:MultiInputPolicy"),
}
ON_POLICY_ALGORITHMS = ("ppo", "recurrent_ppo")
VEC_ENV_KINDS = ("subproc", "dummy")

FORMAT_NAME = "mocapact_envs.task_policy"
FORMAT_VERSION = 1
LOW_LEVEL_DIR = "low_level_policy"
#: Where policies saved before the package's one policy-folder convention (``model.safetensors``) kept their weights.
LEGACY_WEIGHTS_FILE = "policy.safetensors"
VEC_NORMALIZE_TENSORS, VEC_NORMALIZE_SETTINGS = "vec_normalize.safetensors", "vec_normalize.json"


def resolve_task(task: str) -> str:
    """The environment id of a task name (``go_to_target``) or id (``mocapact/GoToTarget-v0``)."""
    if task in TRANSFER_TASKS:
        return TRANSFER_TASKS[task]
    if task in TRANSFER_TASKS.values():
        return task
    choices = ", ".join([*TRANSFER_TASKS, *TRANSFER_TASKS.values()])
    raise ValueError(f"unknown transfer task {task!r}; choose one of {choices}.")


def _import(path: str) -> Any:
    module, attribute = path.split(":")
    return getattr(importlib.import_module(module), attribute)


def check_algorithm(algo: str) -> str:
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}.")
    return algo


def algorithm_class(algo: str) -> type:
    """The SB3 algorithm class of ``algo`` (``ppo``, ``recurrent_ppo`` or ``tqc``)."""
    return _import(ALGORITHMS[check_algorithm(algo)][0])


def policy_class(algo: str) -> type:
    """The SB3 policy class ``algo`` uses for Dict observations."""
    return _import(ALGORITHMS[check_algorithm(algo)][1])


def policy_kwargs_from_json(policy_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` from their JSON form, where ``activation_fn`` is a name from :data:`ACTIVATIONS`."""
    kwargs = dict(policy_kwargs)
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = ACTIVATIONS[check_activation(kwargs["activation_fn"])]
    return kwargs


# -- environments ------------------------------------------------------------------------


def make_transfer_env(
    task: str,
    low_level_policy: str | Path | None = None,
    max_latent: float = DEFAULT_MAX_LATENT,
    render_mode: str | None = None,
    **env_kwargs: Any,
) -> gym.Env:
    """One transfer task; with ``low_level_policy`` (a decoder directory) its actions are latents.

    ``env_kwargs`` go to :class:`~mocapact_envs.envs.transfer.GoToTargetEnv` or
    :class:`~mocapact_envs.envs.transfer.VelocityControlEnv` (``episode_steps``, ...).
    """
    import mocapact_envs  # noqa: F401  (registers the ids, also in a fresh worker process)

    if low_level_policy is not None:
        env_kwargs = {**env_kwargs, "low_level_policy": str(low_level_policy), "max_latent": max_latent}
    # The env checker's warnings about the latent action space would repeat in every worker.
    return gym.make(resolve_task(task), render_mode=render_mode, disable_env_checker=True, **env_kwargs)


def _make_monitored_env(task: str, low_level_policy: str | None, max_latent: float, env_kwargs: dict[str, Any]):
    from stable_baselines3.common.monitor import Monitor

    # A worker runs one decoder forward per step; more threads than one only contend for the cores.
    torch.set_num_threads(1)
    return Monitor(make_transfer_env(task, low_level_policy, max_latent, **env_kwargs))


def make_transfer_vec_env(
    task: str,
    n_envs: int,
    low_level_policy: str | Path | None = None,
    seed: int = 0,
    vec_env: str = "subproc",
    max_latent: float = DEFAULT_MAX_LATENT,
    **env_kwargs: Any,
):
    """An SB3 ``VecEnv`` of ``n_envs`` Monitor-wrapped transfer tasks, seeded ``seed, seed + 1, ...``.

    Args:
        task: a name from :data:`TRANSFER_TASKS` or its environment id.
        n_envs: sub-environments.
        low_level_policy: a saved decoder's directory or ``"pretrained"`` (the shipped one); ``None``
            for the raw 56 actions.
        seed: the first sub-environment's seed (applied at the next reset).
        vec_env: ``"subproc"`` (a process each, in parallel) or ``"dummy"`` (in this process, in turn).
        max_latent: the bound of each latent dimension with a low-level policy.
        env_kwargs: task arguments, as :func:`make_transfer_env`.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    resolve_task(task)  # a bad name fails here, not in a worker process
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}.")
    if vec_env not in VEC_ENV_KINDS:
        raise ValueError(f"unknown vec_env {vec_env!r}; choose one of {', '.join(VEC_ENV_KINDS)}.")
    if low_level_policy is not None:
        from mocapact_envs.policies.low_level import LowLevelPolicy, low_level_policy_path

        low_level_policy = low_level_policy_path(low_level_policy).resolve()
        LowLevelPolicy.load(low_level_policy)  # a bad directory fails here with its own message
        low_level_policy = str(low_level_policy)
    thunk = partial(_make_monitored_env, task, low_level_policy, max_latent, dict(env_kwargs))
    venv = SubprocVecEnv([thunk] * n_envs) if vec_env == "subproc" else DummyVecEnv([thunk] * n_envs)
    venv.seed(seed)
    return venv


# -- VecNormalize statistics without pickles ---------------------------------------------------


def vec_normalize_state(vec_normalize) -> dict[str, Any]:
    """A ``VecNormalize``'s running statistics (``tensors``: float64 tensors by name) and ``settings``."""
    tensors: dict[str, np.ndarray] = {}
    obs_rms = vec_normalize.obs_rms if isinstance(vec_normalize.obs_rms, dict) else {"": vec_normalize.obs_rms}
    for key, rms in obs_rms.items():
        tensors[f"obs_mean/{key}"] = np.asarray(rms.mean, np.float64)
        tensors[f"obs_var/{key}"] = np.asarray(rms.var, np.float64)
        tensors[f"obs_count/{key}"] = np.asarray(rms.count, np.float64)
    tensors["return_mean"] = np.asarray(vec_normalize.ret_rms.mean, np.float64)
    tensors["return_var"] = np.asarray(vec_normalize.ret_rms.var, np.float64)
    tensors["return_count"] = np.asarray(vec_normalize.ret_rms.count, np.float64)
    # The running discounted return of each worker: a resumed run scales rewards on from there.
    tensors["returns"] = np.asarray(vec_normalize.returns, np.float64)
    settings = {
        "norm_obs": bool(vec_normalize.norm_obs),
        "norm_reward": bool(vec_normalize.norm_reward),
        "norm_obs_keys": list(obs_rms) if isinstance(vec_normalize.obs_rms, dict) else None,
        "clip_obs": float(vec_normalize.clip_obs),
        "clip_reward": float(vec_normalize.clip_reward),
        "gamma": float(vec_normalize.gamma),
        "epsilon": float(vec_normalize.epsilon),
    }
    return {
        "tensors": {name: torch.from_numpy(np.ascontiguousarray(t)) for name, t in tensors.items()},
        "settings": settings,
    }


def save_vec_normalize(directory: str | Path, vec_normalize) -> None:
    """Writes a ``VecNormalize``'s running statistics (safetensors) and settings (JSON) into ``directory``."""
    state = vec_normalize_state(vec_normalize)
    write_tensors(Path(directory) / VEC_NORMALIZE_TENSORS, state["tensors"])
    write_json(Path(directory) / VEC_NORMALIZE_SETTINGS, state["settings"])


def read_vec_normalize(directory: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The statistics and settings :func:`save_vec_normalize` wrote."""
    directory = Path(directory)
    tensors = {name: t.numpy() for name, t in read_tensors(directory / VEC_NORMALIZE_TENSORS).items()}
    return tensors, json.loads((directory / VEC_NORMALIZE_SETTINGS).read_text())


def restore_vec_normalize(vec_normalize, state: Mapping[str, Any], source: str) -> None:
    """Sets a ``VecNormalize``'s statistics from :func:`vec_normalize_state`'s ``state`` (read from ``source``)."""
    tensors = {name: np.asarray(t) for name, t in state["tensors"].items()}
    settings = state["settings"]
    obs_rms = vec_normalize.obs_rms if isinstance(vec_normalize.obs_rms, dict) else {"": vec_normalize.obs_rms}
    if set(obs_rms) != {name.split("/", 1)[1] for name in tensors if name.startswith("obs_mean/")}:
        raise ValueError(f"{source} normalises other observation keys than this environment has.")
    # Tensor names by statistic: "obs_mean/<key>" ..., "return_mean" ...
    running_stats = {**{f"obs_{{}}/{key}": rms for key, rms in obs_rms.items()}, "return_{}": vec_normalize.ret_rms}
    for name, rms in running_stats.items():
        # Reshaped: a 0-dim statistic comes back with shape (1,).
        rms.mean = tensors[name.format("mean")].reshape(np.shape(rms.mean)).copy()
        rms.var = tensors[name.format("var")].reshape(np.shape(rms.var)).copy()
        rms.count = tensors[name.format("count")].item()
    if tensors["returns"].shape == vec_normalize.returns.shape:
        vec_normalize.returns = tensors["returns"].copy()
    for name in ("clip_obs", "clip_reward", "gamma", "epsilon"):
        setattr(vec_normalize, name, settings[name])


# -- SB3 models in a trainer checkpoint -----------------------------------------------------------


#: What an SB3 model counts, restored on resume (the rest is rebuilt from the run's arguments).
SB3_COUNTERS = ("num_timesteps", "_n_updates", "_episode_num")


def sb3_model_state(model) -> dict[str, Any]:
    """Checkpoint entries of an SB3 model without SB3's zip, whose ``:serialized:`` entries cloudpickle would run:
    the state dicts and torch variables SB3 itself saves with torch (networks, optimizers, the entropy
    coefficient), its counters, and its ``VecNormalize`` statistics. Tensors and plain values only, so the
    checkpoint loads with ``torch.load(weights_only=True)``."""
    state_dict_names, variable_names = model._get_torch_save_params()
    return {
        "sb3_state_dicts": {name: _attribute(model, name).state_dict() for name in state_dict_names},
        "sb3_variables": {name: _attribute(model, name).detach().cpu().clone() for name in variable_names},
        "sb3_counters": {name: int(getattr(model, name)) for name in SB3_COUNTERS},
        "vec_normalize": vec_normalize_state(model.get_vec_normalize_env()),
    }


def _attribute(obj: Any, dotted: str) -> Any:
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


def restore_sb3_model(model, state: Mapping[str, Any], source: str) -> None:
    """Loads :func:`sb3_model_state`'s entries into ``model``, built anew from the same arguments (and its env's
    ``VecNormalize`` statistics). A checkpoint of an earlier version, which embedded SB3's zip, is refused:
    loading it would unpickle whatever the zip holds."""
    if "sb3_model_zip" in state and "sb3_state_dicts" not in state:
        raise ValueError(
            f"{source} embeds an SB3 zip (an earlier version of this trainer): loading it would unpickle its "
            "contents, which can run code. Start the run over with --no-resume or use another --run-dir."
        )
    state_dict_names, variable_names = model._get_torch_save_params()
    missing = sorted(set(state_dict_names) - set(state["sb3_state_dicts"])) + sorted(
        set(variable_names) - set(state["sb3_variables"])
    )
    if missing:
        raise ValueError(f"{source} lacks {missing} of this algorithm's model: it was written by another algorithm.")
    for name in state_dict_names:
        _attribute(model, name).load_state_dict(state["sb3_state_dicts"][name])
    with torch.no_grad():
        for name in variable_names:
            _attribute(model, name).copy_(state["sb3_variables"][name])
    for name, value in state["sb3_counters"].items():
        setattr(model, name, int(value))
    restore_vec_normalize(model.get_vec_normalize_env(), state["vec_normalize"], source=source)


# -- spaces as JSON ------------------------------------------------------------------------------


def _number_to_json(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # JSON has no infinity: "inf", "-inf"


def _bounds_to_json(values: np.ndarray) -> Any:
    """A Box bound as one number when uniform, else a flat list."""
    flat = np.asarray(values, np.float64).reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return _number_to_json(float(flat[0]))
    return [_number_to_json(float(v)) for v in flat]


def _bounds_from_json(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(value, list):
        return np.array([float(v) for v in value], np.float64).reshape(shape)
    return np.full(shape, float(value), np.float64)


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A ``Box`` or a ``Dict`` of ``Box`` es as JSON."""
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_json(sub) for key, sub in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _bounds_to_json(space.low),
            "high": _bounds_to_json(space.high),
        }
    raise TypeError(f"only Box and Dict spaces are described, got {type(space).__name__}.")


def space_from_json(data: Mapping[str, Any]) -> spaces.Space:
    if data["type"] == "Dict":
        return spaces.Dict({key: space_from_json(sub) for key, sub in data["spaces"].items()})
    if data["type"] == "Box":
        shape = tuple(data["shape"])
        dtype = np.dtype(data["dtype"])
        low, high = _bounds_from_json(data["low"], shape), _bounds_from_json(data["high"], shape)
        return spaces.Box(low.astype(dtype), high.astype(dtype), shape, dtype)
    raise ValueError(f"unknown space type {data['type']!r}; expected Box or Dict.")


# -- the pickle-free policy format ---------------------------------------------------------------


def save_task_policy(
    directory: str | Path,
    model,
    algo: str,
    policy_kwargs: Mapping[str, Any],
    env_config: Mapping[str, Any],
    vec_normalize=None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Saves ``model.policy`` without pickles; returns the directory.

    Args:
        directory: created if needed; an existing policy there is replaced.
        model: the SB3 algorithm (``PPO``, ``RecurrentPPO``, ``TQC``).
        algo: its name in :data:`ALGORITHMS`.
        policy_kwargs: the JSON form of the ``policy_kwargs`` it was built with
            (see :func:`policy_kwargs_from_json`).
        env_config: how to rebuild the environment: ``task`` (name or id),
            ``low_level_policy`` (a decoder directory or ``None``; it is copied
            into the policy directory), ``max_latent`` and ``env_kwargs``.
        vec_normalize: the training ``VecNormalize``, if any; its statistics are saved.
        metadata: free-form JSON facts (steps, evaluation, arguments).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_tensors(directory / WEIGHTS_FILE, model.policy.state_dict())
    normalizes = vec_normalize is not None and vec_normalize.norm_obs
    if normalizes:
        save_vec_normalize(directory, vec_normalize)
    env = {
        "env_id": resolve_task(env_config["task"]),
        "max_latent": float(env_config.get("max_latent", DEFAULT_MAX_LATENT)),
        "env_kwargs": dict(env_config.get("env_kwargs") or {}),
        "low_level_policy": None,
    }
    if env_config.get("low_level_policy") is not None:
        from mocapact_envs.policies.low_level import LowLevelPolicy, low_level_policy_path

        copy = directory / LOW_LEVEL_DIR
        source = low_level_policy_path(env_config["low_level_policy"]).resolve()
        if source != copy.resolve():
            LowLevelPolicy.load(source).save(copy)
        env["low_level_policy"] = LOW_LEVEL_DIR
    else:
        shutil.rmtree(directory / LOW_LEVEL_DIR, ignore_errors=True)
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "algo": check_algorithm(algo),
        "policy_class": ALGORITHMS[algo][1],
        "policy_kwargs": dict(policy_kwargs),
        "observation_space": space_to_json(model.policy.observation_space),
        "action_space": space_to_json(model.policy.action_space),
        "normalized_observations": bool(normalizes),
        "env": env,
        "metadata": dict(metadata or {}),
    }
    write_json(directory / CONFIG_FILE, config)
    return directory


def read_task_policy_config(directory: str | Path) -> dict[str, Any]:
    """A saved policy's ``config.json``, checked to be this format."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a saved task policy: it lacks {CONFIG_FILE} (a policy directory holds "
            f"{CONFIG_FILE} and {WEIGHTS_FILE}; train.py writes them into <run>/best_policy and <run>/final_policy)."
        )
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a task policy config: its 'format' is not {FORMAT_NAME!r}.")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {config.get('format_version')!r}; this package reads {FORMAT_VERSION}."
        )
    return config


class TaskPolicy:
    """A transfer-task policy loaded by :func:`load_task_policy`.

    ``predict`` takes the environment's raw Dict observation (one, or a batch with a
    leading axis), normalises it as training did and returns SB3's ``(action, state)``;
    ``state`` and ``episode_start`` matter only for ``recurrent_ppo``.
    """

    def __init__(self, directory: Path, config: dict[str, Any], policy, normalization: tuple | None):
        self.directory = directory
        self.config = config
        self.algo: str = config["algo"]
        self.policy = policy
        self._normalization = normalization
        self.metadata: dict[str, Any] = config["metadata"]

    @property
    def recurrent(self) -> bool:
        return self.algo == "recurrent_ppo"

    def normalize_observation(self, observation: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The observation as the policy saw it in training (``VecNormalize.normalize_obs``)."""
        observation = {key: np.asarray(value, np.float32) for key, value in observation.items()}
        if self._normalization is None:
            return observation
        tensors, settings = self._normalization
        for key in settings["norm_obs_keys"]:
            mean, var = tensors[f"obs_mean/{key}"], tensors[f"obs_var/{key}"]
            normalized = (observation[key] - mean) / np.sqrt(var + settings["epsilon"])
            observation[key] = np.clip(normalized, -settings["clip_obs"], settings["clip_obs"]).astype(np.float32)
        return observation

    def predict(
        self,
        observation: Mapping[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        return self.policy.predict(self.normalize_observation(observation), state, episode_start, deterministic)

    def make_env(self, render_mode: str | None = None, **env_overrides: Any) -> gym.Env:
        """The environment the policy was trained on (with its own copy of the low-level policy).

        ``env_overrides`` replace saved task arguments (``episode_steps``, ``width``, ...).
        """
        env = self.config["env"]
        low_level = env["low_level_policy"]
        low_level = None if low_level is None else self.directory / low_level
        kwargs = {**env["env_kwargs"], **env_overrides}
        return make_transfer_env(env["env_id"], low_level, env["max_latent"], render_mode=render_mode, **kwargs)


def load_task_policy(directory: str | Path, device: str | torch.device = "cpu") -> TaskPolicy:
    """Loads a policy :func:`save_task_policy` wrote, in evaluation mode; no pickle is read."""
    directory = Path(directory)
    config = read_task_policy_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file() and (directory / LEGACY_WEIGHTS_FILE).is_file():
        weights = directory / LEGACY_WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} lacks {WEIGHTS_FILE}; the policy was not saved completely.")
    cls = policy_class(config["algo"])
    policy = cls(
        space_from_json(config["observation_space"]),
        space_from_json(config["action_space"]),
        lambda _progress: 0.0,  # the optimizer's schedule: unused when only acting
        **policy_kwargs_from_json(config["policy_kwargs"]),
    )
    policy.load_state_dict(read_tensors(weights))
    policy = policy.to(device)
    policy.set_training_mode(False)
    normalization = read_vec_normalize(directory) if config["normalized_observations"] else None
    return TaskPolicy(directory, config, policy, normalization)


# -- evaluation and learning curves ------------------------------------------------------------


def run_task_episodes(
    policy: TaskPolicy,
    env: gym.Env,
    num_episodes: int,
    seed: int = 0,
    deterministic: bool = True,
    on_frame: Callable[[np.ndarray], None] | None = None,
) -> list[dict[str, float]]:
    """Runs ``num_episodes`` episodes (the first reset seeded ``seed``, then ``seed + 1``, ...).

    Returns each episode's ``return`` and ``length``. ``on_frame`` gets
    ``env.render()`` after every reset and step (the env needs ``render_mode="rgb_array"``).
    """
    episodes = []
    for episode in range(num_episodes):
        observation, _ = env.reset(seed=seed + episode)
        state, episode_start = None, np.ones((1,), dtype=bool)
        if on_frame is not None:
            on_frame(env.render())
        total, length, done = 0.0, 0, False
        while not done:
            action, state = policy.predict(observation, state, episode_start, deterministic)
            observation, reward, terminated, truncated, _ = env.step(action)
            episode_start = np.zeros((1,), dtype=bool)
            total, length, done = total + float(reward), length + 1, terminated or truncated
            if on_frame is not None:
                on_frame(env.render())
        episodes.append({"return": total, "length": length})
    return episodes


#: TensorBoard tags train.py writes at each evaluation.
EVAL_RETURN_TAG, EVAL_LENGTH_TAG, EVAL_MINUTES_TAG = "eval/mean_reward", "eval/mean_ep_length", "eval/training_minutes"


def read_learning_curve(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The evaluations a training run logged: ``steps``, ``mean_return``, ``mean_length`` and ``minutes``.

    Reads ``<run_dir>/tb`` (or ``run_dir`` itself when it holds the event files).
    Points a crashed run logged after its last checkpoint are dropped, as the
    resumed run marks its restart step.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    tb_dir = run_dir / TENSORBOARD_DIR if (run_dir / TENSORBOARD_DIR).is_dir() else run_dir
    if not any(tb_dir.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"no TensorBoard event files in {tb_dir} (train.py writes them to <run>/tb).")
    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    if EVAL_RETURN_TAG not in tags:
        raise ValueError(f"{tb_dir} has no {EVAL_RETURN_TAG!r} scalars yet (no evaluation has run).")
    curves = {}
    for name, tag in (
        ("mean_return", EVAL_RETURN_TAG),
        ("mean_length", EVAL_LENGTH_TAG),
        ("minutes", EVAL_MINUTES_TAG),
    ):
        curves[name] = {event.step: event.value for event in accumulator.Scalars(tag)} if tag in tags else {}
    steps = sorted(curves["mean_return"])
    return {
        "steps": np.array(steps, np.int64),
        **{name: np.array([values.get(s, np.nan) for s in steps], np.float64) for name, values in curves.items()},
    }
