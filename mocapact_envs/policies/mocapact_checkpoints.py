"""MoCapAct's published models, converted into this package's pickle-free policy formats.

MoCapAct publishes its multi-clip policies and its GPT as PyTorch Lightning ``.ckpt``
files (``torch.save`` of a dict with ``state_dict`` and ``hyper_parameters``) that
pickle MoCapAct's own classes, gym spaces and SB3 running statistics, and its
transfer-task policies as stable-baselines3 zips with a pickled ``vecnormalize.pkl``.
Here they are read with allow-list unpicklers (:class:`~mocapact_envs.policies.sb3_compat.AllowListUnpickler`:
no MoCapAct code, no class outside the list, never arbitrary code) and mapped onto:

* ``NpmpPolicy`` -> :class:`~mocapact_envs.policies.multiclip.MultiClipPolicy` (kind ``npmp``),
  and its decoder -> :class:`~mocapact_envs.policies.low_level.LowLevelPolicy`;
* ``MlpPolicy`` -> :class:`~mocapact_envs.policies.multiclip.MultiClipPolicy` (kind ``mlp``);
* ``GPTPolicy`` -> :class:`~mocapact_envs.policies.gpt.GPTPolicy`;
* a transfer policy directory (``best_model.zip``, ``vecnormalize.pkl`` and, with a
  low-level policy, ``low_level_policy.ckpt``) -> the task-policy directory of
  :mod:`mocapact_envs.training.task_policies`, by :mod:`mocapact_envs.tools.convert_models` (which also
  converts whole downloads: ``mocapact-convert-models``).

Weights keep MoCapAct's numbers; observation statistics become the policies'
normalisers (``(x - mean) / sqrt(var + 1e-8)``, as MoCapAct's features extractor);
the observable keys keep MoCapAct's concatenation order and the checkpoint's widths
and reference steps are recorded, so an environment of another layout is an error
(``MultiClipPolicy.check_environment``, the policies' ``flatten_observation``), not
silent garbage. MoCapAct's ``predict`` samples only the NPMP latent, never action
noise: converted multi-clip policies record ``action_noise=False``.
"""

from __future__ import annotations

import io
import json
import pickle
import types
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mocapact_envs.policies.gpt import GPTConfig, GPTPolicy
from mocapact_envs.policies.low_level import ACTIVATIONS, activation_name
from mocapact_envs.policies.multiclip import MultiClipPolicy, MultiClipPolicyConfig
from mocapact_envs.policies.sb3_compat import (
    AllowListUnpickler,
    sb3_allowed_globals,
)

#: MoCapAct's velocity-control task observable, by this package's name.
OBSERVABLE_ALIASES = {"target_obs": "task/velocity_command"}
#: MoCapAct's features extractor divides by ``sqrt(var + 1e-8)``; these keys it never normalises.
NORMALIZER_EPSILON, UNNORMALIZED_KEYS = 1e-8, ("walker/clip_id", "embedding")
#: Where each converted model goes inside its output directory.
POLICY_DIR, LOW_LEVEL_DIR, REPORT_FILE = "policy", "low_level_policy", "conversion_report.json"
TRANSFER_FILES = ("best_model.zip", "vecnormalize.pkl")


class ConversionError(ValueError):
    """A MoCapAct file that cannot be converted, with the file and the reason."""


# -- reading Lightning checkpoints without MoCapAct ------------------------------------------


class _ConfigDictState:
    """Stands in for ml_collections' ``ConfigDict`` (MoCapAct's observable groups): keeps its fields."""

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.fields = dict(state.get("_fields", {}))


@dataclass(frozen=True)
class ClassReference:
    """A class a checkpoint only names (MoCapAct's features extractor, an optimizer); never built."""

    module: str
    name: str

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"would build {self.module}.{self.name}, which is only ever named here; refused.")


#: Classes Lightning checkpoints of MoCapAct's policies store as hyperparameter values.
_NAMED_ONLY = (
    ("mocapact.sb3.features_extractor", "CmuHumanoidFeaturesExtractor"),
    ("torch.optim.adam", "Adam"),
    ("torch.optim.adamw", "AdamW"),
    ("torch.optim.sgd", "SGD"),
    ("torch.optim.lr_scheduler", "StepLR"),
    ("torch.optim.lr_scheduler", "ExponentialLR"),
)


