"""The NPMP low-level policy (decoder) and its pickle-free file format.

MoCapAct's NPMP decoder maps the 205-dim base proprioception and a latent motor
intention ``z`` to the mean of the 56 actuator targets: the observation is
normalised with dataset statistics, concatenated with ``z``, and passed through an
MLP whose hidden layers are Linear -> LayerNorm -> ELU, with a linear output (no
tanh). A transfer-task policy then chooses ``z`` instead of actions.

A saved policy is a directory:

* ``model.safetensors``: the MLP weights and the normaliser's ``observation_mean``
  and ``observation_std`` buffers;
* ``config.json``: the format name and version and the architecture (observation
  keys and sizes, latent size, action size, hidden sizes, activation, layer norm,
  whether a tanh squashes the output).

Each file is written under a temporary name and renamed into place, the config
last, so a reader never sees a half-written policy. Nothing is pickled: MoCapAct's
pickled checkpoints stopped loading on torch >= 2.6.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mocapact_envs.policies.saving import SavedInDirectory
from mocapact_envs.tasks.observables import BASE, flat_keyed, flatten_observation

FORMAT_NAME = "mocapact_envs.low_level_policy"
FORMAT_VERSION = 1
ACTIVATIONS: dict[str, type[nn.Module]] = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh}


def check_activation(name: str) -> str:
    """``name`` when it is one of :data:`ACTIVATIONS`; else a ``ValueError`` naming it and the choices."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}.")
    return name


def activation_name(activation: str | type) -> str | None:
    """The :data:`ACTIVATIONS` name of a torch activation class, or of its ``torch.nn.<Class>`` name (as
    MoCapAct's hyper-parameters store it); ``None`` for one without a counterpart here."""
    for name, module in ACTIVATIONS.items():
        if activation is module or activation == f"torch.nn.{module.__name__}":
            return name
    return None


#: MoCapAct's latent sizes: the general decoder and the one distilled from locomotion clips.
GENERAL_LATENT_SIZE, LOCOMOTION_LATENT_SIZE = 60, 20


def build_mlp(
    in_size: int,
    hidden_sizes: Sequence[int],
    out_size: int,
    activation: str = "elu",
    layer_norm: bool = True,
    squash_output: bool = False,
    initialize: Callable[[nn.Linear, bool], Any] | None = None,
) -> nn.Sequential:
    """Linear -> [LayerNorm] -> activation hidden layers, a linear output and an optional tanh.

    The module indices are those of MoCapAct's ``create_mlp``, so its state dicts map one to one.
    ``initialize(linear, is_output)`` runs on each linear layer as it is made, so a seeded build draws
    the same random numbers as one that initialises layer by layer (the clip experts' orthogonal init).
    """
    check_activation(activation)
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers.append(nn.Linear(in_size, size))
        if initialize is not None:
            initialize(layers[-1], False)
        if layer_norm:
            layers.append(nn.LayerNorm(size))
        layers.append(ACTIVATIONS[activation]())
        in_size = size
    layers.append(nn.Linear(in_size, out_size))
    if initialize is not None:
        initialize(layers[-1], True)
    if squash_output:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def check_config_observation_sizes(config) -> None:
    """A policy config's ``observation_sizes``, when given, must give one width per key summing to ``observation_size``."""
    if config.observation_sizes and (
        len(config.observation_sizes) != len(config.observation_keys)
        or sum(config.observation_sizes) != config.observation_size
    ):
        raise ValueError(
            f"observation_sizes {config.observation_sizes} must give one width per observation key "
            f"({len(config.observation_keys)}) summing to observation_size {config.observation_size}."
        )


def flatten_checked(observation: Mapping[str, Any], config) -> np.ndarray:
    """``observation``'s keys concatenated in a policy config's order (``observation_keys``), after checking
    each key's width (``observation_sizes``) and the total (``observation_size``); flat or nested by key prefix."""
    observation = flat_keyed(observation)
    check_observation_widths(observation, config.observation_keys, config.observation_sizes)
    flat = flatten_observation(observation, config.observation_keys)
    if flat.shape[-1] != config.observation_size:
        raise ValueError(
            f"the observables {list(config.observation_keys)} hold {flat.shape[-1]} values; the policy "
            f"expects {config.observation_size}."
        )
    return flat


