"""The run folder every trainer of ``baselines/`` writes: its resume checkpoint and its TensorBoard logs.

A run folder ``<run>`` holds, whatever the trainer:

* ``checkpoint/state.pt``: everything a resume needs, in one file: a dict of tensors and plain
  Python values (``torch.save``; read with ``torch.load(weights_only=True)``, so nothing in it is
  unpickled as an object): the loop's counters, the networks' and the optimiser's state dicts,
  normaliser statistics, the RNG states (:func:`rng_state`) and the resolved arguments (``"args"``,
  JSON). It is written under a temporary name and renamed, so it is complete or absent.
* ``tb/``: TensorBoard event files (:func:`open_tensorboard`).

``--resume`` (every trainer's default) continues from ``checkpoint/state.pt`` when it exists and
starts at step 0 otherwise; ``--no-resume`` starts at step 0 whatever the folder holds: its
TensorBoard logs restart at step 0 and its first checkpoint replaces the old one.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mocapact_envs.files import replace_atomically

# torch loads on first use: importing the package stays light.
if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

#: The resume checkpoint, relative to the run folder.
CHECKPOINT_FILE = Path("checkpoint") / "state.pt"
#: TensorBoard's event files, relative to the run folder.
TENSORBOARD_DIR = "tb"
#: Resume files of earlier versions of the distillation, GPT and transfer trainers, which this one cannot read:
#: named in an error, so that a rerun does not silently start such a run over.
OLD_CHECKPOINT_FILES = (Path("checkpoint") / "state.json", Path("checkpoints") / "latest.json")


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_FILE


def save_checkpoint(run_dir: str | Path, state: Mapping[str, Any]) -> None:
    """Writes ``state`` (tensors and plain values) to ``<run_dir>/checkpoint/state.pt`` atomically."""
    import torch

    replace_atomically(checkpoint_path(run_dir), lambda tmp: torch.save(dict(state), tmp))


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The state :func:`save_checkpoint` wrote; a missing or unreadable file raises an error naming it."""
    import pickle

    import torch

    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: the run folder has none.")
    try:
        return torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path} is not a readable checkpoint ({error}); it is corrupt or truncated.") from error


def resume_state(run_dir: str | Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from: its state with ``resume`` when the run has one, else ``None``.

    A run folder holding only an earlier trainer version's resume files raises ``ValueError`` with
    ``resume``: starting it over silently would overwrite its results.
    """
    run_dir = Path(run_dir)
    if not resume:
        return None
    if checkpoint_path(run_dir).is_file():
        return load_checkpoint(run_dir)
    for old in OLD_CHECKPOINT_FILES:
        if (run_dir / old).is_file():
            raise ValueError(
                f"{run_dir / old} is the checkpoint of an earlier version of this trainer, which cannot be resumed; "
                f"pass --no-resume to start {run_dir} over, or choose another run folder."
            )
    return None


def policy_state(policy: Any) -> dict[str, Any]:
    """A saved-in-directory policy (``policies.saving.SavedInDirectory``) as checkpoint entries:
    its config (JSON) and its state dict."""
    return {"policy_config": json.dumps(policy.config.to_json_dict()), "policy": policy.state_dict()}


def save_training_checkpoint(
    run_dir: str | Path, state: Mapping[str, Any], policy: Any, optimizer: Any, sampler: Any
) -> None:
    """The resume checkpoint of a gradient-step trainer (distillation, GPT): its counters and arguments
    (``state``), the policy (:func:`policy_state`), the optimiser and the batch sampler's RNG."""
    save_checkpoint(
        run_dir, {**state, **policy_state(policy), "optimizer": optimizer.state_dict(), "rng": rng_state(sampler)}
    )


def policy_from_state(policy_class: Any, state: Mapping[str, Any], run_dir: str | Path) -> Any:
    """The policy :func:`policy_state` stored in the checkpoint ``state`` of ``run_dir``."""
    source = str(checkpoint_path(run_dir))
    policy = policy_class(policy_class.config_class.from_json_dict(json.loads(state["policy_config"]), source=source))
    policy.load_state_dict(state["policy"])
    return policy


def args_json(args: Any) -> str:
    """A trainer's resolved arguments (a dataclass) as a JSON string for its checkpoint."""
    import dataclasses

    return json.dumps(dataclasses.asdict(args), default=str)


def rng_state(generator: np.random.Generator | None = None) -> dict[str, Any]:
    """Python's, NumPy's global and torch's RNG states (and ``generator``'s), as tensors and plain values."""
    import torch

    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
    }
    if generator is not None:
        state["generator"] = generator.bit_generator.state
    return state


