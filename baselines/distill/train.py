"""Distil expert rollouts into one multi-clip tracking policy: NPMP or an MLP.

    python baselines/distill/train.py --rollouts rollouts/ --policy npmp --run-dir runs/npmp

Trains on windows of the experts' rollouts (``ExpertDataset``) with the
experts' mean actions as targets, evaluates in the tracking environment every
``eval_every`` steps (reference steps 1..5, from the snippet start and from random
starts, on the training snippets and any held-out ones), keeps the best policy by
mean normalized return, and exports the NPMP decoder in the low-level policy
format for the transfer tasks. As MoCapAct, it trains on the snippets of its training
clips only: rollouts of snippets on MoCapAct's validation clips (``mocapact_val_clips.txt``)
are left out and evaluated as the held-out set (``--no-exclude-validation-clips`` keeps them).
Rerunning the same command resumes from ``<run-dir>/checkpoint/state.pt``; a kill
(SIGTERM) or Ctrl-C saves the last whole step there first and exits with status 130.
TensorBoard logs go to ``<run-dir>/tb`` (the run folder of every trainer here, ``mocapact_envs.training.run_folder``).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from mocapact_envs.datasets import ExpertDataset
from mocapact_envs.evaluation.protocol import evaluate_snippets, mean_metrics
from mocapact_envs.mocap.splits import held_out_clips
from mocapact_envs.policies.multiclip import MultiClipPolicy, MultiClipPolicyConfig
from mocapact_envs.tasks.tracking_settings import load_clip_set
from mocapact_envs.training.flag_checks import (
    FlagRule,
    check_flags,
    non_negative,
    positive,
    unit_interval,
    unset_or_positive,
)
from mocapact_envs.training.run_folder import (
    StopOnSignal,
    args_json,
    open_tensorboard,
    policy_from_state,
    resume_state,
    save_training_checkpoint,
    set_rng_state,
)
from mocapact_envs.training.scripts import apply_preset, run_cli, seed_everything, show_presets_in_help

PRESETS = {
    # MoCapAct's published settings (a GPU run of about a day).
    "mocapact": dict(
        hidden_size=1024, batch_size=256, total_steps=100_000, eval_every=5_000, eval_episodes=10, latent_size=60
    ),
    # Sized for a 2-core CPU: a few minutes to a useful policy on a handful of clips.
    "cpu": dict(hidden_size=256, batch_size=64, total_steps=5_000, eval_every=1_000, eval_episodes=4, latent_size=60),
}


@show_presets_in_help({"--preset": PRESETS})
@dataclass
class Args:
    rollouts: list[Path]
    """Rollout HDF5 files, or folders holding them (``CMU_*.hdf5``)."""
    run_dir: Path = Path("runs/distill")
    """Where checkpoints, the best policy, its decoder and TensorBoard logs go."""
    preset: Literal["cpu", "mocapact"] = "cpu"
    """Defaults for the fields left unset: ``mocapact`` (MoCapAct's run) or ``cpu`` (this machine)."""
    policy: Literal["npmp", "mlp"] = "npmp"
    """NPMP (encoder, latent, reusable decoder) or the MLP baseline."""
    weighting: Literal["bc", "rwr", "awr", "cwr"] = "bc"
    """How rollout steps are weighted (MoCapAct's schemes)."""
    temperature: float | None = None
    """Weighting temperature; default per scheme (rwr 4, awr 8, cwr 0.2)."""
    latent_size: int | None = None
    """Latent size of the NPMP (MoCapAct: 60, or 20 for locomotion)."""
    prior_alpha: float = 0.0
    """AR(1) prior coefficient; 0 is the standard normal prior of MoCapAct's published run."""
    kl_weight: float = 0.1
    """Weight of the KL term."""
    hidden_size: int | None = None
    """Width of every hidden layer (encoder 2 layers, decoder and MLP 3 layers)."""
    learning_rate: float = 5e-4
    """Adam learning rate."""
    batch_size: int | None = None
    """Windows per gradient step."""
    seq_steps: int = 30
    """Steps per window."""
    total_steps: int | None = None
    """Gradient steps in all."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    clip_len_upsampling: bool = True
    """Repeat short snippets' windows, as MoCapAct does."""
    eval_every: int | None = None
    """Gradient steps between evaluations."""
    eval_episodes: int | None = None
    """Episodes per snippet and start kind in each evaluation."""
    eval_snippets: int = 8
    """Training snippets evaluated (the first ones); all held-out snippets are."""
    val_snippets: list[str] = field(default_factory=list)
    """Held-out clip or snippet ids (or an id list file) to evaluate on as well; default: the snippets
    left out by ``exclude_validation_clips``."""
    exclude_validation_clips: bool = True
    """Leave out the rollouts of snippets on MoCapAct's validation clips (``mocapact_val_clips.txt``),
    as MoCapAct trains on its training clips only; ``--no-exclude-validation-clips`` trains on everything."""
    clip_lists: Path | None = None
    """Folder of MoCapAct's clip lists (default: ``$MOCAPACT_MOCAP_PATH/clip_lists``)."""
    deterministic_eval: bool = False
    """Act with the latent and action means instead of sampling (MoCapAct samples)."""
    checkpoint_every: int = 500
    """Gradient steps between checkpoints."""
    resume: bool = True
    """Continue from <run-dir>/checkpoint/state.pt when it exists; --no-resume starts again from step 0."""
    seed: int = 0
    """Seed of torch, numpy and the environments."""
    torch_threads: int = 2
    """Threads torch may use."""


#: Each numeric flag's rule once the preset is resolved, checked before anything is read or written.
ARG_RULES: dict[str, FlagRule] = {
    "latent_size": (positive, "a positive size"),
    "hidden_size": (positive, "a positive width"),
    "batch_size": (positive, "a positive number of windows"),
    "seq_steps": (positive, "a positive number of steps"),
    "total_steps": (positive, "a positive number of gradient steps"),
    "eval_every": (positive, "a positive number of gradient steps"),
    "eval_episodes": (positive, "a positive number of episodes"),
    "eval_snippets": (positive, "a positive number of snippets"),
    "checkpoint_every": (positive, "a positive number of gradient steps"),
    "learning_rate": (positive, "a positive, finite rate"),
    "kl_weight": (non_negative, "0 or more, finite"),
    "max_grad_norm": (positive, "a positive, finite norm"),
    "prior_alpha": (unit_interval, "in [0, 1]"),
    "temperature": (unset_or_positive, "unset (the scheme's default) or a positive temperature"),
    "torch_threads": (positive, "a positive number of threads"),
}


def held_out_snippet_ids(val_snippets: list[str]) -> list[str]:
    """``--val-snippets`` resolved against the reference source: an id it lacks fails now, not at the first
    evaluation."""
    try:
        return [snippet.id for snippet in load_clip_set(val_snippets).snippets]
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"--val-snippets {' '.join(val_snippets)}: {error}") from error


