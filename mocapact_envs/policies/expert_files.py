"""Clip experts on disk: saving ours, loading ours and MoCapAct's published ones.

Our format, one folder (``<run>/eval_rsi/model/``):

* ``config.json``: format name and version, the network's arguments, the
  observation keys in concatenation order with their sizes, the action std,
  the normalisers' settings and the snippet the expert tracks;
* ``model.safetensors``: the actor-critic's weights (``log_std`` included), float32, or
  stored compactly (the zoo's copies, :func:`compact_weights`): float16, or int8
  matrices with a float32 scale per row (``<key>.int8_row_scale``); loaded as float32;
* ``normalizer.safetensors``: the observation statistics (``obs_mean``,
  ``obs_var``, ``obs_count``) and the reward scaler's return statistics
  (``return_mean``, ``return_var``, ``return_count``), which undo the critic's
  reward scaling;
* format version 2, experts trained with reference-residual actions: ``config.json``'s
  ``action_offset`` names the snippet whose reference actions (``mocapact_envs.tasks.reference_actions``)
  are added to the network's output at the step that the ``walker/time_in_clip``
  observation gives, with a digest of that table. The table is computed from the mocap
  source when the expert loads (it is the clip's motion: nothing derived from the clips
  is stored) and must match the digest. Callers see absolute actions either way.

Nothing is pickled. MoCapAct's experts (stable-baselines3 ``best_model.zip`` plus
``vecnormalize.pkl``, written with gym < 0.24 and SB3 1.x) load through
stable-baselines3 without any object in them being unpickled by cloudpickle:
every serialized entry of the zip is replaced, and ``vecnormalize.pkl`` is read
by a restricted unpickler that knows only the classes such a file holds.

Assumed about MoCapAct's policy class: it is SB3's ``MultiInputPolicy`` with
``mocapact.sb3.features_extractor.CmuHumanoidFeaturesExtractor``, which has no
weights and concatenates the observation keys of its ``observable_keys``
argument in that order (MoCapAct's ``TIME_INDEX_OBSERVABLES`` unless the zip
says otherwise). ``policies.sb3_compat.ConcatKeysExtractor`` does the same. Observations are
normalised with ``vecnormalize.pkl``'s statistics as ``VecNormalize`` did during
training (clipped at its ``clip_obs``); MoCapAct's own loader skipped the clip.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mocapact_envs.extras import needs_extra
from mocapact_envs.files import read_arrays, read_json, read_tensors, replace_atomically
from mocapact_envs.policies.relay import RELAY_FORMAT_NAME, RelayExpert, relay_plan_from_config
from mocapact_envs.policies.run_layout import PRETRAINED, find_zoo_expert, shipped_expert

# torch (and SB3) load on first use: importing the package stays light.
if TYPE_CHECKING:
    from mocapact_envs.policies.expert_networks import ExpertActorCritic, ObservationNormalizer, RunningMeanStd
    from mocapact_envs.tasks.reference_actions import ReferenceActions

FORMAT_NAME = "mocapact-envs-expert"
#: Version 2 adds reference actions; experts without them are still written as version 1.
FORMAT_VERSION = 2
CONFIG_FILE, WEIGHTS_FILE, NORMALIZER_FILE = "config.json", "model.safetensors", "normalizer.safetensors"
SB3_MODEL_FILE, SB3_VECNORMALIZE_FILE = "best_model.zip", "vecnormalize.pkl"

# -- our format --------------------------------------------------------------------


def save_expert(
    model_dir: str | Path,
    policy: ExpertActorCritic,
    obs_normalizer: ObservationNormalizer,
    observation_keys: Sequence[str],
    observation_sizes: Sequence[int],
    return_rms: RunningMeanStd | None = None,
    reward_normalization: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    reference_actions: ReferenceActions | None = None,
) -> Path:
    """Saves an expert in our pickle-free format; ``config.json`` is written last.

    ``reference_actions``: the snippet's reference actions the policy's output is added to
    (experts trained with ``action_parameterization="reference_residual"``).
    """
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file as save_torch

    from mocapact_envs.policies.expert_networks import RunningMeanStd

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    replace_atomically(model_dir / WEIGHTS_FILE, lambda p: save_torch(weights, str(p)))
    obs_state = obs_normalizer.rms.state_dict()
    stats = {f"obs_{k}": v for k, v in obs_state.items()}
    return_state = (return_rms or RunningMeanStd(())).state_dict()
    stats.update({f"return_{k}": np.atleast_1d(v) for k, v in return_state.items()})
    replace_atomically(model_dir / NORMALIZER_FILE, lambda p: save_numpy(stats, str(p)))
    action_offset: dict[str, Any] = {}
    if reference_actions is not None:
        from mocapact_envs.tasks.reference_actions import TIME_KEY

        if TIME_KEY not in observation_keys:
            raise ValueError(
                f"an expert with reference actions must observe {TIME_KEY}; it observes {observation_keys}."
            )
        snippet_id = (metadata or {}).get("snippet_id")
        if not snippet_id:
            raise ValueError(
                "an expert with reference actions needs metadata['snippet_id'], the snippet they come from."
            )
        action_offset = {
            "action_offset": {
                "kind": "reference_actions",
                "time_key": TIME_KEY,
                "snippet_id": snippet_id,
                "num_steps": reference_actions.num_steps,
                "digest": reference_actions.digest(),
            }
        }
    config = {
        "format": FORMAT_NAME,
        "format_version": 2 if action_offset else 1,
        **action_offset,
        "network": policy.config(),
        "observation_keys": list(observation_keys),
        "observation_sizes": [int(s) for s in observation_sizes],
        "action_std": policy.log_std.exp().tolist(),
        "obs_normalization": obs_normalizer.config(),
        "reward_normalization": dict(reward_normalization or {"enabled": False}),
        **dict(metadata or {}),
    }
    replace_atomically(model_dir / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return model_dir


class Expert:
    """One of our experts: ``predict`` maps a Dict observation to actions as SB3's ``predict`` does."""

    def __init__(
        self,
        policy: ExpertActorCritic,
        obs_normalizer: ObservationNormalizer,
        observation_keys: Sequence[str],
        value_scale: float = 1.0,
        config: Mapping[str, Any] | None = None,
        path: Path | None = None,
        reference_actions: ReferenceActions | None = None,
    ):
        self.policy = policy.eval()
        self.reference_actions = reference_actions
        self.obs_normalizer = obs_normalizer
        self.observation_keys = tuple(observation_keys)
        self.value_scale = float(value_scale)
        self.config = dict(config or {})
        self.path = path

    @property
    def snippet_id(self) -> str | None:
        return self.config.get("snippet_id")

    @property
    def action_std(self) -> np.ndarray:
        return self.policy.log_std.detach().exp().numpy()

    def _normalized(self, observation: Mapping[str, Any]):
        import torch

        from mocapact_envs.tasks.observables import flatten_observation

        flat = flatten_observation(observation, self.observation_keys)
        single = flat.ndim == 1
        return torch.as_tensor(self.obs_normalizer(flat[None] if single else flat)), single

    def action_offset(self, observation: Mapping[str, Any]):
        """What the policy's output is added to: the reference actions at the observed step, or ``None``."""
        if self.reference_actions is None:
            return None
        import torch

        from mocapact_envs.tasks.reference_actions import TIME_KEY

        time_in_clip = np.asarray(observation[TIME_KEY], np.float64).reshape(-1, 1)
        return torch.as_tensor(self.reference_actions.at(time_in_clip))

    def predict(
        self,
        observation: Mapping[str, Any],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """Actions clipped to [-1, 1] for one observation (``(56,)``) or a batch (``(B, 56)``), and ``state``.

        ``observation`` is keyed as the environments key it (``"walker/joints_pos"``) or nested by key prefix, as
        Minari's recovered environments give it (``{"walker": {"joints_pos": ...}}``)."""
        import torch

        from mocapact_envs.tasks.observables import flat_keyed

        observation = flat_keyed(observation)
        x, single = self._normalized(observation)
        offset = self.action_offset(observation)
        with torch.no_grad():
            action = np.clip(self.policy.act(x, deterministic, offset).numpy(), -1.0, 1.0)
        return (action[0] if single else action), state

    def value(self, observation: Mapping[str, Any]) -> np.ndarray | float:
        """The critic's value in reward units (the reward scaling undone)."""
        import torch

        x, single = self._normalized(observation)
        with torch.no_grad():
            value = self.policy.value(x).numpy() * self.value_scale
        return float(value[0]) if single else value


#: What a config.json of our format must hold to be loaded (``obs_normalization`` with its settings).
REQUIRED_CONFIG_KEYS = ("network", "observation_keys", "observation_sizes", "obs_normalization")
REQUIRED_NORMALIZATION_KEYS = ("clip", "epsilon", "enabled")


def check_config(config: Mapping[str, Any], path: Path) -> None:
    """Names the file and the keys an expert config lacks, instead of a bare ``KeyError``."""
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    normalization = config.get("obs_normalization")
    if isinstance(normalization, Mapping):
        missing += [f"obs_normalization.{k}" for k in REQUIRED_NORMALIZATION_KEYS if k not in normalization]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(repr(k) for k in missing)}: an expert config holds "
            f"{', '.join(REQUIRED_CONFIG_KEYS)}; the file is incomplete or not an expert's (mocapact_envs "
            "writes it with save_expert)."
        )