def _checkpoint_globals() -> dict[tuple[str, str], Any]:
    table = sb3_allowed_globals()
    rebuild = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state")
    table.update({("torch._utils", name): getattr(torch._utils, name) for name in rebuild})
    dtypes = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
    table.update({("torch", name): getattr(torch, name) for name in dtypes})
    table.update(
        {
            ("torch", "Size"): torch.Size,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("datetime", "timedelta"): timedelta,
            ("ml_collections.config_dict.config_dict", "ConfigDict"): _ConfigDictState,
            ("pytorch_lightning.utilities.parsing", "AttributeDict"): dict,
        }
    )
    table.update({key: ClassReference(*key) for key in _NAMED_ONLY})
    return table


class _CheckpointUnpickler(AllowListUnpickler):
    allowed = _checkpoint_globals()
    holds = "a Lightning checkpoint of a MoCapAct policy"


def _load_with_checkpoint_unpickler(file, **kwargs):
    return _CheckpointUnpickler(file, **kwargs).load()


#: What ``torch.load(pickle_module=...)`` needs: torch resolves tensor storages, the list the rest.
_CHECKPOINT_PICKLE = types.SimpleNamespace(
    __name__="mocapact_checkpoint_pickle", Unpickler=_CheckpointUnpickler, load=_load_with_checkpoint_unpickler
)


def read_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """A MoCapAct Lightning checkpoint as plain data: ``state_dict`` tensors and ``hyper_parameters``.

    Raises :class:`ConversionError` naming the file when it is missing, truncated, not a
    ``torch.save`` zip, or refers to a class outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist.")
    if not zipfile.is_zipfile(path):
        raise ConversionError(
            f"{path} is not a PyTorch checkpoint: torch.save writes a zip archive and this is none "
            "(a truncated download, or another kind of file)."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_CHECKPOINT_PICKLE)
    except pickle.UnpicklingError as error:
        raise ConversionError(f"{path} {error}") from None
    except Exception as error:  # torch and zipfile raise many types for damaged archives
        raise ConversionError(f"{path} cannot be read as a PyTorch checkpoint: {error}") from error
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(checkpoint):
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(
            f"{path} is not a Lightning checkpoint of a MoCapAct policy: it lacks state_dict and "
            f"hyper_parameters (it holds {found})."
        )
    return checkpoint


# -- mapping distillation checkpoints -----------------------------------------------------------


def _plain(value: Any) -> Any:
    """ConfigDict stand-ins and tuples as plain dicts and lists."""
    if isinstance(value, _ConfigDictState):
        value = value.fields
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def checkpoint_kind(state_dict: Mapping[str, Any], source: str) -> str:
    """``npmp``, ``mlp`` or ``gpt`` from a MoCapAct policy's parameter names."""
    names = set(state_dict)

    def has(prefix: str) -> bool:
        return any(n.startswith(prefix) for n in names)

    if has("reference_encoder.encoder.") and has("action_decoder."):
        return "npmp"
    if has("gpt."):
        return "gpt"
    if has("mlp.") and not has("reference_encoder."):
        return "mlp"
    if has("gating_net.") or has("primitives."):
        raise ConversionError(f"{source} holds MoCapAct's McpPolicy, which has no counterpart in this package.")
    if has("reference_encoder.") and has("action_decoder."):
        raise ConversionError(
            f"{source} holds MoCapAct's HierarchicalMlpPolicy (unfinished in MoCapAct, never published), "
            "which has no counterpart in this package."
        )
    raise ConversionError(
        f"{source} holds no MoCapAct NpmpPolicy, MlpPolicy or GPTPolicy; its parameters start {sorted(names)[:6]}."
    )


@dataclass(frozen=True)
class ObservationLayout:
    """MoCapAct's observation for one network: keys in concatenation order, widths, normaliser."""

    keys: tuple[str, ...]
    sizes: tuple[int, ...]
    mean: np.ndarray
    std: np.ndarray