def check_observation_widths(
    observation: Mapping[str, Any], keys: Sequence[str], sizes: Sequence[int], hint: str = ""
) -> None:
    """Raises ``ValueError`` naming each key whose last axis is not the width a policy was built for."""
    if not sizes:
        return
    wrong = [
        f"{key} has {np.shape(observation[key])[-1]} values, the policy expects {size}"
        for key, size in zip(keys, sizes, strict=True)
        if key in observation and np.shape(observation[key])[-1:] != (size,)
    ]
    if wrong:
        raise ValueError(f"the observation does not have the policy's layout: {'; '.join(wrong)}.{hint}")


@dataclass(frozen=True)
class LowLevelPolicyConfig:
    """The decoder's architecture; everything needed to rebuild it before loading weights."""

    latent_size: int = GENERAL_LATENT_SIZE
    observation_keys: tuple[str, ...] = tuple(sorted(BASE))
    """The observables the decoder reads, concatenated in this order."""
    observation_size: int = 205
    action_size: int = 56
    hidden_sizes: tuple[int, ...] = (1024, 1024, 1024)
    activation: str = "elu"
    layer_norm: bool = True
    squash_output: bool = False
    """A tanh on the output (MoCapAct's ``squash_output``; its published decoders have none)."""
    observation_sizes: tuple[int, ...] = ()
    """Width of each observation key, in ``observation_keys`` order; empty: only the total is checked."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form facts a trainer records (data, seed, ...); not read by the policy."""

    def __post_init__(self):
        object.__setattr__(self, "observation_keys", tuple(self.observation_keys))
        object.__setattr__(self, "hidden_sizes", tuple(int(s) for s in self.hidden_sizes))
        object.__setattr__(self, "observation_sizes", tuple(int(s) for s in self.observation_sizes))
        check_config_observation_sizes(self)
        for name in ("latent_size", "observation_size", "action_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if any(size < 1 for size in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {self.hidden_sizes}.")
        check_activation(self.activation)
        if not self.observation_keys or len(set(self.observation_keys)) != len(self.observation_keys):
            raise ValueError(f"observation_keys must be distinct and not empty, got {self.observation_keys}.")

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["observation_keys"] = list(self.observation_keys)
        data["hidden_sizes"] = list(self.hidden_sizes)
        data["observation_sizes"] = list(self.observation_sizes)
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **data}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], source: str = "the config") -> LowLevelPolicyConfig:
        data = dict(data)
        if data.pop("format", None) != FORMAT_NAME:
            raise ValueError(f"{source} is not a low-level policy config: its 'format' is not {FORMAT_NAME!r}.")
        version = data.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ValueError(f"{source} has format_version {version!r}; this package reads version {FORMAT_VERSION}.")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source} has unknown field(s) {unknown}; known fields: {', '.join(sorted(known))}.")
        return cls(**data)