def check_finite(arrays: Mapping[str, Any], path: Path) -> None:
    """Refuses weights or statistics holding NaN or infinity: the expert would act NaN (a diverged run,
    or a damaged file), which the environment only reports steps later."""
    for name, array in arrays.items():
        values = np.asarray(array.float() if hasattr(array, "float") else array, dtype=np.float64)
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise ValueError(
                f"{path}: {name!r} holds NaN or infinity at {bad} of its {values.size} entries; the expert is "
                "corrupt (a training run that diverged, or a damaged file)."
            )


def check_device(device: str) -> str:
    """A torch device this machine has, else a ``ValueError`` naming it and the choices (not a corrupt file)."""
    import torch

    choices = ["cpu"]
    if torch.cuda.is_available():
        choices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        choices.append("mps")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(choices)}.") from error
    available = (
        parsed.type == "cpu"
        or (parsed.type == "cuda" and torch.cuda.is_available() and (parsed.index or 0) < torch.cuda.device_count())
        or (parsed.type == "mps" and torch.backends.mps.is_available())
    )
    if not available:
        raise ValueError(f"device {device!r} is not available here; choose one of {', '.join(choices)}.")
    return device


def load_our_expert(model_dir: Path, device: str = "cpu") -> Expert | RelayExpert:
    from mocapact_envs.policies.expert_networks import ExpertActorCritic, ObservationNormalizer

    config = read_json(model_dir / CONFIG_FILE)
    if config.get("format") == RELAY_FORMAT_NAME:
        plan = relay_plan_from_config(config, model_dir / CONFIG_FILE)
        windows = [load_our_expert(model_dir / w["folder"], device) for w in config["windows"]]
        return RelayExpert(plan, windows, config, model_dir)
    if config.get("format") != FORMAT_NAME or int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{model_dir / CONFIG_FILE} is not a {FORMAT_NAME} v{FORMAT_VERSION} expert "
            f"(format {config.get('format')!r}, version {config.get('format_version')!r})."
        )
    check_config(config, model_dir / CONFIG_FILE)
    policy = ExpertActorCritic.from_config(config["network"])
    weights = expand_weights(read_tensors(model_dir / WEIGHTS_FILE, device=device))
    check_finite(weights, model_dir / WEIGHTS_FILE)
    policy.load_state_dict(weights)
    norm_config = config["obs_normalization"]
    obs_normalizer = ObservationNormalizer(
        sum(config["observation_sizes"]), norm_config["clip"], norm_config["epsilon"], norm_config["enabled"]
    )
    stats = read_arrays(model_dir / NORMALIZER_FILE)
    check_finite(stats, model_dir / NORMALIZER_FILE)
    obs_normalizer.rms.load_state_dict({k: stats[f"obs_{k}"] for k in ("mean", "var", "count")})
    reward_config = config.get("reward_normalization", {})
    value_scale = 1.0
    if reward_config.get("enabled"):
        value_scale = math.sqrt(float(stats["return_var"].reshape(-1)[0]) + float(reward_config["epsilon"]))
    reference_actions = None
    offset_kind = config.get("action_offset", {}).get("kind")
    if offset_kind is not None:
        from mocapact_envs.tasks.reference_actions import ReferenceActions

        if offset_kind != "reference_actions":
            raise ValueError(f"{model_dir / CONFIG_FILE}: unknown action_offset kind {offset_kind!r}.")
        reference_actions = ReferenceActions.for_expert(config["action_offset"], model_dir / CONFIG_FILE)
    return Expert(policy, obs_normalizer, config["observation_keys"], value_scale, config, model_dir, reference_actions)


