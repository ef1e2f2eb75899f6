"""PPO clip-snippet experts, as MoCapAct trains them, in one file (cleanrl's ppo_continuous_action.py layout).

One expert tracks one clip or snippet of the CMU humanoid tracking task. Several ids train
several independent experts together in one process: each has its own environments,
networks, normalisers, evaluations and run folder, and their networks are computed as
one batched tensor operation, which makes K experts cheaper than K runs.

    .venv/bin/python baselines/ppo_expert/train.py --clips CMU_016_22-0-82 --seed 0
    .venv/bin/python baselines/ppo_expert/train.py --clips CMU_016_22-0-82 CMU_009_12-0-210 CMU_008_01
    .venv/bin/python baselines/ppo_expert/train.py --clips CMU_016_22-0-82 --preset mocapact

Writes ``<log-root>/<clip>-<start>-<end>/<seed>/`` for each expert: ``clip_info.json``,
``eval_rsi/model/`` and ``eval_start/model/`` (the best model of each evaluation,
pickle-free: load with ``mocapact_envs.load_expert``), ``evaluations.json``,
``checkpoint/state.pt`` (to resume) and ``tb/`` (TensorBoard), the run folder of every trainer here
(``mocapact_envs.training.run_folder``). Rerunning the same command resumes from the checkpoints; a larger
``--total-timesteps`` trains on.

Gymnasium 1.x vector envs autoreset on the step after an episode ends: that
step only resets (reward 0), so it is masked out of the PPO loss, the reward
statistics and the episode metrics, and it is not counted as an env step.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro
from gymnasium.vector import AutoresetMode
from tqdm import tqdm

from mocapact_envs.envs.factory import (
    batched_observation,
    check_backend,
    clamp_min_steps,
    make_tracking_vec_env,
)
from mocapact_envs.evaluation.metrics import EpisodeMetrics, EpisodeTracker, summarize
from mocapact_envs.evaluation.protocol import EVAL_SETTINGS, evaluate_expert, make_eval_vec_env, run_episodes
from mocapact_envs.files import write_json
from mocapact_envs.mocap.ids import Snippet, parse_snippet
from mocapact_envs.mocap.trainable import plan_snippets
from mocapact_envs.policies.expert_files import load_expert, save_expert
from mocapact_envs.policies.expert_networks import (
    ExpertActorCritic,
    ExpertEnsemble,
    ObservationNormalizer,
    RewardNormalizer,
)
from mocapact_envs.policies.relay import RELAY_WINDOWS_DIR, RelayPlan, clip_steps_at, plan_relay, save_relay
from mocapact_envs.tasks.observables import flatten_observation
from mocapact_envs.tasks.reference_actions import TIME_KEY, ReferenceActions
from mocapact_envs.training.run_folder import (
    args_json,
    checkpoint_path,
    open_tensorboard,
    resume_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mocapact_envs.training.scripts import apply_preset, seed_everything, show_presets_in_help

# Values for every field left at None. `mocapact` is MoCapAct's published setting;
# the others were measured on a 2-core CPU (baselines/ppo_expert/README.md).
MOCAPACT_PRESET: dict[str, Any] = dict(
    total_timesteps=150_000_000,
    early_stop_full_length_evals=0,
    num_envs=8,
    num_steps=1024,  # 8192 steps per update across workers
    min_steps=10,
    snippet_start_envs=0,
    action_parameterization="absolute",
    policy_hidden_sizes=(1024, 1024, 1024),
    value_hidden_sizes=(1024, 1024, 1024),
    activation="tanh",
    log_std_init=math.log(0.1),
    learn_log_std=False,
    time_features=0,
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
# MoCapAct's settings but for these: smaller networks, a larger learning rate annealed to 0 over a
# budget of about 100 minutes here, a longer discount horizon, smaller and more frequent updates
# and quick evaluations.
CPU_ABSOLUTE_PRESET: dict[str, Any] = {
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
}
PRESETS: dict[str, dict[str, Any]] = {
    "mocapact": MOCAPACT_PRESET,
    "cpu-absolute": CPU_ABSOLUTE_PRESET,
    # cpu-absolute with the policy's output added to the reference actions, one of the 4 training worlds always
    # starting at the snippet's start, over a budget of at most 20 minutes of one core. Experts that track the whole
    # snippet stop early: the zoo's 32- to 44-step walks did from 150k steps on.
    "cpu": {
        **CPU_ABSOLUTE_PRESET,
        "action_parameterization": "reference_residual",
        "snippet_start_envs": 1,
        "total_timesteps": 1_000_000,
        "early_stop_full_length_evals": 3,
    },
}
#: A relay's evaluations during training, at --relay-curve-minutes (in its run folder).
RELAY_CURVE_FILE = "relay_curve.json"
PresetName = Literal["cpu", "cpu-absolute", "mocapact"]


@show_presets_in_help({"--preset": PRESETS})
@dataclass
class Args:
    """Train clip experts with PPO, K at once. Fields left unset take --preset's value (PRESETS in this file)."""

    # -- what to train, where --------------------------------------------------
    clips: Annotated[tuple[str, ...], tyro.conf.arg(aliases=("--clip",))] = ("CMU_016_22-0-82",)
    """clip ids (CMU_016_22) or snippet ids (CMU_016_22-0-82): one expert each, trained together"""
    seed: int = 0
    """seed of torch, numpy, random and the environments; also names each run folder"""
    preset: PresetName = "cpu"
    """hyperparameters for every field left unset (PRESETS in this file): `cpu` (reference-residual actions, fastest
    measured on a 2-core CPU), `cpu-absolute` (the previous default: absolute actions, 5.5M steps) or `mocapact`
    (MoCapAct's published settings); explicit flags override it"""
    log_root: str = "runs/experts"
    """root of the MoCapAct layout <log-root>/<clip>-<start>-<end>/<seed>/"""
    backend: str | None = None
    """tracking env backend; unset: "fast" where available, else "dm_control" """
    vectorization_mode: Literal["sync", "async", "vector_entry_point"] | None = None
    """how sub-environments run; unset: the native vector env with the fast backend, else sync"""
    total_timesteps: int | None = None
    """env steps to train each expert for in all (across resumes); experts trained together share it (and so one
    learning-rate schedule); unset: from the preset"""
    max_minutes: float | None = None
    """stop (checkpointed, resumable) after this many minutes of this invocation; unset: no limit"""
    resume: bool = True
    """continue from each <run>/checkpoint/state.pt that exists; --no-resume starts again from step 0 (its first
    checkpoint replaces the old one)"""
    torch_threads: int = 1
    """torch CPU threads (the environments step in this process too)"""
    progress_bar: bool = True
    """show a progress bar"""
    checkpoint_every_seconds: float = 30.0
    """write the resume checkpoints after an update once this long has passed since the last ones"""

    # -- environment -------------------------------------------------------------
    num_envs: int | None = None
    """parallel training environments of each expert"""
    min_steps: int | None = None
    """fewest steps a random start leaves before the snippet end (training episodes)"""
    snippet_start_envs: int | None = None
    """how many of each expert's num_envs training environments always start at the snippet's start (the rest start
    anywhere, MoCapAct: 0): whole-snippet episodes train the drifted late-snippet states a start evaluation meets"""
    termination_error_threshold: float = 0.3
    """tracking error that ends a training episode (MoCapAct: 0.3); evaluations always use MoCapAct's 0.3"""
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
    time_features: int | None = None
    """sin/cos pairs of the normalised time in the snippet appended to both networks' inputs (MoCapAct: 0); the
    saved expert computes them itself, so it still maps the same observation to actions"""

    # -- PPO -------------------------------------------------------------------------
    learning_rate: float | None = None
    """Adam learning rate at the start"""
    lr_schedule: Literal["constant", "thirds", "linear"] | None = None
    """`thirds`: divided by 1.73 after each third of training (MoCapAct); `linear`: annealed to 0"""
    num_steps: int | None = None
    """steps each environment collects per update (update size = num_envs * num_steps per expert)"""
    minibatch_size: int | None = None
    """transitions per gradient step (per expert)"""
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
    """gradient norm clip (each expert's own norm)"""
    target_kl: float | None = None
    """stop an update's epochs once the largest approximate KL of the experts exceeds this; unset: no limit"""
    normalize_observations: bool | None = None
    """normalise observations by running mean and std (SB3 VecNormalize, clip 10)"""
    normalize_rewards: bool | None = None
    """scale rewards by the std of a running discounted return (SB3 VecNormalize)"""

    # -- evaluation (MoCapAct's: deterministic; random starts with noise 0.1, starts with noise 0.01) --
    eval_every_steps: int | None = None
    """env steps (of each expert) between evaluations"""
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
    early_stop_full_length_evals: int | None = None
    """also stop once this many evaluations in a row reach the normalized-length bar above from both starts (the
    whole snippet tracked); 0: off (MoCapAct)"""

    # -- relay: long snippets as short-window experts handing over in time (mocapact_envs/policies/relay.py) ------
    relay_window_steps: int = 0
    """train each snippet longer than this many steps as a relay: one expert per overlapping window of this many
    steps, all trained together, composed into one expert that acts with window k from its switch step on;
    --total-timesteps is then the whole snippet's budget, split evenly over its windows; 0: one expert a snippet"""
    relay_overlap_steps: int = 20
    """steps neighbouring relay windows share (the switch falls in the middle of the overlap)"""
    relay_handover_probability: float = 0.0
    """train the windows one after another, each one's random-start worlds starting with this probability from
    states its predecessor reached around the switch step (the fast backend); 0: all windows together, from
    reference states only"""
    relay_curve_steps: tuple[int, ...] = ()
    """env steps of the whole relay (its windows' summed) at which the relay of the windows' best models so far is
    evaluated, for learning curves (relay_curve.json in the run folder)"""


