"""Transfer-task RL with stable-baselines3: GoToTarget and VelocityControl, with or without a low-level policy.

    # raw 56-dim actions, PPO, sized for a 2-core CPU
    .venv/bin/python baselines/transfer/train.py --task go_to_target --max-minutes 40
    # acting through an NPMP decoder's latent space, MoCapAct's published settings
    .venv/bin/python baselines/transfer/train.py --task velocity_control \
        --low-level-policy path/to/decoder --preset mocapact
    # an sb3-contrib algorithm
    .venv/bin/python baselines/transfer/train.py --task go_to_target --algo tqc

Writes ``<run-dir>`` (default ``runs/transfer/<task>_<ll|raw>_<algo>_seed<seed>``):

* ``best_policy/`` and ``final_policy/``: pickle-free policies (safetensors + JSON,
  with the VecNormalize statistics and a copy of the decoder); load with
  ``mocapact_envs.training.task_policies.load_task_policy``; evaluate with ``evaluate.py``;
* ``checkpoint/state.pt``: the resume checkpoint, tensors and plain values only (the networks',
  optimizers' and entropy coefficient's state dicts, SB3's counters, the VecNormalize statistics,
  the trainer's counters and arguments; not SB3's zip, whose pickles can run code), the run folder of
  every trainer here (``mocapact_envs.training.run_folder``). Rerunning the same command continues from
  it; a larger ``--total-timesteps`` or ``--max-minutes`` trains on;
* ``tb/``: TensorBoard (``time/fps`` is env steps per second; ``eval/mean_reward``,
  ``eval/mean_ep_length``, ``eval/training_minutes`` at each evaluation);
* ``evaluations.json`` and ``args.json``.

Observations stay Dict (SB3's ``MultiInput`` policies; VecNormalize normalises each key).
On resume the model is rebuilt with the checkpoint's hyperparameters (``MODEL_FIELDS``); the budget flags
(``--total-timesteps``, ``--max-minutes``) and the evaluation settings from the command.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization

from mocapact_envs.files import write_json
from mocapact_envs.policies.low_level import LowLevelPolicy, low_level_policy_path
from mocapact_envs.tasks.tracking_settings import DEFAULT_MAX_LATENT
from mocapact_envs.training.run_folder import (
    args_json,
    checkpoint_path,
    open_tensorboard,
    resume_state,
    save_checkpoint,
)
from mocapact_envs.training.scripts import apply_preset, run_cli, show_presets_in_help
from mocapact_envs.training.task_policies import (
    EVAL_LENGTH_TAG,
    EVAL_MINUTES_TAG,
    EVAL_RETURN_TAG,
    ON_POLICY_ALGORITHMS,
    TRANSFER_TASKS,
    algorithm_class,
    make_transfer_vec_env,
    policy_kwargs_from_json,
    read_task_policy_config,
    resolve_task,
    restore_sb3_model,
    save_task_policy,
    sb3_model_state,
)

# Values for every field left unset. `mocapact`: MoCapAct's published transfer settings.
# `cpu`: this 2-core machine, shared. Measured on GoToTarget (PPO, 4096 steps per update, batch 512,
# 10 epochs, 2 workers, machine load ~5): env stepping dominates. 2 x 256 networks: 12 s collecting
# (340 steps/s) + 1.4 s updating; MoCapAct's 3 x 1024: 19 s + 16 s, 2.6x slower per step; through a
# 3 x 1024 decoder: 25 s + 1.8 s (161 steps/s). One dummy worker collected as fast as two subprocess
# workers under that load; 4 workers only take more of the other users' share. Evaluations: 6
# episodes (2 workers) every 5 updates, at most ~15% of the time once episodes run to their end.
# Details: baselines/transfer/README.md.
MOCAPACT_PRESET: dict[str, Any] = dict(
    total_timesteps=100_000_000,
    n_envs=16,
    hidden_sizes=(1024, 1024, 1024),
    value_hidden_sizes=(1024, 1024, 1024),
    activation="tanh",
    learning_rate=5e-5,
    steps_per_update=16_384,
    batch_size=1024,
    n_epochs=10,
    gamma=0.99,
    gae_lambda=0.95,
    clip_range=0.2,
    ent_coef=0.0,
    vf_coef=0.5,
    max_grad_norm=1.0,
    target_kl=0.3,
    normalize_observations=True,
    normalize_rewards=True,
    eval_every_steps=500_000,
    eval_episodes=500,
    eval_envs=16,
    buffer_size=1_000_000,
)
PRESETS: dict[str, dict[str, Any]] = {
    "mocapact": MOCAPACT_PRESET,
    # MoCapAct's settings but for these (measurements above).
    "cpu": {
        **MOCAPACT_PRESET,
        "total_timesteps": 3_000_000,
        "n_envs": 2,
        "hidden_sizes": (256, 256),
        "value_hidden_sizes": (256, 256),
        "learning_rate": 3e-4,
        "steps_per_update": 4096,
        "batch_size": 512,
        "eval_every_steps": 20_480,
        "eval_episodes": 6,
        "eval_envs": 2,
        "buffer_size": 200_000,
    },
}
# Per-algorithm values that replace the preset's (MoCapAct published PPO only); explicit flags still win.
ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {},
    "recurrent_ppo": dict(lstm_hidden_size=256),
    "tqc": dict(learning_rate=3e-4, batch_size=256, learning_starts=10_000, tau=0.005, train_freq=1, gradient_steps=1),
}
# MoCapAct's initial action std: 2.5 in the [-3, 3] latent box, 0.5 in the [-1, 1] action box.
ACTION_STD_WITH_LOW_LEVEL, ACTION_STD_RAW = 2.5, 0.5
# Fields that must not change when a run resumes: they change what the checkpoint is.
RUN_IDENTITY = ("task", "low_level_policy", "algo", "seed")
# The model's hyperparameters: a resumed run rebuilds its model with the checkpoint's values of these.
MODEL_FIELDS = (
    "hidden_sizes", "value_hidden_sizes", "activation", "log_std_init", "lstm_hidden_size", "learning_rate", "gamma",
    "batch_size", "max_grad_norm", "steps_per_update", "n_epochs", "gae_lambda", "clip_range", "ent_coef", "vf_coef",
    "target_kl", "buffer_size", "learning_starts", "tau", "train_freq", "gradient_steps",
)  # fmt: skip
# The trainer's counters, which a checkpoint carries across runs.
TRAINER_STATE = ("num_timesteps", "training_seconds", "best_mean_return", "next_eval_step", "last_eval_step")


@show_presets_in_help({"--preset": PRESETS, "--algo": ALGORITHM_DEFAULTS})
@dataclass
class Args:
    """Train a transfer-task policy. Fields left unset take --preset's value (PRESETS in this file)."""

    # -- what to train, where ----------------------------------------------------------------
    task: str = "go_to_target"
    """go_to_target, velocity_control, or their env ids mocapact/GoToTarget-v0, mocapact/VelocityControl-v0"""
    low_level_policy: str | None = None
    """directory of a saved NPMP decoder (LowLevelPolicy.save), or `pretrained` for the one shipped with
    the package; actions become its latents in [-max-latent, max-latent]; unset: the raw 56 actuator actions"""
    algo: Literal["ppo", "recurrent_ppo", "tqc"] = "ppo"
    """stable-baselines3 PPO, or sb3-contrib RecurrentPPO (LSTM) or TQC (off-policy)"""
    preset: Literal["cpu", "mocapact"] = "cpu"
    """values for every unset field: `cpu` (this 2-core machine) or `mocapact` (MoCapAct's published
    transfer settings); explicit flags override it"""
    seed: int = 0
    """seed of python, numpy, torch, the networks and the environments (worker i gets seed + i)"""
    run_dir: str | None = None
    """output folder; unset: runs/transfer/<task>_<ll|raw>_<algo>_seed<seed>"""
    total_timesteps: int | None = None
    """env steps to train for in all, across resumes (on-policy runs end at a whole update)"""
    max_minutes: float | None = None
    """stop (resumable) once the run has trained this many wall-clock minutes in all, across resumes;
    unset: no limit"""
    resume: bool = True
    """continue from <run-dir>/checkpoint/state.pt when it exists; --no-resume starts again from step 0 (its first
    checkpoint replaces the old one)"""
    checkpoint_every_seconds: float = 120.0
    """write the resume checkpoint at the next update once this long has passed since the last"""
    progress_bar: bool = True
    """show SB3's progress bar"""
    torch_threads: int = 1
    """torch CPU threads of this process (workers use one each)"""
    device: str = "cpu"
    """torch device of the networks"""

    # -- environment -----------------------------------------------------------------------------
    n_envs: int | None = None
    """parallel training environments"""
    vec_env: Literal["subproc", "dummy"] | None = None
    """`subproc`: a process per environment; `dummy`: all in this process; unset: subproc when n-envs > 1"""
    episode_steps: int | None = None
    """episode length override (tasks: 833 GoToTarget, 2000 VelocityControl); unset: the task's"""
    max_latent: float = DEFAULT_MAX_LATENT
    """bound of each latent dimension with a low-level policy (MoCapAct: 3)"""

    # -- networks ------------------------------------------------------------------------------
    hidden_sizes: tuple[int, ...] | None = None
    """hidden layers of the policy (actor) MLP"""
    value_hidden_sizes: tuple[int, ...] | None = None
    """hidden layers of the value (critic) MLP, separate from the policy's"""
    activation: Literal["tanh", "relu", "elu"] | None = None
    """hidden activation of both MLPs"""
    log_std_init: float | None = None
    """initial log std of the Gaussian policy (ppo, recurrent_ppo); unset: log 2.5 with a low-level
    policy, log 0.5 without (MoCapAct)"""
    lstm_hidden_size: int | None = None
    """LSTM width (recurrent_ppo)"""

    # -- optimisation ------------------------------------------------------------------------
    learning_rate: float | None = None
    """Adam learning rate"""
    gamma: float | None = None
    """discount factor (also VecNormalize's for the return that scales rewards)"""
    batch_size: int | None = None
    """minibatch size"""
    max_grad_norm: float | None = None
    """gradient norm clip (ppo, recurrent_ppo)"""
    normalize_observations: bool | None = None
    """normalise each observation key by running mean and std (VecNormalize, clip 10)"""
    normalize_rewards: bool | None = None
    """scale rewards by the std of a running discounted return (VecNormalize)"""

    # -- PPO, RecurrentPPO ---------------------------------------------------------------------
    steps_per_update: int | None = None
    """env steps collected per update across workers (n_steps = steps-per-update / n-envs)"""
    n_epochs: int | None = None
    """passes over each update's data"""
    gae_lambda: float | None = None
    """GAE lambda"""
    clip_range: float | None = None
    """PPO ratio clip"""
    ent_coef: float | None = None
    """entropy bonus coefficient"""
    vf_coef: float | None = None
    """value loss coefficient"""
    target_kl: float | None = None
    """stop an update's epochs early past this approximate KL (SB3 stops at 1.5 x); 0 disables"""

    # -- TQC -------------------------------------------------------------------------------------
    buffer_size: int | None = None
    """replay buffer transitions (not checkpointed: a resumed run refills it for learning-starts steps)"""
    learning_starts: int | None = None
    """env steps before the first gradient step"""
    tau: float | None = None
    """target network soft-update rate"""
    train_freq: int | None = None
    """env steps (per worker) between gradient phases"""
    gradient_steps: int | None = None
    """gradient steps per phase"""

    # -- evaluation (deterministic actions) -----------------------------------------------------
    eval_every_steps: int | None = None
    """env steps between evaluations (and one at the end)"""
    eval_episodes: int | None = None
    """episodes per evaluation"""
    eval_envs: int | None = None
    """parallel evaluation environments"""