# -- compact weights (the zoo's copies) ----------------------------------------------

#: Key suffix of the float32 per-row scales of a weight matrix stored as int8.
INT8_SCALE_SUFFIX = ".int8_row_scale"
WEIGHT_STORAGES = ("float32", "float16", "int8")


def compact_weights(state: Mapping[str, Any], storage: Mapping[str, str]) -> dict[str, Any]:
    """``state``'s tensors as stored compactly; :func:`expand_weights` gives float32 tensors back.

    ``storage`` maps a key prefix (``actor_mean``, ``critic``) to ``float32``, ``float16`` or ``int8``
    (matrices rounded symmetrically per output row, with a float32 scale per row; vectors as float16);
    keys that no prefix names stay as they are.
    """
    import torch

    stored = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        kind = next((kind for prefix, kind in storage.items() if key.startswith(f"{prefix}.")), None)
        if kind not in (None, *WEIGHT_STORAGES):
            raise ValueError(f"unknown weight storage {kind!r} for {key}; choose one of {', '.join(WEIGHT_STORAGES)}.")
        if kind == "int8" and tensor.dim() == 2:
            scale = tensor.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / 127
            stored[key] = torch.round(tensor / scale).clamp(-127, 127).to(torch.int8)
            stored[f"{key}{INT8_SCALE_SUFFIX}"] = scale.float()
        elif kind in ("float16", "int8"):
            stored[key] = tensor.half()
        else:
            stored[key] = tensor.float() if kind == "float32" else tensor
    return stored