class LowLevelPolicy(SavedInDirectory, nn.Module):
    """The NPMP decoder: ``action mean = MLP(concat((obs - mean) / std, z))``.

    Args:
        config: the architecture; a ``LowLevelPolicyConfig`` or its fields as a mapping.

    Saved with :meth:`save` and read with :meth:`load` (``config.json`` + ``model.safetensors``).

    The normaliser starts as the identity (mean 0, std 1); a trainer sets it with
    :meth:`set_observation_statistics`.
    """

    config_class = LowLevelPolicyConfig
    description = "low-level policy"

    def __init__(self, config: LowLevelPolicyConfig | Mapping[str, Any] | None = None):
        super().__init__()
        if config is None:
            config = LowLevelPolicyConfig()
        elif not isinstance(config, LowLevelPolicyConfig):
            config = LowLevelPolicyConfig(**config)
        self.config = config
        self.register_buffer("observation_mean", torch.zeros(config.observation_size))
        self.register_buffer("observation_std", torch.ones(config.observation_size))
        self.mlp = build_mlp(
            config.observation_size + config.latent_size,
            config.hidden_sizes,
            config.action_size,
            config.activation,
            config.layer_norm,
            config.squash_output,
        )
        self.eval()

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    def set_observation_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Sets the normaliser; ``std`` must be positive (add the trainer's epsilon first)."""
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        size = self.config.observation_size
        if mean.shape != (size,) or std.shape != (size,):
            raise ValueError(f"mean and std must have shape ({size},), got {mean.shape} and {std.shape}.")
        if not np.all(std > 0):
            raise ValueError("std must be positive everywhere.")
        self.observation_mean.copy_(torch.from_numpy(mean))
        self.observation_std.copy_(torch.from_numpy(std))

    def forward(self, observation: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Action means from ``(..., observation_size)`` observations and ``(..., latent_size)`` latents."""
        normalized = (observation - self.observation_mean) / self.observation_std
        return self.mlp(torch.cat([normalized, latent], dim=-1))

    @torch.no_grad()
    def act(self, observation: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """The deterministic action (the mean, unclipped) for one ``(D,)`` or a batch ``(B, D)`` of inputs."""
        observation = np.asarray(observation, np.float32)
        latent = np.asarray(latent, np.float32)
        size, latent_size = self.config.observation_size, self.config.latent_size
        if observation.shape[-1:] != (size,) or observation.ndim not in (1, 2):
            raise ValueError(f"observation must have shape ({size},) or (B, {size}), got {observation.shape}.")
        if latent.shape[-1:] != (latent_size,) or latent.shape[:-1] != observation.shape[:-1]:
            raise ValueError(
                f"latent must have shape {observation.shape[:-1] + (latent_size,)} to match the observation, "
                f"got {latent.shape}."
            )
        device = self.observation_mean.device
        action = self(torch.from_numpy(observation).to(device), torch.from_numpy(latent).to(device))
        return action.cpu().numpy()

    def flatten_observation(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """The decoder's input from an environment's (or a batch's) dict observation."""
        return flatten_checked(observation, self.config)


#: The name that stands for the decoder shipped with the package (:data:`SHIPPED_LOW_LEVEL_POLICY`).
PRETRAINED = "pretrained"
#: The decoder of the best multi-clip NPMP distilled from the expert zoo (``zoo/README.md`` has its evaluation).
SHIPPED_LOW_LEVEL_POLICY = Path(__file__).parents[1] / "pretrained" / "low_level_policy"


def low_level_policy_path(name_or_path: str | os.PathLike) -> Path:
    """The directory of a saved decoder: ``"pretrained"`` names the shipped one, anything else is a path.

    A local folder that happens to be called ``pretrained`` is reached as ``./pretrained``.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"expected a LowLevelPolicy, {PRETRAINED!r} or the path of a saved one, got {type(name_or_path).__name__}."
        )
    if isinstance(name_or_path, str) and name_or_path == PRETRAINED:
        if not (SHIPPED_LOW_LEVEL_POLICY / "config.json").is_file():
            raise FileNotFoundError(
                f"the shipped low-level policy is missing from {SHIPPED_LOW_LEVEL_POLICY}; reinstall the package, "
                "or pass the directory of a saved decoder instead of 'pretrained'."
            )
        return SHIPPED_LOW_LEVEL_POLICY
    return Path(name_or_path)


def as_low_level_policy(policy_or_path: LowLevelPolicy | str | Path) -> LowLevelPolicy:
    """A policy as given, or loaded from its directory (``"pretrained"``: the shipped decoder)."""
    if isinstance(policy_or_path, LowLevelPolicy):
        return policy_or_path
    return LowLevelPolicy.load(low_level_policy_path(policy_or_path))
