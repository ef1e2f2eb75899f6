"""A GPT policy for motion completion: a causal transformer over observation tokens.

One token per step: a linear projection of the normalised 206-dim observation
(base proprioception and body height, no reference) plus a learned position
embedding. A causal transformer (pre-LayerNorm blocks) predicts the action mean at
every position through a bias-free linear head; actions are Gaussian with a fixed
std. MoCapAct's configuration: context 32, 8 layers, 8 heads, width 768, dropout
0.1. A saved policy is a directory with ``config.json`` and
``model.safetensors``; nothing is pickled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mocapact_envs.policies.low_level import check_config_observation_sizes, flatten_checked
from mocapact_envs.policies.multiclip import gaussian_log_prob
from mocapact_envs.policies.saving import SavedInDirectory
from mocapact_envs.tasks.observables import HIGH_LEVEL_SANS_REFERENCE

FORMAT_NAME = "mocapact_envs.gpt_policy"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GPTConfig:
    observation_keys: tuple[str, ...] = tuple(sorted(HIGH_LEVEL_SANS_REFERENCE))
    observation_size: int = 206
    action_size: int = 56
    action_std: float = 0.1
    context_length: int = 32
    layers: int = 8
    heads: int = 8
    width: int = 768
    dropout: float = 0.1
    observation_sizes: tuple[int, ...] = ()
    """Width of each observation key, in ``observation_keys`` order; empty: only the total is checked."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form facts (where a converted policy came from); not read by the policy."""

    def __post_init__(self):
        object.__setattr__(self, "observation_keys", tuple(self.observation_keys))
        object.__setattr__(self, "observation_sizes", tuple(int(s) for s in self.observation_sizes))
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}.")
        check_config_observation_sizes(self)

    def to_json_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], source: str) -> GPTConfig:
        data = dict(data)
        if data.pop("format", None) != FORMAT_NAME or data.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"{source} is not a version-{FORMAT_VERSION} {FORMAT_NAME} config.")
        return cls(**data)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, steps, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(batch, steps, width)))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(config.width), nn.LayerNorm(config.width)
        self.attention = CausalSelfAttention(config)
        self.mlp = nn.Sequential(
            nn.Linear(config.width, 4 * config.width),
            nn.GELU(),
            nn.Linear(4 * config.width, config.width),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPTPolicy(SavedInDirectory, nn.Module):
    """Predicts the action mean at every position of a (B, T <= context) observation sequence."""

    config_class = GPTConfig
    description = "GPT policy"

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.register_buffer("observation_mean", torch.zeros(config.observation_size))
        self.register_buffer("observation_std", torch.ones(config.observation_size))
        self.token = nn.Linear(config.observation_size, config.width)
        self.position = nn.Parameter(torch.zeros(1, config.context_length, config.width))
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_final = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.action_size, bias=False)
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                # GPT-2's scaled init of residual projections keeps deep stacks stable.
                nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def set_observation_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.observation_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.observation_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        steps = observations.shape[1]
        if steps > self.config.context_length:
            raise ValueError(f"a sequence of {steps} steps exceeds the context of {self.config.context_length}.")
        x = self.token((observations - self.observation_mean) / self.observation_std) + self.position[:, :steps]
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_final(x))

    def sequence_loss(
        self, observations: torch.Tensor, target_actions: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted negative log-likelihood over every position of (B, T, ...) windows."""
        log_prob = gaussian_log_prob(target_actions, self(observations), self.config.action_std)
        loss = -(weights * log_prob).sum() / weights.numel()
        return loss, {"loss": loss.item(), "log_prob": log_prob.mean().item()}

    def flatten_observation(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """One context row (or a batch of them) from a Dict observation, its layout checked."""
        return flatten_checked(observation, self.config)

    @torch.no_grad()
    def act(self, context: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The action for the last step of each (B, T, D) context (T <= context length), in [-1, 1]."""
        observations = torch.as_tensor(np.asarray(context, np.float32), device=self.observation_mean.device)
        mean = self(observations[:, -self.config.context_length :])[:, -1]
        if not deterministic:
            mean = mean + self.config.action_std * torch.randn_like(mean)
        return mean.clamp(-1.0, 1.0).cpu().numpy()