def expand_weights(stored: Mapping[str, Any]) -> dict[str, Any]:
    """Float32 tensors from weights stored as float32, float16 or int8 with row scales (:func:`compact_weights`)."""
    scales = {k.removesuffix(INT8_SCALE_SUFFIX): v for k, v in stored.items() if k.endswith(INT8_SCALE_SUFFIX)}
    return {
        key: tensor.float() * scales[key] if key in scales else tensor.float()
        for key, tensor in stored.items()
        if not key.endswith(INT8_SCALE_SUFFIX)
    }


# -- stable-baselines3 format (MoCapAct's published experts) ------------------------


class SB3Expert:
    """A stable-baselines3 PPO expert with its ``VecNormalize`` statistics; same ``predict`` as :class:`Expert`."""

    def __init__(self, model, vec_normalize=None, path: Path | None = None):
        self.model = model
        self.vec_normalize = vec_normalize
        self.path = path
        space = model.observation_space
        self.observation_keys = tuple(space.spaces) if hasattr(space, "spaces") else None

    def normalize(self, observation: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The observation's keys the model uses (flat or nested by key prefix), normalised as ``VecNormalize`` did
        in training."""
        from mocapact_envs.tasks.observables import flat_keyed

        observation = flat_keyed(observation)
        observation = {k: np.asarray(observation[k], np.float32) for k in self.observation_keys}
        if self.vec_normalize is None:
            return observation
        return self.vec_normalize.normalize_obs(observation)

    def predict(
        self,
        observation: Mapping[str, Any],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        return self.model.predict(self.normalize(observation), state, episode_start, deterministic)

    def value(self, observation: Mapping[str, Any]) -> np.ndarray | float:
        """The critic's value in reward units (``VecNormalize``'s reward scaling undone)."""
        import torch

        obs_tensor, vectorized = self.model.policy.obs_to_tensor(self.normalize(observation))
        with torch.no_grad():
            value = self.model.policy.predict_values(obs_tensor).cpu().numpy().reshape(-1)
        vn = self.vec_normalize
        if vn is not None and getattr(vn, "norm_reward", False):
            value = value * np.sqrt(vn.ret_rms.var + vn.epsilon)
        return value if vectorized else float(value[0])


def load_sb3_expert(model_dir: Path, device: str = "cpu") -> SB3Expert:
    """Loads ``best_model.zip`` (+ ``vecnormalize.pkl``) with ``PPO.load``, unpickling nothing from the zip."""
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy

    from mocapact_envs.policies.sb3_compat import (
        MOCAPACT_TIME_INDEX_KEYS,
        load_vecnormalize,
        policy_kwargs_from_saved,
    )

    zip_path = model_dir / SB3_MODEL_FILE
    vecnormalize_path = model_dir / SB3_VECNORMALIZE_FILE
    vec_normalize = load_vecnormalize(vecnormalize_path) if vecnormalize_path.is_file() else None
    with zipfile.ZipFile(zip_path) as archive:
        data = json.loads(archive.read("data").decode())
    policy_kwargs = policy_kwargs_from_saved(data.get("policy_kwargs", {}))

    # The spaces: from the normalisation statistics (one per key), else MoCapAct's known sizes.
    obs_rms = getattr(vec_normalize, "obs_rms", None)
    if isinstance(obs_rms, dict):
        sizes = {k: int(np.prod(rms.mean.shape)) for k, rms in obs_rms.items()}
    else:
        keys = policy_kwargs.get("features_extractor_kwargs", {}).get("observable_keys", MOCAPACT_TIME_INDEX_KEYS)
        unknown = [k for k in keys if k not in MOCAPACT_TIME_INDEX_KEYS]
        if unknown:
            raise ValueError(f"{zip_path}: no vecnormalize.pkl to tell the sizes of observation keys {unknown}.")
        sizes = {k: MOCAPACT_TIME_INDEX_KEYS[k] for k in keys}
    observation_space = gym.spaces.Dict(
        {k: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32) for k, n in sizes.items()}
    )
    action_shape = data.get("action_space", {}).get("_shape") or data.get("action_space", {}).get("shape") or [56]
    action_space = gym.spaces.Box(-1.0, 1.0, tuple(action_shape), np.float32)

    # Every cloudpickled entry is replaced: nothing of the old gym or mocapact is needed.
    custom_objects: dict[str, Any] = {
        key: None for key, item in data.items() if isinstance(item, dict) and ":serialized:" in item
    }
    custom_objects.update(
        policy_class=MultiInputActorCriticPolicy,
        policy_kwargs=policy_kwargs,
        observation_space=observation_space,
        action_space=action_space,
        lr_schedule=lambda _: 0.0,
        learning_rate=0.0,
        clip_range=0.0,
    )
    model = PPO.load(zip_path, device=device, custom_objects=custom_objects)
    check_finite(dict(model.policy.state_dict()), zip_path)
    return SB3Expert(model, vec_normalize, model_dir)


# -- one entry point -----------------------------------------------------------------


def find_model_dir(path: str | Path) -> Path:
    """The model folder under ``path``: a run (seed) folder, ``eval_rsi``/``eval_start`` or the model folder.

    A run folder prefers ``eval_rsi`` (MoCapAct published those); a file inside a
    model folder stands for its folder.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no expert at {path}: the path does not exist.")
    if path.is_file():
        path = path.parent
    for candidate in (path, path / "model", path / "eval_rsi" / "model", path / "eval_start" / "model"):
        if (candidate / CONFIG_FILE).is_file() or (candidate / SB3_MODEL_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"no expert under {path}: looked for {CONFIG_FILE} (ours) or {SB3_MODEL_FILE} (stable-baselines3) in it, "
        "in model/, eval_rsi/model/ and eval_start/model/."
    )


