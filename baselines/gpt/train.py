"""Train a GPT policy on expert rollouts for motion completion.

    python baselines/gpt/train.py --rollouts rollouts/ --run-dir runs/gpt --prompt-experts runs/experts
    python baselines/gpt/train.py --rollouts rollouts/zoo_small --run-dir runs/gpt_zoo --prompt-experts zoo

Windows of ``context`` steps of the 206-dim observation without reference (base
proprioception and body height) are fed to a causal transformer that predicts the
expert's mean action at every position. It trains on the rollout files given (a
folder's ``CMU_*.hdf5`` files) but those of MoCapAct's validation clips, which stay
held out. With ``--prompt-experts`` the policy is evaluated every ``eval_every`` steps
by motion completion on a few of the training clips (``eval_clips``; mean episode
length, MoCapAct's metric) and the best one is kept; otherwise the last one is.
Rerunning the same command resumes from ``<run-dir>/checkpoint/state.pt``; a kill
(SIGTERM) or Ctrl-C saves the last whole step there first and exits with status 130.
TensorBoard logs go to ``<run-dir>/tb`` (the run folder of every trainer here,
``mocapact_envs.training.run_folder``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from mocapact_envs.datasets import ExpertDataset
from mocapact_envs.envs.motion_completion import DEFAULT_PROMPT_STEPS, run_completion
from mocapact_envs.mocap.ids import suggest
from mocapact_envs.mocap.splits import ZOO_CLIP_SETS, held_out_clips, resolve_clips
from mocapact_envs.policies.gpt import GPTConfig, GPTPolicy
from mocapact_envs.policies.run_layout import expert_folder_argument, find_experts
from mocapact_envs.training.flag_checks import FlagRule, check_flags, non_negative, positive, unit_interval
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
    # MoCapAct's configuration (trained on GPUs).
    "mocapact": dict(
        layers=8, heads=8, width=768, batch_size=256, learning_rate=3e-6, total_steps=200_000, eval_every=10_000
    ),
    # Sized for a 2-core CPU: small and with a learning rate a small model tolerates.
    "cpu": dict(layers=4, heads=4, width=128, batch_size=32, learning_rate=3e-4, total_steps=3_000, eval_every=1_000),
}
#: Clips evaluated by default: this many, spread over the rollouts' clips (79 for the zoo; all of them is slow).
DEFAULT_EVAL_CLIPS = 4


@show_presets_in_help({"--preset": PRESETS})
@dataclass
class Args:
    rollouts: list[Path]
    """Rollout HDF5 files, or folders holding them (``CMU_*.hdf5``)."""
    run_dir: Path = Path("runs/gpt")
    """Where checkpoints, the best policy and TensorBoard logs go."""
    preset: Literal["cpu", "mocapact"] = "cpu"
    """Defaults for the fields left unset: ``mocapact`` (MoCapAct's run) or ``cpu`` (this machine)."""
    context: int = 32
    """Steps of context (tokens) the transformer sees."""
    layers: int | None = None
    """Transformer blocks."""
    heads: int | None = None
    """Attention heads per block."""
    width: int | None = None
    """Token width."""
    dropout: float = 0.1
    """Dropout on embeddings, attention and residual paths."""
    learning_rate: float | None = None
    """AdamW learning rate."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    batch_size: int | None = None
    """Windows per gradient step."""
    total_steps: int | None = None
    """Gradient steps in all."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    clip_len_upsampling: bool = True
    """Repeat short snippets' windows, as MoCapAct does."""
    prompt_experts: Path | None = None
    """Folder of expert runs to prompt motion completion during evaluation (``zoo`` is the project's zoo);
    unset: no evaluation."""
    eval_clips: list[str] = field(default_factory=list)
    """Clips motion completion evaluates on: clip ids, or a clip set (``zoo-train``, ``zoo-val``). Default:
    4 of the rollouts' clips, evenly spaced in sorted id order (the first, the last and two between; all
    of them when there are 4 or fewer), so that evaluating stays cheap with many clips."""
    exclude_validation_clips: bool = True
    """Leave out the rollouts of snippets on MoCapAct's validation clips (``mocapact_val_clips.txt``), so
    that motion completion there (``complete.py --clips zoo-val``) is on held-out clips, as MoCapAct trains
    on its training clips only; ``--no-exclude-validation-clips`` trains on everything."""
    clip_lists: Path | None = None
    """Folder of MoCapAct's clip lists (default: ``$MOCAPACT_MOCAP_PATH/clip_lists``)."""
    eval_every: int | None = None
    """Gradient steps between evaluations."""
    eval_episodes: int = 4
    """Motion completion episodes per evaluation clip in each evaluation."""
    eval_max_steps: int = 500
    """Longest motion completion episode."""
    checkpoint_every: int = 250
    """Gradient steps between checkpoints."""
    resume: bool = True
    """Continue from <run-dir>/checkpoint/state.pt when it exists; --no-resume starts again from step 0."""
    seed: int = 0
    """Seed of torch, numpy and the environments."""
    torch_threads: int = 2
    """Threads torch may use."""


def default_eval_clips(clips: list[str]) -> list[str]:
    """:data:`DEFAULT_EVAL_CLIPS` of ``clips`` (sorted), evenly spaced: a fixed subset that spans them."""
    if len(clips) <= DEFAULT_EVAL_CLIPS:
        return list(clips)
    return [clips[i] for i in np.linspace(0, len(clips) - 1, DEFAULT_EVAL_CLIPS).round().astype(int)]


#: Each numeric flag's rule once the preset is resolved, checked before anything is read or written.
ARG_RULES: dict[str, FlagRule] = {
    "context": (positive, "a positive number of steps"),
    "layers": (positive, "a positive number of blocks"),
    "heads": (positive, "a positive number of heads"),
    "width": (positive, "a positive width"),
    "dropout": (lambda v: unit_interval(v) and v < 1, "in [0, 1)"),
    "learning_rate": (positive, "a positive, finite rate"),
    "weight_decay": (non_negative, "0 or more, finite"),
    "batch_size": (positive, "a positive number of windows"),
    "total_steps": (positive, "a positive number of gradient steps"),
    "max_grad_norm": (positive, "a positive, finite norm"),
    "eval_every": (positive, "a positive number of gradient steps"),
    "eval_episodes": (positive, "a positive number of episodes"),
    "eval_max_steps": (
        lambda v: positive(v) and v > DEFAULT_PROMPT_STEPS,
        f"more than the {DEFAULT_PROMPT_STEPS}-step prompt",
    ),
    "checkpoint_every": (positive, "a positive number of gradient steps"),
    "torch_threads": (positive, "a positive number of threads"),
}


def check_eval_clips(clips: list[str], prompt_experts: Path, given: str = "--eval-clips") -> None:
    """Raises ``ValueError`` naming the first evaluation clip no expert under ``prompt_experts`` tracks, with the
    clips they do track: motion completion needs one to prompt it. ``given`` says where the clips came from."""
    tracked = sorted(find_experts([prompt_experts]).runs_by_clip)
    lacking = [clip for clip in clips if clip not in tracked]
    if lacking:
        shown = ", ".join(tracked[:8]) + (f" and {len(tracked) - 8} more" if len(tracked) > 8 else "")
        raise ValueError(
            f"{given} {lacking[0]}: no expert under {prompt_experts} tracks it.{suggest(lacking[0], tracked)} "
            f"The experts there track {len(tracked)} clip(s): {shown or 'none'} (`mocapact-zoo list --zoo "
            f"{prompt_experts}` lists a zoo's experts); or pass a clip set: {', '.join(ZOO_CLIP_SETS)}."
        )


def main(args: Args) -> int:
    args = apply_preset(args, PRESETS[args.preset])
    check_flags(args, ARG_RULES)
    # The evaluation's clips and experts fail now, not after the data is read or at the first evaluation.
    prompt_experts = eval_clips = None
    if args.eval_clips and args.prompt_experts is None:
        raise ValueError(
            f"--eval-clips {' '.join(args.eval_clips)}: motion completion is evaluated only with --prompt-experts "
            "(the expert runs that prompt it; zoo: the project's zoo); pass it, or drop --eval-clips."
        )
    if args.prompt_experts is not None:
        prompt_experts = expert_folder_argument(args.prompt_experts)
        if args.eval_clips:
            try:
                eval_clips = resolve_clips(args.eval_clips, args.clip_lists)
            except ValueError as error:
                raise ValueError(f"--eval-clips {' '.join(args.eval_clips)}: {error}") from error
            check_eval_clips(eval_clips, prompt_experts)
    torch.set_num_threads(args.torch_threads)
    checkpoint = resume_state(args.run_dir, args.resume)
    dataset = ExpertDataset(
        args.rollouts,
        "high_level_sans_reference",
        seq_steps=args.context,
        clip_len_upsampling=args.clip_len_upsampling,
        exclude_clips=held_out_clips(args.exclude_validation_clips, args.clip_lists),
    )
    left_out = dataset.files.excluded_snippets
    if left_out:
        print(f"left out {len(left_out)} snippets on MoCapAct's validation clips (held out): {', '.join(left_out)}")
    clips = sorted({snippet.split("-")[0] for snippet in dataset.files.snippet_norm_returns})
    print(
        f"training on {len(dataset.files.paths)} rollout files: {len(dataset.files.snippet_norm_returns)} snippets "
        f"of {len(clips)} clips, {len(dataset.files.episodes)} episodes, {len(dataset)} windows"
    )
    if prompt_experts is not None:
        if eval_clips is None:
            eval_clips = default_eval_clips(clips)
            check_eval_clips(eval_clips, prompt_experts, "the default --eval-clips (of the rollouts' clips)")
        print(f"evaluating motion completion on {len(eval_clips)} clips: {', '.join(eval_clips)}")

    if checkpoint is not None:
        policy = policy_from_state(GPTPolicy, checkpoint, args.run_dir)
        state = {"step": checkpoint["step"], "best_length": checkpoint["best_length"], "args": checkpoint["args"]}
    else:
        seed_everything(args.seed)
        config = GPTConfig(
            observation_keys=dataset.observable_keys,
            observation_size=dataset.observation_size,
            context_length=args.context,
            layers=args.layers,
            heads=args.heads,
            width=args.width,
            dropout=args.dropout,
            extra={"trained_clips": clips},
        )
        policy = GPTPolicy(config)
        policy.set_observation_statistics(dataset.obs_mean, dataset.obs_std)
        state = {"step": 0, "best_length": -1.0, "args": args_json(args)}
    policy.train()
    # GPT's recipe: no weight decay on biases, norms and embeddings.
    decay = [p for n, p in policy.named_parameters() if p.dim() >= 2 and n != "position"]
    no_decay = [p for n, p in policy.named_parameters() if p.dim() < 2 or n == "position"]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
        betas=(0.9, 0.95),
    )
    sampler = np.random.default_rng(args.seed)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        set_rng_state(checkpoint["rng"], sampler)
        print(f"resuming {args.run_dir} at step {state['step']}")

    writer = open_tensorboard(args.run_dir, state["step"] if checkpoint is not None else None)
    progress = tqdm(total=args.total_steps, initial=state["step"], desc="gpt", unit="step")
    started, started_step = time.perf_counter(), state["step"]

    with StopOnSignal() as stop:
        while state["step"] < args.total_steps and not stop.requested:
            observations, actions, weights = dataset.batch(sampler.integers(len(dataset), size=args.batch_size))
            loss, logs = policy.sequence_loss(
                torch.from_numpy(observations), torch.from_numpy(actions), torch.from_numpy(weights)
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
            optimizer.step()
            state["step"] += 1
            step = state["step"]
            progress.update(1)
            if step % 25 == 0:
                for name, value in logs.items():
                    writer.add_scalar(f"train/{name}", value, step)
                writer.add_scalar(
                    "charts/steps_per_second", (step - started_step) / (time.perf_counter() - started), step
                )
                progress.set_postfix(loss=f"{logs['loss']:.3f}")

            last_step = step == args.total_steps
            if prompt_experts is not None and (step % args.eval_every == 0 or last_step):
                policy.eval()
                lengths = run_completion(
                    policy,
                    eval_clips,
                    prompt_experts,
                    args.eval_episodes,
                    max_steps=args.eval_max_steps,
                    seed=args.seed,
                )
                policy.train()
                mean_length = float(np.mean([np.mean(v) for v in lengths.values()]))
                writer.add_scalar("eval/mean_completion_length", mean_length, step)
                progress.write(f"step {step}: mean motion completion length {mean_length:.1f}")
                if mean_length > state["best_length"]:
                    state["best_length"] = mean_length
                    policy.save(args.run_dir / "best")
            if step % args.checkpoint_every == 0 or last_step:
                save_training_checkpoint(args.run_dir, state, policy, optimizer, sampler)
    progress.close()
    if stop.requested:  # the last whole step is kept; the same command goes on from it
        save_training_checkpoint(args.run_dir, state, policy, optimizer, sampler)
        writer.close()
        print(f"{args.run_dir}: stopped by {stop.requested} at step {state['step']}; rerun the same command to resume.")
        return 130
    policy.save(args.run_dir / "final")
    if args.prompt_experts is None:
        policy.save(args.run_dir / "best")
    writer.close()
    print(f"done: policy in {args.run_dir / 'best'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
