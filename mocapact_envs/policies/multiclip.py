"""Multi-clip tracking policies distilled from expert rollouts: NPMP and an MLP.

NPMP (neural probabilistic motor primitives, as MoCapAct trains it):

* the encoder reads the high-level observation (1291 dims: base proprioception,
  body height and the reference 1..5 steps ahead) and the previous latent (unless
  ``recurrent_encoder`` is off), and gives the mean and log-std of a Gaussian over
  the latent ``z``;
* the decoder, :class:`~mocapact_envs.policies.low_level.LowLevelPolicy`, reads
  the base proprioception (``decoder_observation_keys``, columns of the same
  observation) and ``z`` and gives the action mean;
* the prior over ``z_t`` is AR(1): ``N(alpha z_{t-1}, sqrt(1 - alpha^2))``;
  ``alpha = 0`` is a standard normal prior, what MoCapAct's published run used.

The loss over windows of ``T`` steps is ``(-sum w log N(a* | mean, std) + beta sum
KL(q || prior)) / (B T)`` with the experts' mean actions ``a*`` as targets.

The MLP baseline maps the high-level observation straight to the action mean.

Hidden layers are Linear -> LayerNorm -> ELU by default; ``activation``,
``layer_norm`` and ``squash_output`` (a tanh on the action mean) cover MoCapAct's
other settings, so its checkpoints convert (:mod:`mocapact_envs.policies.mocapact_checkpoints`).

A saved policy is a directory with ``config.json`` and ``model.safetensors``;
nothing is pickled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mocapact_envs.policies.low_level import (
    LowLevelPolicy,
    LowLevelPolicyConfig,
    build_mlp,
    check_activation,
    check_observation_widths,
)
from mocapact_envs.policies.saving import SavedInDirectory
from mocapact_envs.tasks.observables import BASE, HIGH_LEVEL, flatten_observation

FORMAT_NAME = "mocapact_envs.multiclip_policy"
FORMAT_VERSION = 1
POLICY_KINDS = ("npmp", "mlp")


@dataclass(frozen=True)
class MultiClipPolicyConfig:
    """Architecture of a multi-clip policy; everything needed to rebuild it."""

    kind: str = "npmp"
    observation_keys: tuple[str, ...] = tuple(sorted(HIGH_LEVEL))
    observation_sizes: tuple[int, ...] = ()
    """Width of each observation key, in ``observation_keys`` order."""
    action_size: int = 56
    action_std: float = 0.1
    latent_size: int = 60
    encoder_hidden_sizes: tuple[int, ...] = (1024, 1024)
    decoder_hidden_sizes: tuple[int, ...] = (1024, 1024, 1024)
    mlp_hidden_sizes: tuple[int, ...] = (1024, 1024, 1024)
    prior_alpha: float = 0.0
    min_latent_std: float = 1e-5
    ref_steps: tuple[int, ...] = (1, 2, 3, 4, 5)
    trained_snippets: tuple[str, ...] = ()
    """The snippets whose rollouts it was trained on, for evaluation."""
    held_out_snippets: tuple[str, ...] = ()
    """The snippets its training evaluated it on as held out (by default those of the rollouts on
    MoCapAct's validation clips, which it was not trained on)."""
    activation: str = "elu"
    layer_norm: bool = True
    squash_output: bool = False
    """A tanh on the action mean (MoCapAct's ``squash_output``)."""
    recurrent_encoder: bool = True
    """Whether the encoder also reads the previous latent (MoCapAct's ``recurrent_encoder``)."""
    decoder_observation_keys: tuple[str, ...] = tuple(sorted(BASE))
    """The keys the NPMP decoder reads, in its input order; a subset of ``observation_keys``."""
    action_noise: bool = True
    """Whether stochastic acting adds N(0, action_std) to the action mean; MoCapAct's own
    ``predict`` samples only the latent (its converted policies set this off)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form facts (where a converted policy came from); not read by the policy."""

    def __post_init__(self):
        for name in ("observation_keys", "observation_sizes", "encoder_hidden_sizes", "decoder_hidden_sizes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "mlp_hidden_sizes", tuple(self.mlp_hidden_sizes))
        object.__setattr__(self, "ref_steps", tuple(int(s) for s in self.ref_steps))
        object.__setattr__(self, "trained_snippets", tuple(self.trained_snippets))
        object.__setattr__(self, "held_out_snippets", tuple(self.held_out_snippets))
        object.__setattr__(self, "decoder_observation_keys", tuple(self.decoder_observation_keys))
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"unknown policy kind {self.kind!r}; choose one of {', '.join(POLICY_KINDS)}.")
        if not 0.0 <= self.prior_alpha < 1.0:
            raise ValueError(f"prior_alpha must be in [0, 1), got {self.prior_alpha}.")
        if not self.recurrent_encoder and self.prior_alpha != 0.0:
            raise ValueError(
                f"a non-recurrent encoder has a standard normal prior; prior_alpha must be 0, got {self.prior_alpha}."
            )
        if len(self.observation_sizes) != len(self.observation_keys):
            raise ValueError("observation_sizes must give one width per observation key.")
        check_activation(self.activation)
        missing = [k for k in self.decoder_observation_keys if k not in self.observation_keys]
        if self.kind == "npmp" and missing:
            raise ValueError(f"the NPMP decoder reads {missing}, which the observation keys lack.")

    @property
    def observation_size(self) -> int:
        return int(sum(self.observation_sizes))

    def to_json_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], source: str) -> MultiClipPolicyConfig:
        data = dict(data)
        if data.pop("format", None) != FORMAT_NAME or data.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"{source} is not a version-{FORMAT_VERSION} {FORMAT_NAME} config.")
        return cls(**data)