@needs_extra("load_expert")
def load_expert(
    path: str | Path, snippet_id: str | None = None, device: str = "cpu"
) -> Expert | RelayExpert | SB3Expert:
    """Loads a clip expert: ours or MoCapAct's (stable-baselines3) from a run, eval or model folder.

    ``"pretrained"`` is the expert shipped with the package (``CMU_016_22-0-82``; with ``snippet_id``, that
    snippet's shipped expert); a folder of that name is ``./pretrained``. With ``snippet_id``, ``path`` is an
    expert zoo (its folder or its ``experts`` folder; ``"zoo"`` alone is the project's zoo: ``$MOCAPACT_ZOO``,
    else the checkout's ``zoo/``, :func:`mocapact_envs.policies.run_layout.zoo_root`) and the expert is that
    snippet's. The result has ``predict(observation, deterministic=True) -> (action, state)``
    for one Dict observation or a batch of them, and ``value(observation)``. Needs the ``[train]`` extra (torch).
    """
    check_device(device)  # before any file is read: a bad device is not a corrupt file
    if isinstance(path, str) and path == PRETRAINED:
        path = shipped_expert(snippet_id)
    elif snippet_id is not None:
        path = find_zoo_expert(path, snippet_id).run_dir
    model_dir = find_model_dir(path)
    if (model_dir / CONFIG_FILE).is_file():
        return load_our_expert(model_dir, device)
    return load_sb3_expert(model_dir, device)