def set_rng_state(state: Mapping[str, Any], generator: np.random.Generator | None = None) -> None:
    """Restores what :func:`rng_state` returned."""
    import torch

    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if generator is not None:
        generator.bit_generator.state = state["generator"]


def open_tensorboard(run_dir: str | Path, resumed_step: int | None) -> SummaryWriter:
    """The run's TensorBoard writer (``<run_dir>/tb``).

    ``resumed_step``: the step the run continues from (its checkpoint's), or ``None`` for a run that
    starts at step 0. Readers drop the events logged at later steps (a crashed run's past its
    checkpoint; all of an earlier run's when it starts over), so a curve never goes back.
    """
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(
        str(Path(run_dir) / TENSORBOARD_DIR), purge_step=0 if resumed_step is None else resumed_step + 1
    )


class StopOnSignal:
    """SIGTERM and SIGINT (a kill, Ctrl-C) set :attr:`requested` instead of raising, while in the ``with`` block.

    A training loop checks it between gradient steps, checkpoints the last whole step and exits, so a
    stopped run loses nothing and never saves a half-applied optimiser step. Outside the main thread
    (where signals cannot be handled) it installs nothing and never requests a stop.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: str | None = None
        """The name of the signal that asked to stop, or ``None``."""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def final_evaluation_record(run_dir: str | Path, snippet_id: str, summaries: Mapping[str, Any]) -> dict[str, Any]:
    """What an expert run's ``final_evaluation.json`` holds: MoCapAct's evaluation (``summaries``, per kind) with the
    env steps and minutes the run had trained at its last evaluation, which the zoo's export and table read."""
    from mocapact_envs.files import read_json
    from mocapact_envs.policies.run_layout import EVALUATIONS_FILE

    record: dict[str, Any] = {"snippet_id": snippet_id}
    evaluations_path = Path(run_dir) / EVALUATIONS_FILE
    if evaluations_path.is_file() and (evaluations := read_json(evaluations_path)):
        record.update(env_steps=evaluations[-1]["global_step"], training_minutes=evaluations[-1]["training_minutes"])
    return record | dict(summaries)


def write_final_evaluation(
    run_dir: str | Path, snippet_id: str, num_episodes: Mapping[str, int], *, seed: int, num_envs: int = 4
) -> dict[str, Any]:
    """MoCapAct's evaluation of a run's ``eval_rsi`` model on fresh episodes, written (atomically) to its
    ``final_evaluation.json`` as :func:`final_evaluation_record` says; the record."""
    from mocapact_envs.evaluation.protocol import final_evaluation
    from mocapact_envs.files import write_json
    from mocapact_envs.policies.expert_files import load_expert
    from mocapact_envs.policies.run_layout import FINAL_EVALUATION_FILE

    run_dir = Path(run_dir)
    expert = load_expert(run_dir / "eval_rsi" / "model")
    summaries = final_evaluation(expert, snippet_id, num_episodes, num_envs=num_envs, seed=seed)
    record = final_evaluation_record(run_dir, snippet_id, summaries)
    write_json(run_dir / FINAL_EVALUATION_FILE, record)
    return record
