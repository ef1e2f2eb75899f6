"""PPO clip-snippet expert, as MoCapAct trains them, in one file (cleanrl's ppo_continuous_action.py layout).

One expert tracks one clip or snippet of the CMU humanoid tracking task:

    .venv/bin/python baselines/ppo_expert/train.py --clip CMU_016_22 --seed 0
    .venv/bin/python baselines/ppo_expert/train.py --clip CMU_016_22-0-82 --preset mocapact

Writes ``<log-root>/<clip>-<start>-<end>/<seed>/``: ``clip_info.json``,
``eval_rsi/model/`` and ``eval_start/model/`` (the best model of each
evaluation, pickle-free: load with ``mocapact_envs.load_expert``),
``checkpoint/state.pt`` (to resume) and ``tb/`` (TensorBoard). Rerunning the same
command resumes from the checkpoint; a larger ``--total-timesteps`` trains on.

Gymnasium 1.x vector envs autoreset on the step after an episode ends: that
step only resets (reward 0), so it is left out of the PPO loss, the reward
statistics and the episode metrics, and it is not counted as an env step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import tyro
from gymnasium.vector import AutoresetMode
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from mocapact_envs.envs import (
    batched_observation,
    check_backend,
    clamp_min_steps,
    make_tracking_vec_env,
    resolve_snippet,
)
from mocapact_envs.evaluation import EVAL_SETTINGS, make_eval_vec_env, run_episodes
from mocapact_envs.experts import save_expert
from mocapact_envs.io import replace_atomically, write_json
from mocapact_envs.metrics import EpisodeTracker, summarize
from mocapact_envs.observables import flatten_observation
from mocapact_envs.policies.expert import ExpertActorCritic, ObservationNormalizer, RewardNormalizer
from mocapact_envs.reference_actions import TIME_KEY, ReferenceActions
from mocapact_envs.training import apply_preset, seed_everything

# Values for every field left at None. `mocapact` is MoCapAct's published setting;
# `cpu` learns fastest on a 2-core CPU (measurements: baselines/ppo_expert/README.md).
MOCAPACT_PRESET: dict[str, Any] = dict(
    total_timesteps=150_000_000,
    num_envs=8,
    num_steps=1024,  # 8192 steps per update across workers
    min_steps=10,
    action_parameterization="absolute",
    policy_hidden_sizes=(1024, 1024, 1024),
    value_hidden_sizes=(1024, 1024, 1024),
    activation="tanh",
    log_std_init=math.log(0.1),
    learn_log_std=False,
    learning_rate=1e-5,
    lr_schedule="thirds",
    minibatch_size=512,
    update_epochs=10,
    gamma=0.95,
    gae_lambda=0.95,
    clip_coef=0.25,
    ent_coef=0.0,
    vf_coef=0.5,
    max_grad_norm=1.0,
    target_kl=None,
    normalize_observations=True,
    normalize_rewards=True,
    eval_every_steps=1_000_000,
    eval_rsi_episodes=1000,
    eval_start_episodes=100,
    eval_num_envs=8,
)
PRESETS: dict[str, dict[str, Any]] = {
    "mocapact": MOCAPACT_PRESET,
    # MoCapAct's settings but for these: smaller networks, a larger learning rate annealed to 0 over a
    # budget of about 100 minutes here, a longer discount horizon, smaller and more frequent updates
    # and quick evaluations.
    "cpu": {
        **MOCAPACT_PRESET,
        "total_timesteps": 5_500_000,
        "num_envs": 4,
        "num_steps": 256,
        "policy_hidden_sizes": (256, 256),
        "value_hidden_sizes": (256, 256),
        "learning_rate": 3e-4,
        "lr_schedule": "linear",
        "gamma": 0.99,
        "minibatch_size": 256,
        "update_epochs": 5,
        "eval_every_steps": 50_000,
        "eval_rsi_episodes": 20,
        "eval_start_episodes": 5,
        "eval_num_envs": 4,
    },
}


@dataclass
class Args:
    """Train one clip expert with PPO. Fields left unset take --preset's value (PRESETS in this file)."""

    # -- what to train, where --------------------------------------------------
    clip: str = "CMU_016_22"
    """clip id (CMU_016_22) or snippet id (CMU_016_22-0-82) the expert tracks"""
    seed: int = 0
    """seed of torch, numpy, random and the environments; also names the run folder"""
    preset: Literal["cpu", "mocapact"] = "cpu"
    """hyperparameters for every field left unset: `cpu` (fastest learning on a 2-core CPU) or `mocapact`
    (MoCapAct's published settings); explicit flags override it"""
    log_root: str = "runs/experts"
    """root of the MoCapAct layout <log-root>/<clip>-<start>-<end>/<seed>/"""
    backend: str | None = None
    """tracking env backend; unset: "fast" where available, else "dm_control" """
    vectorization_mode: Literal["sync", "async", "vector_entry_point"] | None = None
    """how sub-environments run; unset: the native vector env with the fast backend, else sync"""
    total_timesteps: int | None = None
    """env steps to train for in all (across resumes); unset: from the preset"""
    max_minutes: float | None = None
    """stop (checkpointed, resumable) after this many minutes of this invocation; unset: no limit"""
    resume: bool = True
    """continue from <run>/checkpoint/state.pt when it exists; --no-resume starts again from step 0"""
    torch_threads: int = 1
    """torch CPU threads (the environments step in this process too)"""
    progress_bar: bool = True
    """show a progress bar"""
    checkpoint_every_seconds: float = 30.0
    """write the resume checkpoint after an update once this long has passed since the last one"""

    # -- environment -------------------------------------------------------------
    num_envs: int | None = None
    """parallel training environments"""
    min_steps: int | None = None
    """fewest steps a random start leaves before the snippet end (training episodes)"""
    termination_error_threshold: float = 0.3
    """tracking error that ends an episode"""
    act_noise: float = 0.0
    """std of Gaussian noise the training env adds to actions (MoCapAct: 0)"""
    action_parameterization: Literal["absolute", "reference_residual"] | None = None
    """`absolute`: the policy outputs the action (MoCapAct); `reference_residual`: the policy's output is added to
    the reference action (the servo targets of the next reference pose), saved with the expert so that it still
    maps observations to absolute actions"""

    # -- network -------------------------------------------------------------------
    policy_hidden_sizes: tuple[int, ...] | None = None
    """hidden layer sizes of the policy MLP"""
    value_hidden_sizes: tuple[int, ...] | None = None
    """hidden layer sizes of the value MLP (separate from the policy's)"""
    activation: Literal["tanh", "relu", "elu"] | None = None
    """hidden activation of both MLPs"""
    log_std_init: float | None = None
    """initial log std of the Gaussian policy (MoCapAct: log 0.1)"""
    learn_log_std: bool | None = None
    """train the log std (MoCapAct: frozen)"""

    # -- PPO -------------------------------------------------------------------------
    learning_rate: float | None = None
    """Adam learning rate at the start"""
    lr_schedule: Literal["constant", "thirds", "linear"] | None = None
    """`thirds`: divided by 1.73 after each third of training (MoCapAct); `linear`: annealed to 0"""
    num_steps: int | None = None
    """steps each environment collects per update (update size = num_envs * num_steps)"""
    minibatch_size: int | None = None
    """transitions per gradient step"""
    update_epochs: int | None = None
    """passes over each update's data"""
    gamma: float | None = None
    """discount factor (also of the reward normaliser's running return)"""
    gae_lambda: float | None = None
    """GAE lambda"""
    clip_coef: float | None = None
    """PPO's ratio clip range"""
    ent_coef: float | None = None
    """entropy bonus coefficient"""
    vf_coef: float | None = None
    """value loss coefficient (loss = mean squared error, as SB3)"""
    max_grad_norm: float | None = None
    """gradient norm clip"""
    target_kl: float | None = None
    """stop an update's epochs once the approximate KL exceeds this; unset: no limit (both presets)"""
    normalize_observations: bool | None = None
    """normalise observations by running mean and std (SB3 VecNormalize, clip 10)"""
    normalize_rewards: bool | None = None
    """scale rewards by the std of a running discounted return (SB3 VecNormalize)"""

    # -- evaluation (MoCapAct's: deterministic; random starts with noise 0.1, starts with noise 0.01) --
    eval_every_steps: int | None = None
    """env steps between evaluations"""
    eval_rsi_episodes: int | None = None
    """random-start evaluation episodes (MoCapAct: 1000)"""
    eval_start_episodes: int | None = None
    """start-of-snippet evaluation episodes (MoCapAct: 100)"""
    eval_num_envs: int | None = None
    """parallel environments of each evaluation"""
    early_stop_min_norm_length: float = 0.98
    """early stopping needs the random-start normalized episode length at least this"""
    early_stop_min_delta: float = 0.01
    """a random-start normalized return gain smaller than this is no improvement"""
    early_stop_patience: int = 10
    """stop after more than this many evaluations without improvement"""