def resolve_args(args: Args) -> Args:
    """Fills unset fields from the preset, the algorithm's defaults and MoCapAct's std rule; checks values."""
    args = apply_preset(args, {**PRESETS[args.preset], **ALGORITHM_DEFAULTS[args.algo]})
    if args.log_std_init is None:
        std = ACTION_STD_WITH_LOW_LEVEL if args.low_level_policy else ACTION_STD_RAW
        args = dataclasses.replace(args, log_std_init=math.log(std))
    if args.vec_env is None:
        args = dataclasses.replace(args, vec_env="subproc" if args.n_envs > 1 else "dummy")
    if args.low_level_policy is not None:  # absolute: a resumed run compares it, a saved policy records it
        args = dataclasses.replace(args, low_level_policy=str(low_level_policy_path(args.low_level_policy).resolve()))
    args = dataclasses.replace(args, task=resolve_task(args.task))  # the env id, however it was named
    if args.run_dir is None:
        task = next(name for name, env_id in TRANSFER_TASKS.items() if env_id == args.task)
        kind = "ll" if args.low_level_policy else "raw"
        args = dataclasses.replace(args, run_dir=f"runs/transfer/{task}_{kind}_{args.algo}_seed{args.seed}")
    for name in ("total_timesteps", "n_envs", "steps_per_update", "batch_size", "eval_every_steps", "eval_episodes"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if args.algo in ON_POLICY_ALGORITHMS and args.steps_per_update % args.n_envs:
        raise ValueError(
            f"--steps-per-update {args.steps_per_update} is not a multiple of --n-envs {args.n_envs}; "
            "each worker collects the same number of steps."
        )
    return args


def model_from_checkpoint(args: Args, checkpoint: dict[str, Any], env: VecNormalize, source: str):
    """The checkpoint's model: built anew with its hyperparameters (MODEL_FIELDS of its arguments), then its
    weights, optimizers, counters and ``VecNormalize`` statistics loaded (nothing unpickled)."""
    saved = json.loads(checkpoint["args"])
    model_args = dataclasses.replace(args, **{name: saved[name] for name in MODEL_FIELDS if name in saved})
    model = build_model(model_args, env, policy_kwargs_of(model_args))
    restore_sb3_model(model, checkpoint, source)
    return model


def build_model(args: Args, env: VecNormalize, policy_kwargs: dict[str, Any]):
    """A new SB3 model of ``args.algo`` on ``env``."""
    common = dict(
        learning_rate=args.learning_rate,
        gamma=args.gamma,
        batch_size=args.batch_size,
        policy_kwargs=policy_kwargs_from_json(policy_kwargs),
        seed=args.seed,
        device=args.device,
        verbose=0,
    )
    if args.algo in ON_POLICY_ALGORITHMS:
        policy = "MultiInputLstmPolicy" if args.algo == "recurrent_ppo" else "MultiInputPolicy"
        return algorithm_class(args.algo)(
            policy,
            env,
            n_steps=args.steps_per_update // args.n_envs,
            n_epochs=args.n_epochs,
            gae_lambda=args.gae_lambda,
            clip_range=args.clip_range,
            ent_coef=args.ent_coef,
            vf_coef=args.vf_coef,
            max_grad_norm=args.max_grad_norm,
            target_kl=args.target_kl if args.target_kl > 0 else None,
            **common,
        )
    return algorithm_class(args.algo)(
        "MultiInputPolicy",
        env,
        buffer_size=args.buffer_size,
        learning_starts=args.learning_starts,
        tau=args.tau,
        train_freq=args.train_freq,
        gradient_steps=args.gradient_steps,
        **common,
    )


def policy_kwargs_of(args: Args) -> dict[str, Any]:
    """The networks as JSON (saved with the policy, turned into SB3's kwargs by policy_kwargs_from_json)."""
    if args.algo == "tqc":
        net_arch = {"pi": list(args.hidden_sizes), "qf": list(args.value_hidden_sizes)}
        return {"net_arch": net_arch, "activation_fn": args.activation}
    kwargs = {
        "net_arch": {"pi": list(args.hidden_sizes), "vf": list(args.value_hidden_sizes)},
        "activation_fn": args.activation,
        "log_std_init": args.log_std_init,
    }
    if args.algo == "recurrent_ppo":
        kwargs["lstm_hidden_size"] = args.lstm_hidden_size
    return kwargs


class TrainingMonitor(BaseCallback):
    """Evaluates every ``eval_every_steps``, keeps the best policy, checkpoints, and stops at ``--max-minutes``."""

    def __init__(self, args: Args, run_dir: Path, eval_env: VecNormalize, state: dict[str, Any], save_policy):
        super().__init__()
        self.args, self.run_dir, self.eval_env, self.state = args, run_dir, eval_env, state
        self.save_policy = save_policy
        evaluations_path = run_dir / "evaluations.json"
        evaluations = json.loads(evaluations_path.read_text())["evaluations"] if evaluations_path.is_file() else []
        # Evaluations a crashed run made after its checkpoint are not part of this run's history.
        self.evaluations = [e for e in evaluations if e["num_timesteps"] <= state["num_timesteps"]]
        self.stop_for_time = False
        self.rollout_start_step = state["num_timesteps"]
        self.start_time = self.last_checkpoint_time = time.time()

    def training_minutes(self) -> float:
        return (self.state["training_seconds"] + time.time() - self.start_time) / 60

    def trainer_state(self) -> dict[str, Any]:
        return {**self.state, "num_timesteps": self.num_timesteps, "training_seconds": 60 * self.training_minutes()}

    def checkpoint(self) -> None:
        state = {**self.trainer_state(), "args": args_json(self.args), **sb3_model_state(self.model)}
        save_checkpoint(self.run_dir, state)
        self.last_checkpoint_time = time.time()

    def _on_rollout_start(self) -> None:
        self.rollout_start_step = self.num_timesteps
        # Between updates the networks, the optimizer and the step counter agree: the moment to checkpoint.
        if self.args.max_minutes is not None and self.training_minutes() >= self.args.max_minutes:
            self.stop_for_time = True
        elif time.time() - self.last_checkpoint_time >= self.args.checkpoint_every_seconds:
            self.checkpoint()

    def _on_rollout_end(self) -> None:
        self.logger.record("time/training_minutes", self.training_minutes())

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.state["next_eval_step"]:
            self.evaluate()
        return not self.stop_for_time

    def evaluate(self) -> None:
        sync_envs_normalization(self.model.get_env(), self.eval_env)
        returns, lengths = evaluate_policy(
            self.model, self.eval_env, self.args.eval_episodes, deterministic=True, return_episode_rewards=True
        )
        record = {
            "num_timesteps": self.num_timesteps,
            "training_minutes": self.training_minutes(),
            "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)),
            "mean_length": float(np.mean(lengths)),
            "episodes": len(returns),
        }
        self.logger.record(EVAL_RETURN_TAG, record["mean_return"])
        self.logger.record("eval/std_reward", record["std_return"])
        self.logger.record(EVAL_LENGTH_TAG, record["mean_length"])
        self.logger.record(EVAL_MINUTES_TAG, record["training_minutes"])
        self.logger.dump(self.num_timesteps)
        best = self.state["best_mean_return"]
        improved = best is None or record["mean_return"] > best
        if improved:
            self.state["best_mean_return"] = record["mean_return"]
            self.save_policy(self.run_dir / "best_policy", record)
        self.evaluations.append(record)
        write_json(self.run_dir / "evaluations.json", {"evaluations": self.evaluations})
        every = self.args.eval_every_steps
        self.state["next_eval_step"] = (self.num_timesteps // every + 1) * every
        self.state["last_eval_step"] = self.num_timesteps
        print(
            f"step {self.num_timesteps:,} ({record['training_minutes']:.1f} min): eval return "
            f"{record['mean_return']:.2f} +- {record['std_return']:.2f}, length {record['mean_length']:.1f}"
            f"{'  (new best, saved)' if improved else ''}",
            flush=True,
        )


def main(args: Args) -> int:
    try:
        args = resolve_args(args)
        if args.low_level_policy is not None:
            LowLevelPolicy.load(args.low_level_policy)  # a bad directory fails now, with a message naming it
        checkpoint = resume_state(args.run_dir, args.resume)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir)
    if checkpoint is not None:
        saved_args = json.loads(checkpoint["args"])
        changed = [name for name in RUN_IDENTITY if saved_args[name] != getattr(args, name)]
        if changed:
            print(
                f"error: {run_dir} was trained with different {', '.join(changed)} "
                f"({', '.join(f'{n}={saved_args[n]!r}' for n in changed)}); use another --run-dir, "
                "or --no-resume to start it over.",
                file=sys.stderr,
            )
            return 2
    # The trainer's counters; a checkpoint carries them across runs.
    state = {
        "num_timesteps": 0,
        "training_seconds": 0.0,
        "best_mean_return": None,
        "next_eval_step": args.eval_every_steps,
        "last_eval_step": -1,
    }
    if checkpoint is not None:
        state = {name: checkpoint[name] for name in TRAINER_STATE}
        if (run_dir / "best_policy" / "config.json").is_file():  # it may have improved after the checkpoint
            saved_best = read_task_policy_config(run_dir / "best_policy")["metadata"]["evaluation"]["mean_return"]
            if state["best_mean_return"] is None or saved_best > state["best_mean_return"]:
                state["best_mean_return"] = saved_best
    done_reason = None
    if state["num_timesteps"] >= args.total_timesteps:
        done_reason = f"reached {state['num_timesteps']:,} >= {args.total_timesteps:,} steps"
    elif args.max_minutes is not None and state["training_seconds"] >= 60 * args.max_minutes:
        done_reason = f"trained {state['training_seconds'] / 60:.1f} >= {args.max_minutes} minutes"
    if done_reason:
        print(f"{run_dir}: already {done_reason}; nothing to do (raise the budget to train on).")
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "args.json", dataclasses.asdict(args))

    # -- seeding (a resumed run reseeds from its step count: RNG states are not checkpointed) ------
    seed = args.seed + state["num_timesteps"]
    set_random_seed(seed)

    # -- environments ---------------------------------------------------------------------------
    env_kwargs = {} if args.episode_steps is None else {"episode_steps": args.episode_steps}
    env_config = {
        "task": args.task,
        "low_level_policy": args.low_level_policy,
        "max_latent": args.max_latent,
        "env_kwargs": env_kwargs,
    }
    make_env = dict(low_level_policy=args.low_level_policy, max_latent=args.max_latent, **env_kwargs)
    train_env = VecNormalize(
        make_transfer_vec_env(args.task, args.n_envs, seed=seed, vec_env=args.vec_env, **make_env),
        norm_obs=args.normalize_observations,
        norm_reward=args.normalize_rewards,
        gamma=args.gamma,
    )
    eval_env = VecNormalize(
        make_transfer_vec_env(
            args.task,
            args.eval_envs,
            seed=seed + 10_000,
            vec_env="dummy" if args.eval_envs == 1 else args.vec_env,  # one env gains nothing from a process
            **make_env,
        ),
        norm_obs=args.normalize_observations,
        norm_reward=False,
        training=False,
    )

    torch.set_num_threads(args.torch_threads)  # after the envs: an in-process worker sets one thread

    # -- model ------------------------------------------------------------------------------------
    policy_kwargs = policy_kwargs_of(args)
    if checkpoint is None:
        model = build_model(args, train_env, policy_kwargs)
    else:
        try:
            model = model_from_checkpoint(args, checkpoint, train_env, str(checkpoint_path(run_dir)))
        except ValueError as error:
            train_env.close()
            eval_env.close()
            print(f"error: {error}", file=sys.stderr)
            return 2
        model.set_random_seed(seed)
        model._last_obs = None  # the checkpoint's last observation belongs to the old workers: reset them
        if args.algo == "tqc":  # the replay buffer starts empty again
            model.learning_starts = model.num_timesteps + args.learning_starts
        print(f"resuming {run_dir} from step {model.num_timesteps:,}")
    # Marks the (re)start in TensorBoard: readers drop what was logged past it. SB3's logger writes the events.
    tensorboard = open_tensorboard(run_dir, model.num_timesteps if checkpoint is not None else None)
    tensorboard.close()
    model.set_logger(configure(tensorboard.log_dir, ["tensorboard"]))

    def save_policy(directory: Path, evaluation: dict[str, Any] | None) -> None:
        metadata = {
            "num_timesteps": model.num_timesteps,
            "training_minutes": monitor.training_minutes(),
            "evaluation": evaluation,
            "args": dataclasses.asdict(args),
        }
        save_task_policy(
            directory, model, args.algo, policy_kwargs, env_config, model.get_vec_normalize_env(), metadata
        )

    monitor = TrainingMonitor(args, run_dir, eval_env, state, save_policy)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops like Ctrl-C
    try:
        model.learn(
            total_timesteps=args.total_timesteps - model.num_timesteps,
            callback=monitor,
            reset_num_timesteps=False,
            progress_bar=args.progress_bar,
        )
        # Every run ends evaluated, checkpointed and saved. A time stop takes one vector step into a rollout
        # that is never trained on: the networks are those of the rollout's start.
        trained_up_to = monitor.rollout_start_step if monitor.stop_for_time else model.num_timesteps
        if monitor.state["last_eval_step"] < trained_up_to:
            monitor.evaluate()
        monitor.checkpoint()
        save_policy(run_dir / "final_policy", monitor.evaluations[-1])
        reason = "--max-minutes reached" if monitor.stop_for_time else "budget reached"
        print(f"{run_dir}: {reason} at step {model.num_timesteps:,}; best eval return {state['best_mean_return']:.2f}")
    except KeyboardInterrupt:
        saved = checkpoint_path(run_dir).is_file()
        print(
            f"{run_dir}: interrupted; rerun the same command to resume ({'from its checkpoint' if saved else 'from scratch'})."
        )
        return 130
    finally:
        train_env.close()
        eval_env.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