def observation_layout(hyper_parameters: Mapping[str, Any], keys: Sequence[str], source: str) -> ObservationLayout:
    """Widths from the checkpoint's observation space; mean and std from its ``obs_rms`` (identity if none)."""
    space = hyper_parameters.get("observation_space")
    spaces_by_key = getattr(space, "spaces", None)
    if spaces_by_key is None:
        raise ConversionError(f"{source} records no Dict observation space; cannot tell the observables' widths.")
    missing = [k for k in keys if k not in spaces_by_key]
    if missing:
        raise ConversionError(f"{source}: the policy reads {missing}, which its observation space lacks.")
    sizes = tuple(int(np.prod(spaces_by_key[k].shape)) for k in keys)
    obs_rms = (hyper_parameters.get("features_extractor_kwargs") or {}).get("obs_rms")
    means, stds = [], []
    for key, size in zip(keys, sizes, strict=True):
        if obs_rms is None or key in UNNORMALIZED_KEYS:
            means.append(np.zeros(size))
            stds.append(np.ones(size))
            continue
        if key not in obs_rms:
            raise ConversionError(f"{source}: the observation statistics lack {key!r}.")
        mean, var = np.asarray(obs_rms[key].mean), np.asarray(obs_rms[key].var)
        if mean.shape != (size,) or var.shape != (size,):
            raise ConversionError(f"{source}: the statistics of {key!r} have shape {mean.shape}, not ({size},).")
        means.append(mean)
        stds.append(np.sqrt(var + NORMALIZER_EPSILON))  # in float64, then float32: as MoCapAct's extractor
    return ObservationLayout(
        tuple(keys), sizes, np.concatenate(means).astype(np.float32), np.concatenate(stds).astype(np.float32)
    )


def _observable_keys(hyper_parameters: Mapping[str, Any]) -> Any:
    extractor = hyper_parameters.get("features_extractor_kwargs") or {}
    return _plain(extractor.get("observable_keys", hyper_parameters.get("observables")))


def _activation(hyper_parameters: Mapping[str, Any], source: str) -> str:
    saved = str(hyper_parameters.get("activation_fn", "torch.nn.Tanh"))
    name = activation_name(saved)
    if name is None:
        known = ", ".join(f"torch.nn.{module.__name__}" for module in ACTIVATIONS.values())
        raise ConversionError(f"{source}: activation {saved!r} has no counterpart; known: {known}.")
    return name


def _ref_steps(hyper_parameters: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(s) for s in np.asarray(hyper_parameters.get("ref_steps", (1, 2, 3, 4, 5))).reshape(-1))


def _action_size(hyper_parameters: Mapping[str, Any], source: str) -> int:
    space = hyper_parameters.get("action_space")
    if space is None or len(getattr(space, "shape", ())) != 1:
        raise ConversionError(f"{source} records no one-dimensional action space.")
    return int(space.shape[0])


def copy_parameters(policy: torch.nn.Module, mapped: Mapping[str, torch.Tensor], source: str) -> None:
    """Loads ``mapped`` (this package's names) into ``policy``: every parameter, right shapes; buffers stay."""
    target = policy.state_dict()
    parameters = {name for name, _ in policy.named_parameters()}
    missing = sorted(parameters - set(mapped))
    unknown = sorted(set(mapped) - set(target))
    if missing or unknown:
        raise ConversionError(
            f"{source}: the weights do not match the architecture (missing {missing}, extra {unknown})."
        )
    for name, tensor in mapped.items():
        if tuple(tensor.shape) != tuple(target[name].shape):
            raise ConversionError(
                f"{source}: {name} has shape {tuple(tensor.shape)} in the checkpoint, {tuple(target[name].shape)} "
                "in the architecture its hyperparameters describe."
            )
    policy.load_state_dict({**target, **{k: v.to(target[k].dtype) for k, v in mapped.items()}})


def _take(state_dict: dict[str, torch.Tensor], prefix: str, new_prefix: str) -> dict[str, torch.Tensor]:
    """Moves the entries under ``prefix`` out of ``state_dict``, renamed under ``new_prefix``."""
    taken = {}
    for name in [n for n in state_dict if n.startswith(prefix)]:
        taken[new_prefix + name[len(prefix) :]] = state_dict.pop(name)
    return taken


def _no_leftovers(state_dict: Mapping[str, Any], source: str) -> None:
    if state_dict:
        raise ConversionError(
            f"{source}: parameters {sorted(state_dict)} have no counterpart; refusing a partial copy."
        )