def main(args: Args) -> int:
    args = apply_preset(args, PRESETS[args.preset])
    check_flags(args, ARG_RULES)
    val_snippets = held_out_snippet_ids(args.val_snippets) if args.val_snippets else None
    torch.set_num_threads(args.torch_threads)
    checkpoint = resume_state(args.run_dir, args.resume)

    dataset = ExpertDataset(
        args.rollouts,
        "high_level",
        seq_steps=args.seq_steps,
        weighting=args.weighting,
        temperature=args.temperature,
        clip_len_upsampling=args.clip_len_upsampling,
        exclude_clips=held_out_clips(args.exclude_validation_clips, args.clip_lists),
    )
    train_snippets = list(dataset.files.snippet_norm_returns)
    left_out = dataset.files.excluded_snippets
    if left_out:
        print(f"left out {len(left_out)} snippets on MoCapAct's validation clips (held out): {', '.join(left_out)}")
    val_snippets = val_snippets if val_snippets is not None else left_out
    ref_steps = dataset.files.ref_steps

    if checkpoint is not None:
        policy = policy_from_state(MultiClipPolicy, checkpoint, args.run_dir)
        state = {"step": checkpoint["step"], "best_score": checkpoint["best_score"], "args": checkpoint["args"]}
    else:
        seed_everything(args.seed)
        config = MultiClipPolicyConfig(
            kind=args.policy,
            observation_keys=dataset.observable_keys,
            observation_sizes=tuple(s.stop - s.start for s in dataset.observable_slices.values()),
            latent_size=args.latent_size,
            encoder_hidden_sizes=(args.hidden_size,) * 2,
            decoder_hidden_sizes=(args.hidden_size,) * 3,
            mlp_hidden_sizes=(args.hidden_size,) * 3,
            prior_alpha=args.prior_alpha,
            ref_steps=ref_steps,
            trained_snippets=tuple(train_snippets),
            held_out_snippets=tuple(val_snippets),
        )
        policy = MultiClipPolicy(config)
        policy.set_observation_statistics(dataset.obs_mean, dataset.obs_std)
        state = {"step": 0, "best_score": -np.inf, "args": args_json(args)}
    policy.train()
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)
    sampler = np.random.default_rng(args.seed)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        set_rng_state(checkpoint["rng"], sampler)
        print(f"resuming {args.run_dir} at step {state['step']}")

    writer = open_tensorboard(args.run_dir, state["step"] if checkpoint is not None else None)
    writer.add_text("args", json.dumps(json.loads(state["args"]), indent=2))
    writer.add_text("snippets", json.dumps({"trained": train_snippets, "left_out": left_out, "held_out": val_snippets}))
    progress = tqdm(total=args.total_steps, initial=state["step"], desc=f"distill {args.policy}", unit="step")
    started, started_step = time.perf_counter(), state["step"]

    with StopOnSignal() as stop:
        while state["step"] < args.total_steps and not stop.requested:
            observations, actions, weights = dataset.batch(sampler.integers(len(dataset), size=args.batch_size))
            loss, logs = policy.sequence_loss(
                torch.from_numpy(observations), torch.from_numpy(actions), torch.from_numpy(weights), args.kl_weight
            )
            optimizer.zero_grad()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
            optimizer.step()
            state["step"] += 1
            progress.update(1)
            step = state["step"]

            if step % 50 == 0:
                for name, value in logs.items():
                    writer.add_scalar(f"train/{name}", value, step)
                writer.add_scalar("train/grad_norm", grad_norm.item(), step)
                writer.add_scalar(
                    "charts/steps_per_second", (step - started_step) / (time.perf_counter() - started), step
                )
                progress.set_postfix(loss=f"{logs['loss']:.3f}")

            if step % args.eval_every == 0 or step == args.total_steps:
                policy.eval()
                groups = {"train": train_snippets[: args.eval_snippets], "val": val_snippets}
                score = None
                for group, snippets in groups.items():
                    if not snippets:
                        continue
                    results = evaluate_snippets(
                        policy,
                        snippets,
                        args.eval_episodes,
                        ref_steps=ref_steps,
                        deterministic=args.deterministic_eval,
                        seed=args.seed,
                    )
                    for name, value in mean_metrics(results).items():
                        kind, metric = name.split("_", 1)
                        writer.add_scalar(f"eval_{group}_{kind}/{metric}", value, step)
                    if group == "train":
                        score = float(np.mean([r["rsi"]["mean_norm_episode_return"] for r in results.values()]))
                policy.train()
                if score is not None and score > state["best_score"]:
                    state["best_score"] = score
                    policy.save(args.run_dir / "best")
                    if args.policy == "npmp":
                        policy.export_low_level_policy(args.run_dir / "best" / "low_level_policy")
                progress.write(
                    f"step {step}: train random-start normalized return {score:.3f} (best {state['best_score']:.3f})"
                )

            if step % args.checkpoint_every == 0 or step == args.total_steps:
                save_training_checkpoint(args.run_dir, state, policy, optimizer, sampler)
    progress.close()
    if stop.requested:  # the last whole step is kept; the same command goes on from it
        save_training_checkpoint(args.run_dir, state, policy, optimizer, sampler)
        writer.close()
        print(f"{args.run_dir}: stopped by {stop.requested} at step {state['step']}; rerun the same command to resume.")
        return 130
    policy.save(args.run_dir / "final")
    if args.policy == "npmp":
        policy.export_low_level_policy(args.run_dir / "final" / "low_level_policy")
    writer.close()
    best = args.run_dir / "best"
    # A resumed run may have had no evaluation that scored: then only the last policy is there.
    print(
        f"done: best policy in {best}"
        if best.is_dir()
        else f"done: no best policy; the last is in {best.parent / 'final'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