def resolve_preset(args: Args) -> Args:
    """Fills every field left at None from the chosen preset; explicit flags win."""
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}.")
    return apply_preset(args, PRESETS[args.preset])


def learning_rate_at(args: Args, global_step: int) -> float:
    progress = min(global_step / max(args.total_timesteps, 1), 1.0)
    if args.lr_schedule == "thirds":
        return args.learning_rate / 1.73 ** min(int(3 * progress), 2)
    if args.lr_schedule == "linear":
        return args.learning_rate * (1.0 - progress)
    return args.learning_rate


#: TensorBoard tags of the training episodes' means per update (cleanrl's names), and the metric each one is.
TRAINING_EPISODE_TAGS = {
    "charts/episodic_return": "episode_return",
    "charts/episodic_length": "episode_length",
    "charts/norm_episode_return": "norm_episode_return",
    "charts/norm_episode_length": "norm_episode_length",
}


def snippet_seed(seed: int, snippet_id: str) -> int:
    """A seed of its own for each expert's initial weights: an expert starts the same whatever it trains with."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{snippet_id}".encode()).digest()[:4], "little")


def reference_offset(
    reference_actions: ReferenceActions | None, time_column: int, flat_observation: np.ndarray
) -> np.ndarray | None:
    """The reference actions a residual expert's output is added to, for a batch of flat (unnormalised)
    observations whose ``time_column`` is the time in the clip; ``None`` for an absolute expert."""
    if reference_actions is None:
        return None
    return reference_actions.at(flat_observation[:, time_column : time_column + 1])


@torch.no_grad()
def deterministic_actions(
    observation: dict[str, np.ndarray],
    expert: ExpertActorCritic,
    obs_normalizer: ObservationNormalizer,
    observation_keys: list[str],
    reference_actions: ReferenceActions | None,
    time_column: int,
    num_envs: int,
) -> np.ndarray:
    """An expert's mean actions, clipped to the action box, for a batch of ``num_envs`` Dict observations."""
    flat = flatten_observation(batched_observation(observation, num_envs), observation_keys)
    offset = reference_offset(reference_actions, time_column, flat)
    mean = expert.act(torch.as_tensor(obs_normalizer(flat)), True, None if offset is None else torch.as_tensor(offset))
    return mean.clamp(-1.0, 1.0).numpy()