def _multiclip_from_checkpoint(
    kind: str, state_dict: dict[str, torch.Tensor], hp: Mapping[str, Any], source: str
) -> MultiClipPolicy:
    observables = _observable_keys(hp)
    common = {
        "kind": kind,
        "action_size": _action_size(hp, source),
        "action_std": float(hp.get("std_dev", 0.1)),
        "ref_steps": _ref_steps(hp),
        "activation": _activation(hp, source),
        "squash_output": bool(hp.get("squash_output", False)),
        "action_noise": False,
        "extra": {"converted_from": source, "mocapact_class": {"npmp": "NpmpPolicy", "mlp": "MlpPolicy"}[kind]},
    }
    if kind == "npmp":
        if not isinstance(observables, Mapping) or not {"ref_encoder", "decoder"} <= set(observables):
            raise ConversionError(
                f"{source}: an NpmpPolicy needs 'ref_encoder' and 'decoder' observables, got {observables}."
            )
        layout = observation_layout(hp, observables["ref_encoder"], source)
        recurrent = bool(hp.get("recurrent_encoder", True))
        config = MultiClipPolicyConfig(
            **common,
            observation_keys=layout.keys,
            observation_sizes=layout.sizes,
            decoder_observation_keys=tuple(observables["decoder"]),
            latent_size=int(hp.get("embed_size", 60)),
            encoder_hidden_sizes=(int(hp.get("ref_encoder_layer_size", 1024)),)
            * int(hp.get("ref_encoder_n_layers", 2)),
            decoder_hidden_sizes=(int(hp.get("decoder_layer_size", 1024)),) * int(hp.get("decoder_n_layers", 3)),
            layer_norm=bool(hp.get("layer_norm", False)),
            recurrent_encoder=recurrent,
            prior_alpha=float(hp.get("embedding_correlation", 0.95)) if recurrent else 0.0,
            min_latent_std=1e-5,
        )
        mapped = {**_take(state_dict, "reference_encoder.encoder.", "encoder."),
                  **_take(state_dict, "action_decoder.", "decoder.mlp.")}  # fmt: skip
    else:
        if not isinstance(observables, list):
            raise ConversionError(f"{source}: an MlpPolicy reads a list of observables, got {observables}.")
        layout = observation_layout(hp, observables, source)
        config = MultiClipPolicyConfig(
            **common,
            observation_keys=layout.keys,
            observation_sizes=layout.sizes,
            decoder_observation_keys=(),
            mlp_hidden_sizes=(int(hp.get("layer_size", 1024)),) * int(hp.get("n_layers", 3)),
            layer_norm=False,  # MlpPolicy uses SB3's create_mlp, which has none
        )
        mapped = _take(state_dict, "mlp.", "mlp.")
    _no_leftovers(state_dict, source)
    try:
        policy = MultiClipPolicy(config)
    except ValueError as error:
        raise ConversionError(f"{source}: {error}") from error
    copy_parameters(policy, mapped, source)
    policy.set_observation_statistics(layout.mean, layout.std)
    return policy.eval()


def _is_causal(mask: torch.Tensor) -> bool:
    """Whether MoCapAct's ``(1, 1, T, T)`` attention mask is the lower triangle, as the fused attention assumes."""
    square = mask.reshape(mask.shape[-2:]) != 0
    return bool(torch.equal(square, torch.ones_like(square).tril()))