def resolve_preset(args: Args) -> Args:
    """Fills every field left at None from the chosen preset; explicit flags win."""
    return apply_preset(args, PRESETS[args.preset])


def learning_rate_at(args: Args, global_step: int) -> float:
    progress = min(global_step / max(args.total_timesteps, 1), 1.0)
    if args.lr_schedule == "thirds":
        return args.learning_rate / 1.73 ** min(int(3 * progress), 2)
    if args.lr_schedule == "linear":
        return args.learning_rate * (1.0 - progress)
    return args.learning_rate


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain types (loads with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Written to a temporary name then renamed: a crash never leaves half a checkpoint."""
    replace_atomically(path, lambda tmp: torch.save(state, tmp))


def main(args: Args) -> int:
    args = resolve_preset(args)
    try:
        snippet = resolve_snippet(args.clip)
        backend = check_backend(args.backend)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_dir = Path(args.log_root) / snippet.id / str(args.seed)
    checkpoint_path = run_dir / "checkpoint" / "state.pt"
    run_dir.mkdir(parents=True, exist_ok=True)
    clip_info = {
        "clip_id": snippet.clip_id,
        "start_step": snippet.start,
        "end_step": snippet.end,
        "snippet_id": snippet.id,
    }
    write_json(run_dir / "clip_info.json", clip_info)

    # -- seeding ---------------------------------------------------------------------
    seed_everything(args.seed)
    torch.set_num_threads(args.torch_threads)

    # -- environments ----------------------------------------------------------------
    env_kwargs = dict(
        observables="time_index",
        ref_steps=(0,),
        termination_error_threshold=args.termination_error_threshold,
    )
    envs = make_tracking_vec_env(
        args.clip,
        args.num_envs,
        backend,
        args.vectorization_mode,
        random_start=True,
        min_steps=clamp_min_steps(snippet, args.min_steps),
        act_noise=args.act_noise,
        **env_kwargs,
    )
    autoreset_mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if autoreset_mode != AutoresetMode.NEXT_STEP:
        raise RuntimeError(f"the trainer expects next-step autoreset, the vector env uses {autoreset_mode}.")
    observation_keys = list(envs.single_observation_space.spaces)
    observation_sizes = [envs.single_observation_space[k].shape[0] for k in observation_keys]
    observation_size, action_size = sum(observation_sizes), envs.single_action_space.shape[0]
    eval_envs: dict[str, Any] = {}  # built at the first evaluation
    # With residual actions the policy's mean is added to the reference action at the observed step.
    reference_actions = None
    if args.action_parameterization == "reference_residual":
        reference_actions = ReferenceActions.for_snippet(args.clip)
        time_column = sum(observation_sizes[: observation_keys.index(TIME_KEY)])

    def action_offset(flat_observation: np.ndarray) -> torch.Tensor | None:
        if reference_actions is None:
            return None
        return torch.as_tensor(reference_actions.at(flat_observation[:, time_column : time_column + 1]))

    # -- agent -------------------------------------------------------------------------
    policy = ExpertActorCritic(
        observation_size,
        action_size,
        args.policy_hidden_sizes,
        args.value_hidden_sizes,
        args.activation,
        args.log_std_init,
        args.learn_log_std,
    )
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=args.learning_rate, eps=1e-5)
    obs_normalizer = ObservationNormalizer(observation_size, enabled=args.normalize_observations)
    reward_normalizer = RewardNormalizer(args.num_envs, args.gamma, enabled=args.normalize_rewards)

    # -- state that a checkpoint carries across runs -------------------------------------
    global_step, update, training_seconds = 0, 0, 0.0
    best_return = {kind: -math.inf for kind in EVAL_SETTINGS}
    early_stop = {"best_norm_return": -math.inf, "evals_without_improvement": 0, "stopped": False}
    evaluations: list[dict[str, Any]] = []
    resumed = args.resume and checkpoint_path.is_file()
    if resumed:
        state = torch.load(checkpoint_path, weights_only=True)
        try:
            policy.load_state_dict(state["policy"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as error:
            print(
                f"error: {checkpoint_path} was written with other network settings ({run_dir / 'args.json'}); "
                f"pass the same flags, or --no-resume to start again.\n{error}",
                file=sys.stderr,
            )
            envs.close()
            return 2
        obs_normalizer.rms.load_state_dict(state["obs_rms"])
        reward_normalizer.return_rms.load_state_dict(state["return_rms"])
        set_rng_state(state["rng"])
        global_step, update, training_seconds = state["global_step"], state["update"], state["training_seconds"]
        best_return, early_stop, evaluations = state["best_return"], state["early_stop"], state["evaluations"]
        print(f"resuming {run_dir} from step {global_step:,} (update {update})")
    if early_stop["stopped"] or global_step >= args.total_timesteps:
        reason = (
            "stopped early" if early_stop["stopped"] else f"reached {global_step:,} >= {args.total_timesteps:,} steps"
        )
        print(f"{run_dir}: already {reason}; nothing to do (raise --total-timesteps to train on).")
        envs.close()
        return 0
    write_json(run_dir / "args.json", dataclasses.asdict(args))

    # TensorBoard continues a resumed run; purge_step drops what the old run logged past its checkpoint.
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=global_step + 1 if resumed else None)
    if not resumed:
        table = "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    checkpointed_step = global_step  # where a rerun would resume

    def checkpoint() -> None:
        nonlocal checkpointed_step
        save_checkpoint(
            checkpoint_path,
            {
                "global_step": global_step,
                "update": update,
                "training_seconds": training_seconds + time.time() - start_time,
                "policy": policy.state_dict(),
                "optimizer": optimizer.state_dict(),
                "obs_rms": {k: torch.from_numpy(v) for k, v in obs_normalizer.rms.state_dict().items()},
                "return_rms": {k: torch.from_numpy(v) for k, v in reward_normalizer.return_rms.state_dict().items()},
                "rng": rng_state(),
                "best_return": best_return,
                "early_stop": early_stop,
                "evaluations": evaluations,
                "args": json.dumps(dataclasses.asdict(args)),
            },
        )
        checkpointed_step = global_step

    def save_model(kind: str, summary: dict[str, float]) -> None:
        save_expert(
            run_dir / kind / "model",
            policy,
            obs_normalizer,
            observation_keys,
            observation_sizes,
            reward_normalizer.return_rms,
            reward_normalizer.config(),
            metadata={**clip_info, "ref_steps": [0], "global_step": global_step, "evaluation": {kind: summary}},
            reference_actions=reference_actions,
        )

    @torch.no_grad()
    def act_deterministic(observation: dict[str, np.ndarray]) -> np.ndarray:
        flat = flatten_observation(observation, observation_keys)
        x = torch.as_tensor(obs_normalizer(flat))
        return policy.act(x, True, action_offset(flat.reshape(len(x), -1))).clamp(-1.0, 1.0).numpy()

    def evaluate() -> bool:
        """MoCapAct's two evaluations; saves each one's best model; True when training should stop early."""
        minutes = (training_seconds + time.time() - start_time) / 60
        record: dict[str, Any] = {"global_step": global_step, "training_minutes": minutes}
        for kind, num_episodes in (("eval_rsi", args.eval_rsi_episodes), ("eval_start", args.eval_start_episodes)):
            if kind not in eval_envs:
                eval_envs[kind] = make_eval_vec_env(
                    args.clip, kind, args.eval_num_envs, backend, args.vectorization_mode, **env_kwargs
                )
            eval_seed = args.seed + 1_000_003 * (len(evaluations) + 1) + (kind == "eval_start")
            summary = summarize(run_episodes(eval_envs[kind], act_deterministic, num_episodes, seed=eval_seed))
            for key, value in summary.items():
                writer.add_scalar(f"{kind}/{key}", value, global_step)
            writer.add_scalar(f"{kind}/training_minutes", minutes, global_step)
            if summary["mean_episode_return"] > best_return[kind]:
                best_return[kind] = summary["mean_episode_return"]
                save_model(kind, summary)
            record[kind] = summary
        evaluations.append(record)
        write_json(run_dir / "evaluations.json", evaluations)

        rsi = record["eval_rsi"]
        if rsi["mean_norm_episode_return"] > early_stop["best_norm_return"] + args.early_stop_min_delta:
            early_stop["best_norm_return"] = rsi["mean_norm_episode_return"]
            early_stop["evals_without_improvement"] = 0
        else:
            early_stop["evals_without_improvement"] += 1
        early_stop["stopped"] = (
            rsi["mean_norm_episode_length"] >= args.early_stop_min_norm_length
            and early_stop["evals_without_improvement"] > args.early_stop_patience
        )
        progress.set_postfix(
            rsi_len=f"{rsi['mean_norm_episode_length']:.2f}", rsi_ret=f"{rsi['mean_norm_episode_return']:.2f}"
        )
        return early_stop["stopped"]

    # -- rollout storage -----------------------------------------------------------------
    shape = (args.num_steps, args.num_envs)
    obs = torch.zeros((*shape, observation_size))
    actions = torch.zeros((*shape, action_size))
    offsets = torch.zeros((*shape, action_size))  # reference actions under the policy's mean (0 if absolute)
    logprobs, rewards, values = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
    terminateds, dones = torch.zeros(shape), torch.zeros(shape)
    valid = torch.zeros(shape, dtype=torch.bool)  # False on steps that only autoreset

    # -- start the game ------------------------------------------------------------------
    start_time, start_step, last_checkpoint = time.time(), global_step, time.time()
    # A resumed run reseeds the envs from its update count: their RNG state is not checkpointed.
    next_obs_dict, info = envs.reset(seed=args.seed + update * args.num_envs)
    tracker = EpisodeTracker(args.num_envs)
    tracker.on_reset(info)
    flat = flatten_observation(batched_observation(next_obs_dict, args.num_envs), observation_keys)
    obs_normalizer.update(flat)
    next_obs, next_offset = torch.as_tensor(obs_normalizer(flat)), action_offset(flat)
    resetting = np.zeros(args.num_envs, dtype=bool)
    next_eval_step = (global_step // args.eval_every_steps + 1) * args.eval_every_steps
    last_eval_step = evaluations[-1]["global_step"] if evaluations else -1
    stop_reason = f"reached {args.total_timesteps:,} steps"
    progress = tqdm(
        total=args.total_timesteps, initial=global_step, unit="step", disable=not args.progress_bar, dynamic_ncols=True
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops like Ctrl-C

    try:
        while global_step < args.total_timesteps:
            if args.max_minutes is not None and time.time() - start_time >= 60 * args.max_minutes:
                stop_reason = f"--max-minutes {args.max_minutes} reached"
                break
            update += 1
            learning_rate = learning_rate_at(args, global_step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate

            for step in range(args.num_steps):
                obs[step] = next_obs
                if next_offset is not None:
                    offsets[step] = next_offset
                valid[step] = torch.from_numpy(~resetting)
                with torch.no_grad():
                    action, logprob, _, value = policy.action_and_value(next_obs, action_offset=next_offset)
                actions[step], logprobs[step], values[step] = action, logprob, value

                # The env sees clipped actions; the buffer keeps the sampled ones for their log-probability.
                next_obs_dict, reward, terminated, truncated, info = envs.step(action.clamp(-1.0, 1.0).numpy())
                done = np.logical_or(terminated, truncated)
                rewards[step] = torch.from_numpy(reward_normalizer(reward, done, ~resetting))
                terminateds[step], dones[step] = torch.from_numpy(terminated), torch.from_numpy(done)
                global_step += int((~resetting).sum())
                for episode in tracker.on_step(reward, terminated, truncated, info):
                    writer.add_scalar("charts/episodic_return", episode.episode_return, global_step)
                    writer.add_scalar("charts/episodic_length", episode.episode_length, global_step)
                    writer.add_scalar("charts/norm_episode_return", episode.norm_episode_return, global_step)
                    writer.add_scalar("charts/norm_episode_length", episode.norm_episode_length, global_step)
                tracker.on_reset(info, mask=resetting)
                resetting = done

                flat = flatten_observation(batched_observation(next_obs_dict, args.num_envs), observation_keys)
                obs_normalizer.update(flat)
                next_obs, next_offset = torch.as_tensor(obs_normalizer(flat)), action_offset(flat)

            # GAE. A truncated episode bootstraps from its final observation, which next-step autoreset
            # returns as the following observation (obs[t + 1], or next_obs); a terminated one from 0.
            with torch.no_grad():
                next_value = policy.value(next_obs)
                advantages = torch.zeros_like(rewards)
                last_gae = torch.zeros(args.num_envs)
                for t in reversed(range(args.num_steps)):
                    following_value = next_value if t == args.num_steps - 1 else values[t + 1]
                    delta = rewards[t] + args.gamma * following_value * (1.0 - terminateds[t]) - values[t]
                    last_gae = delta + args.gamma * args.gae_lambda * (1.0 - dones[t]) * last_gae
                    advantages[t] = last_gae
                returns = advantages + values

            # Flatten the batch and keep only real transitions.
            keep = valid.reshape(-1)
            b_obs = obs.reshape(-1, observation_size)[keep]
            b_actions = actions.reshape(-1, action_size)[keep]
            b_offsets = offsets.reshape(-1, action_size)[keep]
            b_logprobs, b_advantages = logprobs.reshape(-1)[keep], advantages.reshape(-1)[keep]
            b_returns, b_values = returns.reshape(-1)[keep], values.reshape(-1)[keep]

            # Optimise the policy and value networks.
            batch_size = len(b_obs)
            clipfracs: list[float] = []
            for _epoch in range(args.update_epochs):
                permutation = np.random.permutation(batch_size)
                for start in range(0, batch_size, args.minibatch_size):
                    mb = torch.from_numpy(permutation[start : start + args.minibatch_size])
                    _, new_logprob, entropy, new_value = policy.action_and_value(
                        b_obs[mb], b_actions[mb], b_offsets[mb]
                    )
                    log_ratio = new_logprob - b_logprobs[mb]
                    ratio = log_ratio.exp()
                    with torch.no_grad():
                        old_approx_kl = (-log_ratio).mean()
                        approx_kl = ((ratio - 1) - log_ratio).mean()
                        clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())

                    mb_advantages = b_advantages[mb]
                    if len(mb) > 1:  # SB3 normalises advantages per minibatch
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                    pg_loss1 = -mb_advantages * ratio
                    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
                    v_loss = ((new_value - b_returns[mb]) ** 2).mean()
                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss

                    optimizer.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
                    optimizer.step()
                if args.target_kl is not None and approx_kl > args.target_kl:
                    break

            y_pred, y_true = b_values.numpy(), b_returns.numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            steps_per_second = (global_step - start_step) / (time.time() - start_time)
            writer.add_scalar("charts/learning_rate", learning_rate, global_step)
            writer.add_scalar("charts/SPS", steps_per_second, global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
            writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
            writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
            writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
            writer.add_scalar("losses/clipfrac", float(np.mean(clipfracs)), global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)
            progress.update(min(global_step, args.total_timesteps) - progress.n)
            progress.set_description(f"{snippet.id} {steps_per_second:.0f} SPS")

            if global_step >= next_eval_step:
                next_eval_step = (global_step // args.eval_every_steps + 1) * args.eval_every_steps
                last_eval_step = global_step
                if evaluate():
                    stop_reason = "stopped early: normalized return no longer improves"
                    checkpoint()
                    break
                checkpoint()
                last_checkpoint = time.time()
            elif time.time() - last_checkpoint >= args.checkpoint_every_seconds:
                checkpoint()
                last_checkpoint = time.time()

        # Every run ends with an evaluated, saved model.
        if last_eval_step != global_step:
            evaluate()
        checkpoint()
    except KeyboardInterrupt:
        stop_reason = f"interrupted at step {global_step:,}; the next run resumes from the last checkpoint"
        global_step = checkpointed_step
    finally:
        progress.close()
        writer.close()
        envs.close()
        for env in eval_envs.values():
            env.close()

    print(f"{run_dir}: {stop_reason} at step {global_step:,}.")
    if evaluations:
        last = evaluations[-1]
        for kind in EVAL_SETTINGS:
            s = last[kind]
            print(
                f"  {kind:10s} return {s['mean_episode_return']:8.2f}  length {s['mean_episode_length']:6.1f}  "
                f"norm return {s['mean_norm_episode_return']:.3f}  norm length {s['mean_norm_episode_length']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