def masked_mean(values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Per-expert mean of ``values`` (K, B) over the entries ``mask`` keeps; ``count`` = their number, at least 1."""
    return (values * mask).sum(-1) / count


def adam_moments(
    optimizer: torch.optim.Optimizer, policy: ExpertEnsemble, k: int
) -> dict[str, dict[str, torch.Tensor]]:
    """Expert ``k``'s Adam moments under its network's own state-dict keys (what its checkpoint keeps)."""
    moments = {}
    for key, parameter in policy.expert_parameters():
        state = optimizer.state.get(parameter)
        if state:
            moments[key] = {name: state[name][k].clone() for name in ("exp_avg", "exp_avg_sq")}
    return moments


def restore_adam_moments(
    optimizer: torch.optim.Optimizer,
    policy: ExpertEnsemble,
    moments: list[dict[str, dict[str, torch.Tensor]] | None],
    step: int,
) -> None:
    """Sets each resumed expert's Adam moments (``moments[k]``; ``None``: not resumed, zeros).

    Adam keeps one step count per parameter tensor: experts resumed together share ``step``, the largest.
    """
    for key, parameter in policy.expert_parameters():
        if not parameter.requires_grad:
            continue
        state = optimizer.state[parameter]
        state["step"] = torch.tensor(float(step))
        for name in ("exp_avg", "exp_avg_sq"):
            state[name] = torch.zeros_like(parameter)
            for k, expert_moments in enumerate(moments):
                if expert_moments is not None and key in expert_moments:
                    state[name][k] = expert_moments[key][name]


def update_early_stop(stop: dict[str, Any], record: dict[str, Any], args: Args) -> str | None:
    """Counts evaluations without a random-start normalized return gain (MoCapAct's rule) and evaluations in a row
    that track the whole snippet from both starts; the reason the expert should stop, or None."""
    rsi = record["eval_rsi"]
    if rsi["mean_norm_episode_return"] > stop["best_norm_return"] + args.early_stop_min_delta:
        stop["best_norm_return"] = rsi["mean_norm_episode_return"]
        stop["evals_without_improvement"] = 0
    else:
        stop["evals_without_improvement"] += 1
    full_length = all(
        record[kind]["mean_norm_episode_length"] >= args.early_stop_min_norm_length for kind in EVAL_SETTINGS
    )
    stop["full_length_evals"] = stop.get("full_length_evals", 0) + 1 if full_length else 0  # older checkpoints lack it
    reason = None
    if rsi["mean_norm_episode_length"] >= args.early_stop_min_norm_length:
        if stop["evals_without_improvement"] > args.early_stop_patience:
            reason = "stopped early: normalized return no longer improves"
        elif args.early_stop_full_length_evals and stop["full_length_evals"] >= args.early_stop_full_length_evals:
            reason = (
                f"stopped early: the whole snippet tracked from both starts in {stop['full_length_evals']} evaluations"
            )
    stop["stopped"] = reason is not None
    return reason


EvaluationCallback = Callable[[int, dict[str, Any]], None]


def main(args: Args, on_evaluation: EvaluationCallback | None = None) -> int:
    """Trains the experts; ``on_evaluation(k, record)`` is called after each evaluation of expert ``k``
    (after its checkpoint is written), as the Ray sweep reports them."""
    args = resolve_preset(args)
    if args.relay_window_steps:
        return train_relays(args, on_evaluation)
    return train_experts(args, on_evaluation)


def train_relays(args: Args, on_evaluation: EvaluationCallback | None = None) -> int:
    """Each snippet as a relay (:mod:`mocapact_envs.policies.relay`): its windows trained together by
    :func:`train_experts` in ``<run>/relay_windows/``, then composed into ``<run>/eval_rsi/model`` and evaluated;
    ``on_evaluation(k, record)`` is called once snippet ``k``'s relay is composed."""
    try:
        snippets = [parse_snippet(p.snippet_id) for p in plan_snippets(args.clips, crop=False)]
        plans = [plan_relay(s, args.relay_window_steps, args.relay_overlap_steps) for s in snippets]
        if not 0.0 <= args.relay_handover_probability <= 1.0:
            raise ValueError(f"--relay-handover-probability must be in [0, 1], got {args.relay_handover_probability}.")
        if args.relay_handover_probability > 0 and args.backend not in (None, "fast"):
            raise ValueError(f"handover states need the fast backend; --backend is {args.backend!r}.")
        if any(m <= 0 for m in args.relay_curve_steps):
            raise ValueError(f"--relay-curve-steps must be positive, got {args.relay_curve_steps}.")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for k, plan in enumerate(plans):
        code, record = train_relay(args, plan)
        if code != 0:
            return code
        if record is not None and on_evaluation is not None:
            on_evaluation(k, record)
    return 0


def train_relay(args: Args, plan: RelayPlan) -> tuple[int, dict[str, Any] | None]:
    """One snippet's relay: the exit code, and the composed relay's evaluation once every window has finished."""
    run_dir = Path(args.log_root) / plan.snippet.id / str(args.seed)
    windows_root = run_dir / RELAY_WINDOWS_DIR
    window_models = [windows_root / w.id / str(args.seed) / "eval_rsi" / "model" for w in plan.windows]
    window_args = dataclasses.replace(
        args,
        clips=tuple(w.id for w in plan.windows),
        log_root=str(windows_root),
        total_timesteps=max(1, args.total_timesteps // len(plan.windows)),
        relay_window_steps=0,
    )
    print(f"{plan.snippet.id}: a relay of {len(plan.windows)} windows ({', '.join(w.id for w in plan.windows)})")
    write_json(run_dir / "args.json", json.loads(args_json(dataclasses.replace(args, clips=(plan.snippet.id,)))))
    curve_path = run_dir / RELAY_CURVE_FILE
    curve = json.loads(curve_path.read_text()) if curve_path.is_file() else []
    marks = [m for m in sorted(args.relay_curve_steps) if m > max((r["relay_steps"] for r in curve), default=0)]
    # Each window's env steps so far (from its checkpoint on a resume), for the curve's marks.
    window_steps = {
        j: int(state["global_step"])
        for j, state in enumerate(resume_state(model.parents[1], True) for model in window_models)
        if state is not None
    }
    sequential = args.relay_handover_probability > 0

    def on_window_evaluation(k: int, record: dict[str, Any]) -> None:
        """The relay of the windows' best models so far, evaluated as each step mark passes."""
        # Trained together, a window not yet evaluated this round stands where window k does; one after another,
        # the windows after k have not started.
        window_steps[k] = record["global_step"]
        unseen = 0 if sequential else record["global_step"]
        relay_steps = sum(window_steps.get(j, unseen) for j in range(len(plan.windows)))
        if not marks or relay_steps < marks[0] or not all((m / "config.json").is_file() for m in window_models):
            return  # (one window after another, the relay acts only once every window has a model)
        while marks and relay_steps >= marks[0]:
            mark = marks.pop(0)
        snapshot = save_relay(run_dir / "relay_snapshot", plan, window_models, relay_metadata(args, plan))
        evaluation = evaluate_relay(
            args, plan, snapshot, relay_steps=relay_steps, training_minutes=record["training_minutes"]
        )
        curve.append({"mark": mark, **evaluation})
        write_json(curve_path, curve)

    if sequential:
        # One window after another: each learns from the states its predecessor hands over at the switch.
        for k, window in enumerate(plan.windows):
            starts = None
            if k > 0:
                starts = handover_states(args, window_models[k - 1], plan.windows[k - 1], plan.switch_steps[k], window)
                print(f"{window.id}: {len(starts[0])} handover states from {plan.windows[k - 1].id}")
            one = dataclasses.replace(window_args, clips=(window.id,))
            code = train_experts(
                one, on_evaluation=lambda _, record, k=k: on_window_evaluation(k, record), start_states=[starts]
            )
            if code != 0:
                return code, None
            if not window_finished(window_models[k].parents[1], one.total_timesteps):
                # Stopped (a signal, --max-minutes): its successor must learn from its final expert.
                print(f"{window.id}: not finished; the same command resumes it.")
                return 0, None
    else:
        code = train_experts(window_args, on_evaluation=on_window_evaluation)
        if code != 0:
            return code, None
    states = [resume_state(model.parents[1], True) for model in window_models]
    finished = [window_state_finished(state, window_args.total_timesteps) for state in states]
    if not all(finished):
        left = [w.id for w, done in zip(plan.windows, finished, strict=True) if not done]
        print(f"{plan.snippet.id}: windows {', '.join(left)} not finished; the same command resumes them.")
        return 0, None
    model_dir = save_relay(run_dir / "eval_rsi" / "model", plan, window_models, relay_metadata(args, plan))
    write_json(run_dir / "clip_info.json", clip_info(plan.snippet))
    record = evaluate_relay(
        args,
        plan,
        model_dir,
        # The windows train in one process: each one's minutes are the relay's.
        training_minutes=max(state["training_seconds"] for state in states) / 60,
        global_step=int(sum(state["global_step"] for state in states)),
        windows=[
            {
                "snippet_id": w.id,
                "global_step": int(state["global_step"]),
                "stopped_early": state["early_stop"]["stopped"],
            }
            for w, state in zip(plan.windows, states, strict=True)
        ],
    )
    write_json(run_dir / "evaluations.json", [record])
    summary = "  ".join(
        f"{kind}: norm length {record[kind]['mean_norm_episode_length']:.3f}, "
        f"norm return {record[kind]['mean_norm_episode_return']:.3f}"
        for kind in EVAL_SETTINGS
    )
    print(f"{run_dir}: relay of {len(plan.windows)} windows composed at {record['global_step']:,} steps. {summary}")
    return 0, record


def window_finished(run_dir: Path, total_timesteps: int) -> bool:
    """Whether a window's run stopped early or reached its budget (its checkpoint says)."""
    return window_state_finished(resume_state(run_dir, True), total_timesteps)


def window_state_finished(state: dict[str, Any] | None, total_timesteps: int) -> bool:
    return state is not None and bool(state["early_stop"]["stopped"] or state["global_step"] >= total_timesteps)


#: Handover states are the predecessor's states this many steps either side of the switch.
HANDOVER_SPREAD = 2


def handover_states(
    args: Args, model_dir: Path, previous: Snippet, switch_step: int, window: Snippet, episodes: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """States the previous window's best expert reaches near ``switch_step`` (its random starts before the switch,
    training's action noise plus 0.1): (steps counted from ``window``'s start, physics states)."""
    expert = load_expert(model_dir)
    ahead = previous.end - switch_step + 1 + HANDOVER_SPREAD  # random starts at least this far before the end
    envs = make_tracking_vec_env(
        previous.id,
        args.eval_num_envs,
        "fast",
        random_start=True,
        min_steps=clamp_min_steps(previous, max(ahead, args.min_steps)),
        act_noise=args.act_noise + 0.1,
        termination_error_threshold=args.termination_error_threshold,
        observables="time_index",
        ref_steps=(0,),
    )
    steps, states = [], []
    wanted = range(switch_step - HANDOVER_SPREAD, switch_step + HANDOVER_SPREAD + 1)
    try:
        observation, info = envs.reset(seed=args.seed + 2_000_003 * switch_step)
        finished = 0
        while finished < episodes:
            action, _ = expert.predict(batched_observation(observation, envs.num_envs), deterministic=True)
            observation, _, terminated, truncated, info = envs.step(action.reshape(envs.num_envs, -1))
            clip_steps = clip_steps_at(previous, info["time_in_clip"])
            for world in np.flatnonzero(~(terminated | truncated)):
                if clip_steps[world] in wanted:
                    steps.append(clip_steps[world] - window.start)
                    states.append(np.array(info["physics_state"][world]))
            finished += int((terminated | truncated).sum())
    finally:
        envs.close()
    if not states:
        raise RuntimeError(f"{previous.id}'s expert reached step {switch_step} in none of {episodes} episodes.")
    return np.array(steps), np.stack(states)


def clip_info(snippet: Snippet) -> dict[str, Any]:
    """A run's ``clip_info.json`` (MoCapAct's fields, and the snippet id)."""
    return {"clip_id": snippet.clip_id, "start_step": snippet.start, "end_step": snippet.end, "snippet_id": snippet.id}


def relay_metadata(args: Args, plan: RelayPlan) -> dict[str, Any]:
    return {
        **clip_info(plan.snippet),
        "ref_steps": [0],
        "relay": {"window_steps": args.relay_window_steps, "overlap_steps": args.relay_overlap_steps},
    }


def evaluate_relay(args: Args, plan: RelayPlan, model_dir: Path, **fields: Any) -> dict[str, Any]:
    """The training evaluations (``--eval-rsi-episodes``, ``--eval-start-episodes``) of a composed relay."""
    episodes = evaluate_expert(
        load_expert(model_dir),
        plan.snippet.id,
        {"eval_rsi": args.eval_rsi_episodes, "eval_start": args.eval_start_episodes},
        num_envs=args.eval_num_envs,
        seed=args.seed + 1_000_003,
    )
    return {**fields, **{kind: summarize(eps) for kind, eps in episodes.items()}}


def train_experts(
    args: Args,
    on_evaluation: EvaluationCallback | None = None,
    start_states: list[tuple[np.ndarray, np.ndarray] | None] | None = None,
) -> int:
    """One expert per snippet of ``args.clips`` (preset resolved), trained together. ``start_states[k]``:
    (steps, physics states) expert ``k``'s random-start worlds may start from (``--relay-handover-probability``)."""
    try:
        if not args.clips:
            raise ValueError("no clip given: pass --clips with one or more clip or snippet ids.")
        # Names every unknown, uncovered or broken snippet at once; the plan holds each one with its end resolved.
        snippets = [parse_snippet(p.snippet_id) for p in plan_snippets(args.clips, crop=False)]
        backend = check_backend(args.backend)
        if not 0 <= args.snippet_start_envs <= args.num_envs:
            raise ValueError(
                f"--snippet-start-envs must be between 0 and --num-envs ({args.num_envs}), got {args.snippet_start_envs}."
            )
        ids = [s.id for s in snippets]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"snippet(s) {repeated} given more than once.")
        run_dirs = [Path(args.log_root) / s.id / str(args.seed) for s in snippets]
        checkpoints = [resume_state(run_dir, args.resume) for run_dir in run_dirs]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    num_experts = len(snippets)
    clip_infos = [clip_info(s) for s in snippets]
    for run_dir, info in zip(run_dirs, clip_infos, strict=True):
        write_json(run_dir / "clip_info.json", info)

    # -- seeding ---------------------------------------------------------------------
    seed_everything(args.seed)
    torch.set_num_threads(args.torch_threads)

    # -- environments: one vector env of num_envs worlds per expert ----------------
    env_kwargs = dict(observables="time_index", ref_steps=(0,))
    envs = [
        make_tracking_vec_env(
            snippet.id,
            args.num_envs,
            backend,
            args.vectorization_mode,
            random_start=tuple(world >= args.snippet_start_envs for world in range(args.num_envs))
            if args.snippet_start_envs
            else True,
            min_steps=clamp_min_steps(snippet, args.min_steps),
            act_noise=args.act_noise,
            termination_error_threshold=args.termination_error_threshold,
            **env_kwargs,
        )
        for snippet in snippets
    ]
    for env, starts in zip(envs, start_states or [None] * len(envs), strict=True):
        if starts is not None:
            env.unwrapped.set_start_states(*starts, args.relay_handover_probability)
    autoreset_mode = envs[0].metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if autoreset_mode != AutoresetMode.NEXT_STEP:
        raise RuntimeError(f"the trainer expects next-step autoreset, the vector env uses {autoreset_mode}.")
    observation_keys = list(envs[0].single_observation_space.spaces)
    observation_sizes = [envs[0].single_observation_space[k].shape[0] for k in observation_keys]
    observation_size, action_size = sum(observation_sizes), envs[0].single_action_space.shape[0]
    eval_envs: list[dict[str, Any]] = [{} for _ in snippets]  # built at the first evaluation

    # With residual actions each policy's mean is added to its snippet's reference action at the observed step.
    reference_actions: list[ReferenceActions | None] = [None] * num_experts
    if args.action_parameterization == "reference_residual":
        reference_actions = [ReferenceActions.for_snippet(s.id) for s in snippets]
    time_column = sum(observation_sizes[: observation_keys.index(TIME_KEY)]) if TIME_KEY in observation_keys else 0

    # -- agents: K independent actor-critics, computed together ------------------------
    experts = []
    for snippet in snippets:
        torch.manual_seed(snippet_seed(args.seed, snippet.id))
        experts.append(
            ExpertActorCritic(
                observation_size,
                action_size,
                args.policy_hidden_sizes,
                args.value_hidden_sizes,
                args.activation,
                args.log_std_init,
                args.learn_log_std,
                time_features=args.time_features,
                time_column=time_column,
            )
        )
    torch.manual_seed(args.seed)
    policy = ExpertEnsemble(experts)
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=args.learning_rate, eps=1e-5)
    obs_normalizers = [ObservationNormalizer(observation_size, enabled=args.normalize_observations) for _ in snippets]
    reward_normalizers = [RewardNormalizer(args.num_envs, args.gamma, enabled=args.normalize_rewards) for _ in snippets]

    # -- state that a checkpoint carries across runs, per expert ---------------------------
    global_step = np.zeros(num_experts, np.int64)
    update = np.zeros(num_experts, np.int64)
    training_seconds = np.zeros(num_experts)
    best_return = [{kind: -math.inf for kind in EVAL_SETTINGS} for _ in snippets]
    early_stop = [
        {"best_norm_return": -math.inf, "evals_without_improvement": 0, "full_length_evals": 0, "stopped": False}
        for _ in snippets
    ]
    evaluations: list[list[dict[str, Any]]] = [[] for _ in snippets]
    resumed = np.array([state is not None for state in checkpoints])
    for k in np.flatnonzero(resumed):
        state = checkpoints[k]
        try:
            policy.load_expert_state(k, state["policy"])
        except (RuntimeError, ValueError, KeyError) as error:
            print(
                f"error: {checkpoint_path(run_dirs[k])} was written with other network settings "
                f"({run_dirs[k] / 'args.json'}); pass the same flags, or --no-resume to start again.\n{error}",
                file=sys.stderr,
            )
            for env in envs:
                env.close()
            return 2
        obs_normalizers[k].rms.load_state_dict(state["obs_rms"])
        reward_normalizers[k].return_rms.load_state_dict(state["return_rms"])
        set_rng_state(state["rng"])
        global_step[k], update[k], training_seconds[k] = (
            state["global_step"],
            state["update"],
            state["training_seconds"],
        )
        best_return[k], early_stop[k], evaluations[k] = state["best_return"], state["early_stop"], state["evaluations"]
        print(f"resuming {run_dirs[k]} from step {int(global_step[k]):,} (update {int(update[k])})")
    if resumed.any():
        moments = [state["adam"] if state is not None else None for state in checkpoints]
        restore_adam_moments(optimizer, policy, moments, int(update.max()))

    active = np.array(
        [not early_stop[k]["stopped"] and global_step[k] < args.total_timesteps for k in range(num_experts)]
    )
    for k in np.flatnonzero(~active):
        reason = "stopped early" if early_stop[k]["stopped"] else f"reached {int(global_step[k]):,} steps"
        print(f"{run_dirs[k]}: already {reason}; nothing to do (raise --total-timesteps to train on).")
    if not active.any():
        for env in envs:
            env.close()
        return 0
    expert_args = [args_json(dataclasses.replace(args, clips=(s.id,))) for s in snippets]
    for k in np.flatnonzero(active):
        write_json(run_dirs[k] / "args.json", json.loads(expert_args[k]))

    writers = [open_tensorboard(run_dirs[k], int(global_step[k]) if resumed[k] else None) for k in range(num_experts)]
    for k in np.flatnonzero(active):
        if not resumed[k]:
            table = "\n".join(f"|{name}|{value}|" for name, value in dataclasses.asdict(args).items())
            writers[k].add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    # -- rollout storage: a leading expert axis ------------------------------------------
    shape = (num_experts, args.num_steps, args.num_envs)
    obs = torch.zeros((*shape, observation_size))
    actions = torch.zeros((*shape, action_size))
    offsets = torch.zeros((*shape, action_size))  # reference actions under the policy's mean (0 if absolute)
    logprobs, rewards, values = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
    terminateds, dones = torch.zeros(shape), torch.zeros(shape)
    valid = torch.zeros(shape, dtype=torch.bool)  # False on steps that only autoreset, and for stopped experts

    # -- start the game ------------------------------------------------------------------
    start_time, start_steps, last_checkpoint = time.time(), global_step.copy(), time.time()
    checkpointed_step = global_step.copy()  # where a rerun would resume
    next_obs = torch.zeros((num_experts, args.num_envs, observation_size))
    next_offset = torch.zeros((num_experts, args.num_envs, action_size))
    trackers = [EpisodeTracker(args.num_envs) for _ in snippets]
    for k in range(num_experts):
        # A resumed run reseeds the envs from its update count: their RNG state is not checkpointed.
        observation, info = envs[k].reset(seed=args.seed + int(update[k]) * args.num_envs)
        trackers[k].on_reset(info)
        flat = flatten_observation(batched_observation(observation, args.num_envs), observation_keys)
        obs_normalizers[k].update(flat)
        next_obs[k] = torch.as_tensor(obs_normalizers[k](flat))
        if reference_actions[k] is not None:
            next_offset[k] = torch.as_tensor(reference_offset(reference_actions[k], time_column, flat))
    resetting = np.zeros((num_experts, args.num_envs), dtype=bool)
    next_eval_step = (global_step // args.eval_every_steps + 1) * args.eval_every_steps
    last_eval_step = np.array([e[-1]["global_step"] if e else -1 for e in evaluations])
    latest_rsi: list[dict[str, float] | None] = [e[-1]["eval_rsi"] if e else None for e in evaluations]
    stop_reasons = [f"reached {args.total_timesteps:,} steps"] * num_experts
    for k in np.flatnonzero(~active):
        stop_reasons[k] = "nothing to do"
    progress = tqdm(
        total=num_experts * args.total_timesteps,
        initial=int(np.minimum(global_step, args.total_timesteps).sum()),
        unit="step",
        disable=not args.progress_bar,
        dynamic_ncols=True,
    )
    if threading.current_thread() is threading.main_thread():  # a Ray trial runs main() in a thread
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops like Ctrl-C

    try:
        while active.any():
            trained = np.flatnonzero(active)  # the experts this iteration trains, evaluates and checkpoints
            # Past --max-minutes: no more updates; every expert is evaluated (unless it just was) and checkpointed.
            out_of_time = args.max_minutes is not None and time.time() - start_time >= 60 * args.max_minutes
            if out_of_time:
                for k in trained:
                    stop_reasons[k] = f"--max-minutes {args.max_minutes} reached"
                    active[k] = False
            else:
                update[trained] += 1
                # Every expert in an update steps as many times, so they share one schedule position.
                learning_rate = learning_rate_at(args, int(global_step[trained].max()))
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate

                finished: list[list[EpisodeMetrics]] = [[] for _ in snippets]  # training episodes ended in this rollout
                for step in range(args.num_steps):
                    obs[:, step] = next_obs
                    offsets[:, step] = next_offset
                    valid[:, step] = torch.from_numpy(~resetting & active[:, None])
                    with torch.no_grad():
                        action, logprob, _, value = policy.action_and_value(next_obs, action_offset=next_offset)
                    actions[:, step], logprobs[:, step], values[:, step] = action, logprob, value
                    # The env sees clipped actions; the buffer keeps the sampled ones for their log-probability.
                    env_actions = action.clamp(-1.0, 1.0).numpy()
                    for k in trained:
                        observation, reward, terminated, truncated, info = envs[k].step(env_actions[k])
                        done = np.logical_or(terminated, truncated)
                        rewards[k, step] = torch.from_numpy(reward_normalizers[k](reward, done, ~resetting[k]))
                        terminateds[k, step], dones[k, step] = torch.from_numpy(terminated), torch.from_numpy(done)
                        global_step[k] += int((~resetting[k]).sum())
                        finished[k].extend(trackers[k].on_step(reward, terminated, truncated, info))
                        trackers[k].on_reset(info, mask=resetting[k])
                        resetting[k] = done
                        flat = flatten_observation(batched_observation(observation, args.num_envs), observation_keys)
                        obs_normalizers[k].update(flat)
                        next_obs[k] = torch.as_tensor(obs_normalizers[k](flat))
                        if reference_actions[k] is not None:
                            next_offset[k] = torch.as_tensor(reference_offset(reference_actions[k], time_column, flat))

                # GAE. A truncated episode bootstraps from its final observation, which next-step autoreset
                # returns as the following observation (obs[t + 1], or next_obs); a terminated one from 0.
                with torch.no_grad():
                    next_value = policy.value(next_obs)
                    advantages = torch.zeros_like(rewards)
                    last_gae = torch.zeros((num_experts, args.num_envs))
                    for t in reversed(range(args.num_steps)):
                        following_value = next_value if t == args.num_steps - 1 else values[:, t + 1]
                        delta = rewards[:, t] + args.gamma * following_value * (1.0 - terminateds[:, t]) - values[:, t]
                        last_gae = delta + args.gamma * args.gae_lambda * (1.0 - dones[:, t]) * last_gae
                        advantages[:, t] = last_gae
                    returns = advantages + values

                # Flatten each expert's batch; steps that only reset stay in place, masked out of every mean.
                b_obs = obs.reshape(num_experts, -1, observation_size)
                b_actions = actions.reshape(num_experts, -1, action_size)
                b_offsets = offsets.reshape(num_experts, -1, action_size)
                b_logprobs, b_advantages = logprobs.reshape(num_experts, -1), advantages.reshape(num_experts, -1)
                b_returns, b_values = returns.reshape(num_experts, -1), values.reshape(num_experts, -1)
                b_valid = valid.reshape(num_experts, -1).float()

                # Optimise every expert's policy and value networks on its own data.
                batch_size = b_obs.shape[1]
                clipfracs: list[torch.Tensor] = []
                for _epoch in range(args.update_epochs):
                    permutation = torch.from_numpy(np.random.permutation(batch_size))
                    for start in range(0, batch_size, args.minibatch_size):
                        mb = permutation[start : start + args.minibatch_size]
                        mask = b_valid[:, mb]
                        count = mask.sum(-1).clamp(min=1.0)
                        _, new_logprob, entropy, new_value = policy.action_and_value(
                            b_obs[:, mb], b_actions[:, mb], b_offsets[:, mb]
                        )
                        log_ratio = new_logprob - b_logprobs[:, mb]
                        ratio = log_ratio.exp()
                        with torch.no_grad():
                            old_approx_kl = masked_mean(-log_ratio, mask, count)
                            approx_kl = masked_mean((ratio - 1) - log_ratio, mask, count)
                            clipfracs.append(masked_mean(((ratio - 1.0).abs() > args.clip_coef).float(), mask, count))

                        # SB3 normalises advantages per minibatch: here per expert, over its real transitions.
                        mb_advantages = b_advantages[:, mb]
                        adv_mean = masked_mean(mb_advantages, mask, count).unsqueeze(1)
                        adv_var = ((mb_advantages - adv_mean) ** 2 * mask).sum(-1) / (count - 1.0).clamp(min=1.0)
                        mb_advantages = torch.where(
                            (count > 1).unsqueeze(1),
                            (mb_advantages - adv_mean) / (adv_var.sqrt().unsqueeze(1) + 1e-8),
                            mb_advantages,
                        )
                        pg_loss1 = -mb_advantages * ratio
                        pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                        pg_loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask, count)
                        v_loss = masked_mean((new_value - b_returns[:, mb]) ** 2, mask, count)
                        entropy_loss = masked_mean(entropy, mask, count)
                        # The experts share no parameter: the sum trains each on its own loss.
                        loss = (pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss).sum()

                        optimizer.zero_grad()
                        loss.backward()
                        policy.clip_grad_norm_(args.max_grad_norm)
                        optimizer.step()
                    if args.target_kl is not None and approx_kl[trained].max() > args.target_kl:
                        break

                clipfrac = torch.stack(clipfracs).mean(0)
                elapsed = time.time() - start_time
                for k in trained:
                    y_pred, y_true = b_values[k][b_valid[k] > 0].numpy(), b_returns[k][b_valid[k] > 0].numpy()
                    var_y = np.var(y_true)
                    explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
                    step_k, writer = int(global_step[k]), writers[k]
                    writer.add_scalar("charts/learning_rate", learning_rate, step_k)
                    writer.add_scalar("charts/SPS", (global_step[k] - start_steps[k]) / elapsed, step_k)
                    writer.add_scalar("losses/value_loss", v_loss[k].item(), step_k)
                    writer.add_scalar("losses/policy_loss", pg_loss[k].item(), step_k)
                    writer.add_scalar("losses/entropy", entropy_loss[k].item(), step_k)
                    writer.add_scalar("losses/old_approx_kl", old_approx_kl[k].item(), step_k)
                    writer.add_scalar("losses/approx_kl", approx_kl[k].item(), step_k)
                    writer.add_scalar("losses/clipfrac", clipfrac[k].item(), step_k)
                    writer.add_scalar("losses/explained_variance", explained_var, step_k)
                    # Means over the rollout's finished episodes: one event per update, not per episode, keeps
                    # TensorBoard's queue off the per-step path (its events took about 5% of a K = 8 cProfile).
                    if finished[k]:
                        summary = summarize(finished[k])
                        writer.add_scalar("charts/episodes", summary["episodes"], step_k)
                        for tag, metric in TRAINING_EPISODE_TAGS.items():
                            writer.add_scalar(tag, summary[f"mean_{metric}"], step_k)
                steps_per_second = (global_step - start_steps).sum() / elapsed
                progress.update(int(np.minimum(global_step, args.total_timesteps).sum()) - progress.n)
                label = snippets[0].id if num_experts == 1 else f"{int(active.sum())}/{num_experts} experts"
                progress.set_description(f"{label} {steps_per_second:.0f} SPS")

            # -- evaluations (MoCapAct's two) every eval_every_steps, at the budget and at --max-minutes ----------
            if out_of_time:
                due = [k for k in trained if last_eval_step[k] != global_step[k]]
            else:
                due = [k for k in trained if global_step[k] >= min(next_eval_step[k], args.total_timesteps)]
            for k in due:
                next_eval_step[k] = (global_step[k] // args.eval_every_steps + 1) * args.eval_every_steps
                last_eval_step[k] = global_step[k]
                expert = policy.expert(k)
                act = functools.partial(
                    deterministic_actions,
                    expert=expert,
                    obs_normalizer=obs_normalizers[k],
                    observation_keys=observation_keys,
                    reference_actions=reference_actions[k],
                    time_column=time_column,
                    num_envs=args.eval_num_envs,
                )
                minutes = float(training_seconds[k] + time.time() - start_time) / 60
                record: dict[str, Any] = {"global_step": int(global_step[k]), "training_minutes": minutes}
                for kind, episodes in (("eval_rsi", args.eval_rsi_episodes), ("eval_start", args.eval_start_episodes)):
                    if kind not in eval_envs[k]:
                        eval_envs[k][kind] = make_eval_vec_env(
                            snippets[k].id, kind, args.eval_num_envs, backend, args.vectorization_mode, **env_kwargs
                        )
                    eval_seed = args.seed + 1_000_003 * (len(evaluations[k]) + 1) + (kind == "eval_start")
                    summary = summarize(run_episodes(eval_envs[k][kind], act, episodes, seed=eval_seed))
                    for key, value in summary.items():
                        writers[k].add_scalar(f"{kind}/{key}", value, global_step[k])
                    writers[k].add_scalar(f"{kind}/training_minutes", minutes, global_step[k])
                    if summary["mean_episode_return"] > best_return[k][kind]:  # each evaluation's best model
                        best_return[k][kind] = summary["mean_episode_return"]
                        save_expert(
                            run_dirs[k] / kind / "model",
                            expert,
                            obs_normalizers[k],
                            observation_keys,
                            observation_sizes,
                            reward_normalizers[k].return_rms,
                            reward_normalizers[k].config(),
                            metadata={
                                **clip_infos[k],
                                "ref_steps": [0],
                                "global_step": int(global_step[k]),
                                "evaluation": {kind: summary},
                            },
                            reference_actions=reference_actions[k],
                        )
                    record[kind] = summary
                evaluations[k].append(record)
                write_json(run_dirs[k] / "evaluations.json", evaluations[k])
                latest_rsi[k] = record["eval_rsi"]
                reason = update_early_stop(early_stop[k], record, args)
                if reason is not None and not out_of_time:
                    stop_reasons[k] = reason
                    active[k] = False
                elif global_step[k] >= args.total_timesteps:
                    active[k] = False
            if due:
                shown = [r for r in latest_rsi if r is not None]
                progress.set_postfix(
                    rsi_len=f"{np.mean([r['mean_norm_episode_length'] for r in shown]):.2f}",
                    rsi_ret=f"{np.mean([r['mean_norm_episode_return'] for r in shown]):.2f}",
                )

            # -- checkpoints: after an evaluation, at the end, and every checkpoint_every_seconds ------------------
            periodic = time.time() - last_checkpoint >= args.checkpoint_every_seconds
            for k in trained:
                if not (k in due or out_of_time or periodic):
                    continue
                state = {
                    "global_step": int(global_step[k]),
                    "update": int(update[k]),
                    "training_seconds": float(training_seconds[k] + time.time() - start_time),
                    "policy": policy.expert_state(k),
                    "adam": adam_moments(optimizer, policy, k),
                    "obs_rms": {n: torch.from_numpy(v) for n, v in obs_normalizers[k].rms.state_dict().items()},
                    "return_rms": {
                        n: torch.from_numpy(v) for n, v in reward_normalizers[k].return_rms.state_dict().items()
                    },
                    "rng": rng_state(),
                    "best_return": best_return[k],
                    "early_stop": early_stop[k],
                    "evaluations": evaluations[k],
                    "args": expert_args[k],
                }
                save_checkpoint(run_dirs[k], state)
                checkpointed_step[k] = global_step[k]
                if k in due and on_evaluation is not None:
                    on_evaluation(k, evaluations[k][-1])
            if due or periodic:
                last_checkpoint = time.time()
    except KeyboardInterrupt:
        for k in range(num_experts):
            stop_reasons[k] = (
                f"interrupted at step {int(global_step[k]):,}; the next run resumes from the last checkpoint"
            )
        global_step = checkpointed_step
    finally:
        progress.close()
        for writer in writers:
            writer.close()
        for env in envs:
            env.close()
        for kinds in eval_envs:
            for env in kinds.values():
                env.close()

    for k in range(num_experts):
        if stop_reasons[k] == "nothing to do":
            continue
        print(f"{run_dirs[k]}: {stop_reasons[k]} at step {int(global_step[k]):,}.")
        if evaluations[k]:
            last = evaluations[k][-1]
            for kind in EVAL_SETTINGS:
                s = last[kind]
                print(
                    f"  {kind:10s} return {s['mean_episode_return']:8.2f}  length {s['mean_episode_length']:6.1f}  "
                    f"norm return {s['mean_norm_episode_return']:.3f}  norm length {s['mean_norm_episode_length']:.3f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
