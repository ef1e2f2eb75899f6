"""Resumable training checkpoints without pickle: policy, optimizer, RNG and loop state.

A checkpoint directory holds the policy (its own ``save`` format),
``optimizer.pt`` (tensors and numbers only, read with ``weights_only=True``),
``rng.safetensors`` (torch's RNG state) and ``state.json`` (the loop's counters
and the numpy sampler's state). ``state.json`` is written last: its presence
marks a complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mocapact_envs.io import read_tensors, replace_atomically, write_json, write_tensors

STATE_FILE = "state.json"


def has_checkpoint(directory: Path) -> bool:
    return (directory / STATE_FILE).is_file()


def save_checkpoint(
    directory: Path, policy, optimizer: torch.optim.Optimizer, sampler: np.random.Generator, state: dict[str, Any]
) -> None:
    policy.save(directory / "policy")
    replace_atomically(directory / "optimizer.pt", lambda tmp: torch.save(optimizer.state_dict(), tmp))
    write_tensors(directory / "rng.safetensors", {"torch": torch.get_rng_state()})
    write_json(directory / STATE_FILE, {**state, "sampler": sampler.bit_generator.state})


def restore_checkpoint(
    directory: Path, optimizer: torch.optim.Optimizer, sampler: np.random.Generator
) -> dict[str, Any]:
    """Restores the optimizer, torch's RNG and the sampler; returns the loop state.

    The policy is loaded by the caller with its own ``load`` from ``directory / "policy"``.
    """
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
    torch.set_rng_state(read_tensors(directory / "rng.safetensors")["torch"])
    state = json.loads((directory / STATE_FILE).read_text())
    sampler.bit_generator.state = state.pop("sampler")
    return state