def _gpt_from_checkpoint(state_dict: dict[str, torch.Tensor], hp: Mapping[str, Any], source: str) -> GPTPolicy:
    observables = _observable_keys(hp)
    if not isinstance(observables, list):
        raise ConversionError(f"{source}: a GPTPolicy reads a list of observables, got {observables}.")
    layout = observation_layout(hp, observables, source)
    config = GPTConfig(
        observation_keys=layout.keys,
        observation_sizes=layout.sizes,
        observation_size=sum(layout.sizes),
        action_size=_action_size(hp, source),
        action_std=float(hp.get("std_dev", 0.1)),
        context_length=int(hp.get("block_size", 16)),
        layers=int(hp.get("n_layer", 4)),
        heads=int(hp.get("n_head", 4)),
        width=int(hp.get("n_embd", 768)),
        dropout=float(hp.get("resid_pdrop", 0.1)),
        extra={"converted_from": source, "mocapact_class": "GPTPolicy"},
    )
    mapped = {
        **_take(state_dict, "gpt.tok_emb.", "token."),
        **_take(state_dict, "gpt.ln_f.", "ln_final."),
        **_take(state_dict, "gpt.head.", "head."),
    }
    if "gpt.pos_emb" in state_dict:
        mapped["position"] = state_dict.pop("gpt.pos_emb")
    for layer in range(config.layers):
        old, new = f"gpt.blocks.{layer}.", f"blocks.{layer}."
        mask = state_dict.pop(old + "attn.mask", None)
        if mask is not None and not _is_causal(mask):
            raise ConversionError(f"{source}: {old}attn.mask is not causal; this GPT would attend to the future.")
        for part in ("weight", "bias"):
            # MoCapAct projects queries, keys and values separately; here one layer does all three.
            q, k, v = (state_dict.pop(f"{old}attn.{name}.{part}") for name in ("query", "key", "value"))
            mapped[f"{new}attention.qkv.{part}"] = torch.cat([q, k, v], dim=0)
        mapped.update(_take(state_dict, old + "attn.proj.", new + "attention.proj."))
        mapped.update(_take(state_dict, old + "ln1.", new + "ln1."))
        mapped.update(_take(state_dict, old + "ln2.", new + "ln2."))
        mapped.update(_take(state_dict, old + "mlp.", new + "mlp."))
    _no_leftovers(state_dict, source)
    policy = GPTPolicy(config)
    copy_parameters(policy, mapped, source)
    policy.set_observation_statistics(layout.mean, layout.std)
    return policy.eval()


def policy_from_checkpoint(checkpoint: Mapping[str, Any], source: str = "the checkpoint"):
    """This package's policy from a MoCapAct checkpoint's ``state_dict`` and ``hyper_parameters``.

    Returns a :class:`MultiClipPolicy` (NpmpPolicy, MlpPolicy) or a :class:`GPTPolicy`, in
    evaluation mode. ``source`` names the checkpoint in errors and in the saved config.
    """
    state_dict = {k: v for k, v in checkpoint["state_dict"].items()}
    hp = checkpoint["hyper_parameters"]
    kind = checkpoint_kind(state_dict, source)
    if kind == "gpt":
        return _gpt_from_checkpoint(state_dict, hp, source)
    return _multiclip_from_checkpoint(kind, state_dict, hp, source)


def convert_checkpoint(path: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """Converts one ``.ckpt`` into ``output_dir/policy`` (and, for an NPMP, ``output_dir/low_level_policy``)."""
    path, output_dir = Path(path), Path(output_dir)
    policy = policy_from_checkpoint(read_lightning_checkpoint(path), source=str(path))
    written = {POLICY_DIR: str(policy.save(output_dir / POLICY_DIR))}
    kind = policy.config.kind if isinstance(policy, MultiClipPolicy) else "gpt"
    if kind == "npmp":
        written[LOW_LEVEL_DIR] = str(policy.export_low_level_policy(output_dir / LOW_LEVEL_DIR))
    return {"source": str(path), "kind": kind, "written": written}


def low_level_policy_from_checkpoint(path: str | Path):
    """The decoder of a MoCapAct NPMP checkpoint as a :class:`~mocapact_envs.policies.low_level.LowLevelPolicy`."""
    policy = policy_from_checkpoint(read_lightning_checkpoint(path), source=str(path))
    if not isinstance(policy, MultiClipPolicy) or policy.config.kind != "npmp":
        raise ConversionError(f"{path} is not an NpmpPolicy checkpoint; only an NPMP has a low-level policy.")
    return policy.decoder


# -- transfer-task policies (SB3 zips) --------------------------------------------------------------


def read_sb3_zip(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The readable JSON ``data`` and the ``policy.pth`` weights of an SB3 zip (weights-only torch load)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist.")
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data").decode())
            weights = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, pickle.UnpicklingError, RuntimeError) as error:
        raise ConversionError(
            f"{path} is not a readable stable-baselines3 zip (data and policy.pth): {error}"
        ) from error
    return data, dict(weights)