def gaussian_log_prob(value: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Log density of a diagonal Gaussian with a fixed std, summed over the last axis."""
    return (-0.5 * ((value - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mean_q, std_q, mean_p, std_p) -> torch.Tensor:
    """KL(N(mean_q, std_q) || N(mean_p, std_p)) of diagonal Gaussians, summed over the last axis."""
    return (torch.log(std_p / std_q) + (std_q**2 + (mean_q - mean_p) ** 2) / (2 * std_p**2) - 0.5).sum(-1)


class MultiClipPolicy(SavedInDirectory, nn.Module):
    """An NPMP or MLP multi-clip policy over the concatenated high-level observation.

    The observation normaliser starts as the identity; a trainer sets it from the
    dataset statistics with :meth:`set_observation_statistics`.
    """

    config_class = MultiClipPolicyConfig
    description = "multi-clip policy"

    def __init__(self, config: MultiClipPolicyConfig):
        super().__init__()
        self.config = config
        size = config.observation_size
        self.register_buffer("observation_mean", torch.zeros(size))
        self.register_buffer("observation_std", torch.ones(size))
        offsets = np.cumsum((0,) + config.observation_sizes)
        columns = {k: np.arange(offsets[i], offsets[i + 1]) for i, k in enumerate(config.observation_keys)}
        layers = {"activation": config.activation, "layer_norm": config.layer_norm}
        if config.kind == "npmp":
            base_keys = config.decoder_observation_keys
            self.register_buffer("base_columns", torch.from_numpy(np.concatenate([columns[k] for k in base_keys])))
            encoder_input = size + config.latent_size if config.recurrent_encoder else size
            self.encoder = build_mlp(encoder_input, config.encoder_hidden_sizes, 2 * config.latent_size, **layers)
            self.decoder = LowLevelPolicy(
                LowLevelPolicyConfig(
                    latent_size=config.latent_size,
                    observation_keys=base_keys,
                    observation_size=len(self.base_columns),
                    observation_sizes=tuple(len(columns[k]) for k in base_keys),
                    action_size=config.action_size,
                    hidden_sizes=config.decoder_hidden_sizes,
                    squash_output=config.squash_output,
                    **layers,
                )
            )
        else:
            self.mlp = build_mlp(
                size, config.mlp_hidden_sizes, config.action_size, **layers, squash_output=config.squash_output
            )

    # -- normalisation -------------------------------------------------------------

    def set_observation_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Sets the normaliser of the whole observation (and the decoder's, its base part)."""
        self.observation_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.observation_std.copy_(torch.as_tensor(std, dtype=torch.float32))
        if self.config.kind == "npmp":
            base = self.base_columns.cpu().numpy()
            self.decoder.set_observation_statistics(np.asarray(mean)[base], np.asarray(std)[base])

    def _normalized(self, observation: torch.Tensor) -> torch.Tensor:
        return (observation - self.observation_mean) / self.observation_std

    # -- NPMP pieces ---------------------------------------------------------------

    def encode(self, observation: torch.Tensor, previous_latent: torch.Tensor):
        """Mean and std of the posterior over ``z_t`` given the raw observation and ``z_{t-1}``."""
        normalized = self._normalized(observation)
        if self.config.recurrent_encoder:
            normalized = torch.cat([normalized, previous_latent], dim=-1)
        out = self.encoder(normalized)
        mean, log_std = out.chunk(2, dim=-1)
        return mean, log_std.exp().clamp_min(self.config.min_latent_std)

    def prior(self, previous_latent: torch.Tensor):
        alpha = self.config.prior_alpha
        return alpha * previous_latent, torch.full_like(previous_latent, math.sqrt(1 - alpha**2))

    def initial_latent(self, batch: int, deterministic: bool, device=None) -> torch.Tensor:
        """``z_0``: drawn from N(0, I), or 0 when acting deterministically."""
        shape = (batch, self.config.latent_size)
        return torch.zeros(shape, device=device) if deterministic else torch.randn(shape, device=device)

    # -- training ------------------------------------------------------------------

    def sequence_loss(
        self, observations: torch.Tensor, target_actions: torch.Tensor, weights: torch.Tensor, kl_weight: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted loss over windows: observations (B, T, D), targets (B, T, A), weights (B, T)."""
        batch, steps = weights.shape
        std = self.config.action_std
        if self.config.kind == "mlp":
            means = self.mlp(self._normalized(observations))
            log_prob = gaussian_log_prob(target_actions, means, std)
            loss = -(weights * log_prob).sum() / (batch * steps)
            return loss, {"loss": loss.item(), "log_prob": log_prob.mean().item()}
        latent = self.initial_latent(batch, deterministic=False, device=observations.device)
        log_probs, kls = [], []
        for t in range(steps):
            mean_q, std_q = self.encode(observations[:, t], latent)
            mean_p, std_p = self.prior(latent)
            kls.append(gaussian_kl(mean_q, std_q, mean_p, std_p))
            latent = mean_q + std_q * torch.randn_like(std_q)
            action_mean = self.decoder(observations[:, t, self.base_columns], latent)
            log_probs.append(gaussian_log_prob(target_actions[:, t], action_mean, std))
        log_prob, kl = torch.stack(log_probs, 1), torch.stack(kls, 1)
        loss = (-(weights * log_prob).sum() + kl_weight * kl.sum()) / (batch * steps)
        return loss, {"loss": loss.item(), "log_prob": log_prob.mean().item(), "kl": kl.mean().item()}

    # -- acting --------------------------------------------------------------------

    @torch.no_grad()
    def act(
        self, observation: np.ndarray, latent: torch.Tensor | None, deterministic: bool = False
    ) -> tuple[np.ndarray, torch.Tensor | None]:
        """Actions in [-1, 1] for a batch of raw observations (B, D); returns the new latent.

        Pass ``latent=None`` at an episode's first step. Stochastic acting samples
        ``z`` and adds the action noise of the fixed action std.
        """
        obs = torch.as_tensor(np.asarray(observation, np.float32), device=self.observation_mean.device)
        if self.config.kind == "mlp":
            mean = self.mlp(self._normalized(obs))
        else:
            if latent is None:
                latent = self.initial_latent(len(obs), deterministic, obs.device)
            mean_q, std_q = self.encode(obs, latent)
            latent = mean_q if deterministic else mean_q + std_q * torch.randn_like(std_q)
            mean = self.decoder(obs[:, self.base_columns], latent)
        if not deterministic and self.config.action_noise:
            mean = mean + self.config.action_std * torch.randn_like(mean)
        return mean.clamp(-1.0, 1.0).cpu().numpy(), latent

    def flatten_observation(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """The (B, D) observation vector from a batched Dict observation, its layout checked."""
        check_observation_widths(
            observation,
            self.config.observation_keys,
            self.config.observation_sizes,
            hint=f" (the policy's reference steps are {list(self.config.ref_steps)})",
        )
        return flatten_observation(observation, self.config.observation_keys)

    def check_environment(self, env) -> None:
        """Raises ``ValueError`` unless ``env`` shows this policy's observation layout and reference steps.

        The keys and widths come from ``env.observation_space``; the reference steps from
        ``env.unwrapped.ref_steps`` when the environment has them (same widths, other steps
        would be silent garbage).
        """
        space = env.observation_space
        missing = [k for k in self.config.observation_keys if k not in getattr(space, "spaces", {})]
        if missing:
            raise ValueError(
                f"the environment's observation lacks {missing}, which the policy reads; build it with "
                f"observables={list(self.config.observation_keys)}."
            )
        widths = {k: int(np.prod(space[k].shape)) for k in self.config.observation_keys}
        check_observation_widths(
            {k: np.zeros(n) for k, n in widths.items()},
            self.config.observation_keys,
            self.config.observation_sizes,
            hint=f" (the policy's reference steps are {list(self.config.ref_steps)})",
        )
        env_ref_steps = getattr(env.unwrapped, "ref_steps", None)
        if env_ref_steps is not None and tuple(int(s) for s in env_ref_steps) != self.config.ref_steps:
            raise ValueError(
                f"the environment shows the reference {tuple(env_ref_steps)} steps ahead; the policy was trained "
                f"with ref_steps={self.config.ref_steps}. Build the environment with ref_steps={self.config.ref_steps}."
            )

    # -- files ---------------------------------------------------------------------

    def export_low_level_policy(self, directory: str | Path) -> Path:
        """Saves the NPMP decoder in the low-level policy format the action wrapper loads."""
        if self.config.kind != "npmp":
            raise ValueError(f"only an NPMP policy has a decoder to export; this one is {self.config.kind!r}.")
        return self.decoder.save(directory)
