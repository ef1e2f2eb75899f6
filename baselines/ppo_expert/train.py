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
from mocapact_envs.files import OutputWriteError, check_writable_folder, write_json
from mocapact_envs.mocap.ids import Snippet
from mocapact_envs.mocap.source import get_source
from mocapact_envs.mocap.trainable import plan_snippets
from mocapact_envs.policies.expert_files import load_expert, save_expert
from mocapact_envs.policies.expert_networks import (
    ExpertActorCritic,
    ExpertEnsemble,
    ObservationNormalizer,
    RewardNormalizer,
)
from mocapact_envs.policies.relay import RELAY_WINDOWS_DIR, RelayPlan, plan_relay, save_relay
from mocapact_envs.tasks.checks import is_number
from mocapact_envs.tasks.observables import TIME_INDEX, flatten_observation
from mocapact_envs.tasks.reference_actions import TIME_KEY, ReferenceActions
from mocapact_envs.tasks.tracking_settings import TERMINATION_ERROR_THRESHOLD
from mocapact_envs.training.flag_checks import (
    FlagRule,
    check_flags,
    flag,
    non_negative,
    positive,
    unit_interval,
    unset_or_positive,
)
from mocapact_envs.training.relay_handover import handover_states
from mocapact_envs.training.reward_shaping import UprightShaping
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
from mocapact_envs.training.start_states import OwnStartStates, driven_reference_states

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
    action_likelihood="gaussian",
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
# The default: cpu with a frozen action std of 0.2 instead of 0.1 and larger, gentler updates (8 worlds x 256 steps,
# 2 of them at the snippet start, minibatch 512, learning rate 1e-4): the update's approximate KL falls from over 100
# to about 0.1, and the training episodes meet the perturbations the feedback has to learn. Above cpu from random
# starts on every snippet measured, the six long benchmark snippets and CMU_016_22 (baselines/ppo_expert/README.md).
PRESETS["cpu-wide"] = {
    **PRESETS["cpu"],
    "log_std_init": math.log(0.2),
    "learning_rate": 1e-4,
    "num_envs": 8,
    "snippet_start_envs": 2,
    "minibatch_size": 512,
}
#: --own-start-probability starts episodes from the expert's own states once it has kept this many.
MIN_OWN_START_STATES = 32
#: A relay's evaluations during training, at --relay-curve-minutes (in its run folder).
RELAY_CURVE_FILE = "relay_curve.json"
PresetName = Literal["cpu", "cpu-wide", "cpu-absolute", "mocapact"]


@show_presets_in_help({"--preset": PRESETS})
@dataclass
class Args:
    """Train clip experts with PPO, K at once. Fields left unset take --preset's value (PRESETS in this file)."""

    # -- what to train, where --------------------------------------------------
    clips: Annotated[tuple[str, ...], tyro.conf.arg(aliases=("--clip",))] = ("CMU_016_22-0-82",)
    """clip ids (CMU_016_22) or snippet ids (CMU_016_22-0-82): one expert each, trained together"""
    seed: int = 0
    """seed of torch, numpy, random and the environments; also names each run folder"""
    preset: PresetName = "cpu-wide"
    """hyperparameters for every field left unset (PRESETS in this file): `cpu-wide` (reference-residual actions,
    action std 0.2, 8-world updates at learning rate 1e-4: the best measured on long and short snippets), `cpu` (the
    previous default: std 0.1, 4-world updates at 3e-4), `cpu-absolute` (absolute actions, 5.5M steps) or `mocapact`
    (MoCapAct's published settings); explicit flags override it"""
    log_root: str = "runs/experts"
    """root of the MoCapAct layout <log-root>/<clip>-<start>-<end>/<seed>/"""
    backend: str | None = None
    """tracking env backend; unset: "fast" where available, else "dm_control" """
    vectorization_mode: Literal["sync", "async", "vector_entry_point"] | None = None
    """how sub-environments run; unset: the native vector env with the fast backend, else sync"""
    total_timesteps: int | None = None
    """env steps to train each expert for in all (across resumes); experts trained together share it (and so one
    learning-rate schedule). Checked after each whole update of num_envs x num_steps env steps (the steps that only
    reset a finished episode are not counted), so a run ends with the update that reaches it: 3000 with 4 x 256 runs
    4 updates, about 3,970 steps. Unset: from the preset"""
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
    anywhere, MoCapAct: 0): whole-snippet episodes train the drifted late-snippet states a start evaluation meets;
    unset with another --num-envs than the preset's, the preset's share of them (at least 1 where it has any)"""
    termination_error_threshold: float = TERMINATION_ERROR_THRESHOLD
    """tracking error that ends a training episode (MoCapAct: 0.3); evaluations always use MoCapAct's 0.3"""
    reference_observables: tuple[str, ...] = ()
    """reference features the experts see besides MoCapAct's time-index set, at the current step (MoCapAct: none),
    e.g. walker/reference_rel_root_pos_local walker/reference_rel_root_quat: the drift from the clip (the root's
    offset and heading) that the body's own sensors cannot see"""
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
    log_std_final: float | None = None
    """anneal the frozen log std linearly from --log-std-init to this value over --total-timesteps, set before each
    rollout so that an update's old and new probabilities share it (unset: constant); a resume with a larger
    --total-timesteps stretches the schedule, as it does the learning rate's"""
    action_likelihood: Literal["gaussian", "clipped"] | None = None
    """the probability PPO's ratio takes of a sampled action: the Gaussian's density (MoCapAct, SB3), or that of the
    clipped action the env executes, a point mass at each bound (clipped action policy gradient)"""
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

    # -- long snippets: where training episodes start, a training-only reward term (mocapact_envs/training/) ----
    own_start_probability: float = 0.0
    """share of the random-start training episodes that begin at a state the expert's own training episodes reached
    --own-start-min-age or more steps after their start, instead of on the reference (drifted states, which the
    later steps of long episodes seldom give it to learn from; the fast backend); 0: all on the reference"""
    own_start_min_age: int = 20
    """with --own-start-probability: the earliest step of an episode whose state may become a start"""
    start_activations: Literal["zero", "reference"] = "zero"
    """the servos' activations at a random-start training episode's reset: dm_control's zeros (MoCapAct, and every
    evaluation), or the reference pose's actuation, without the first step's pull toward the joints' mid-range (a
    diagnostic of what that step costs; the fast backend)"""
    upright_reward_weight: float = 0.0
    """adds this times (cos(tilt error) - 1) to each training step's reward, the tilt error the angle between the
    walker's and the reference's root up axes, heading aside (training only: evaluations keep MoCapAct's comic)"""
    push_force: float = 0.0
    """pushes the training worlds' root body now and then with a horizontal force of up to this many newtons (uniform
    magnitude and direction), so the episodes meet larger departures than action noise gives and the expert learns to
    recover from them (training only; the fast backend); 0: no pushes (MoCapAct)"""
    push_probability: float = 0.02
    """with --push-force: the chance, before each step of a world not being pushed, that a push starts"""
    push_steps: int = 5
    """with --push-force: how many control steps (0.03 s each) a push lasts"""

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
    relay_warm_start: bool = False
    """with --relay-handover-probability: each window after the first starts from its predecessor's final network
    and observation statistics instead of fresh weights (neighbouring windows track overlapping motion)"""
    warm_start: str | None = None
    """a run folder of an expert with the same networks and observations (e.g. of a shorter snippet starting at the
    same step, or an overlapping neighbour) whose final network and observation statistics every expert starts from
    instead of fresh weights; its optimizer, steps and learning-rate schedule are not taken; unset: fresh weights"""
    relay_curve_steps: tuple[int, ...] = ()
    """env steps of the whole relay (its windows' summed) at which the relay of the windows' best models so far is
    evaluated, for learning curves (relay_curve.json in the run folder)"""


def resolve_preset(args: Args) -> Args:
    """Fills every field left at None from the chosen preset; explicit flags win. The preset's snippet-start worlds
    are a share of its worlds: with another --num-envs (and no --snippet-start-envs) the share is kept, at least one
    world where the preset has any (``cpu-wide``'s 2 of 8 is 1 of 2 with --num-envs 2, not every world)."""
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}.")
    preset = PRESETS[args.preset]
    if args.snippet_start_envs is None and args.num_envs is not None and args.num_envs != preset["num_envs"]:
        share = preset["snippet_start_envs"] / preset["num_envs"]
        # At least one world at the start, and one for random starts where there are two or more.
        worlds = min(max(1, math.floor(args.num_envs * share + 0.5)), max(args.num_envs - 1, 1)) if share > 0 else 0
        args = dataclasses.replace(args, snippet_start_envs=worlds)
    return apply_preset(args, preset)


def budget_progress(args: Args, global_step: int) -> float:
    """The share of ``--total-timesteps`` done at ``global_step``, in [0, 1]: where the schedules stand."""
    return min(global_step / max(args.total_timesteps, 1), 1.0)


def log_std_at(args: Args, global_step: int) -> float:
    """The frozen log std at ``global_step`` of ``--log-std-final``'s linear schedule."""
    return args.log_std_init + (args.log_std_final - args.log_std_init) * budget_progress(args, global_step)


def learning_rate_at(args: Args, global_step: int) -> float:
    progress = budget_progress(args, global_step)
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
    try:
        check_args(args)
        initial_states = warm_start_states(args)  # a corrupt checkpoint is refused by name, as bad flags are
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if args.relay_window_steps:
            return train_relays(args, on_evaluation)
        return train_experts(args, on_evaluation, initial_states=initial_states)
    except OutputWriteError as error:  # the disk filled or the folder became read-only while training
        print(f"error: {error}", file=sys.stderr)
        return 2


def warm_start_states(args: Args) -> list[dict[str, Any] | None] | None:
    """``--warm-start``'s checkpoint for every snippet of ``args.clips``, or ``None`` without it."""
    if args.warm_start is None:
        return None
    return [resume_state(args.warm_start, True)] * len(args.clips)


# -- argument checks: every bad value is named before any work starts ------------------------------------------------


#: Each field's rule once the preset is resolved: (holds, what is allowed). Fields not named take any value of
#: their type.
ARG_RULES: dict[str, FlagRule] = {
    "total_timesteps": (positive, "a positive number of env steps"),
    "num_envs": (positive, "a positive number of worlds"),
    "num_steps": (positive, "a positive number of steps per update"),
    "minibatch_size": (positive, "a positive number of transitions, at most num_envs * num_steps"),
    "update_epochs": (positive, "a positive number of passes"),
    "min_steps": (positive, "a positive number of steps"),
    "learning_rate": (positive, "a positive, finite rate"),
    "gamma": (lambda v: positive(v) and v <= 1, "in (0, 1]"),
    "gae_lambda": (unit_interval, "in [0, 1]"),
    "clip_coef": (positive, "a positive ratio range"),
    "ent_coef": (non_negative, "0 or more, finite"),
    "vf_coef": (positive, "a positive, finite weight"),
    "max_grad_norm": (positive, "a positive, finite norm"),
    "target_kl": (unset_or_positive, "unset or a positive KL"),
    "log_std_init": (lambda v: is_number(v) and math.isfinite(v), "a finite log std"),
    "log_std_final": (lambda v: v is None or (is_number(v) and math.isfinite(v)), "a finite log std, or unset"),
    "act_noise": (non_negative, "0 or more, finite"),
    "termination_error_threshold": (positive, "a positive, finite error"),
    "time_features": (non_negative, "0 or more sin/cos pairs"),
    "policy_hidden_sizes": (lambda v: len(v) > 0 and all(positive(n) for n in v), "one or more positive sizes"),
    "value_hidden_sizes": (lambda v: len(v) > 0 and all(positive(n) for n in v), "one or more positive sizes"),
    "eval_every_steps": (positive, "a positive number of env steps"),
    "eval_rsi_episodes": (positive, "a positive number of episodes"),
    "eval_start_episodes": (positive, "a positive number of episodes"),
    "eval_num_envs": (positive, "a positive number of worlds"),
    "early_stop_full_length_evals": (non_negative, "0 (off) or more evaluations"),
    "early_stop_patience": (non_negative, "0 or more evaluations"),
    "max_minutes": (unset_or_positive, "unset or a positive number of minutes"),
    "checkpoint_every_seconds": (non_negative, "0 or more seconds"),
    "torch_threads": (positive, "a positive number of threads"),
    "relay_window_steps": (non_negative, "0 (no relay) or a window length in steps"),
    "relay_overlap_steps": (non_negative, "0 or more steps, fewer than --relay-window-steps"),
    "relay_handover_probability": (unit_interval, "in [0, 1]"),
    "own_start_probability": (unit_interval, "in [0, 1]"),
    "own_start_min_age": (positive, "a positive number of steps"),
    "upright_reward_weight": (non_negative, "0 (off) or more"),
    "push_force": (non_negative, "0 (off) or more newtons"),
    "push_probability": (unit_interval, "in [0, 1]"),
    "push_steps": (positive, "a positive number of control steps"),
}


def check_args(args: Args) -> None:
    """Raises ``ValueError`` naming every flag of ``args`` (preset resolved) whose value is not allowed."""
    errors = []
    try:
        check_flags(args, ARG_RULES)
    except ValueError as error:  # named together with the checks below
        errors.append(str(error).removeprefix("error: ").rstrip("."))
    if args.minibatch_size > args.num_envs * args.num_steps:
        errors.append(
            f"--minibatch-size {args.minibatch_size}: must be at most one update's transitions, "
            f"--num-envs * --num-steps = {args.num_envs * args.num_steps}"
        )
    if not 0 <= args.snippet_start_envs <= args.num_envs:
        errors.append(
            f"--snippet-start-envs {args.snippet_start_envs}: must be between 0 and --num-envs ({args.num_envs})"
        )
    if args.relay_window_steps and args.relay_overlap_steps >= args.relay_window_steps:
        errors.append(
            f"--relay-overlap-steps {args.relay_overlap_steps}: must be fewer than --relay-window-steps "
            f"({args.relay_window_steps})"
        )
    if not all(positive(m) for m in args.relay_curve_steps):
        errors.append(f"--relay-curve-steps {list(args.relay_curve_steps)}: must all be positive")
    # Each of these sets the training episodes' start states in the fast backend's native vector env, so it needs
    # that env and excludes the others; pushes need that env too.
    start_setters = [
        flag
        for flag, on in (
            (f"--own-start-probability {args.own_start_probability}", args.own_start_probability > 0),
            (f"--relay-handover-probability {args.relay_handover_probability}", args.relay_handover_probability > 0),
            ("--start-activations reference", args.start_activations == "reference"),
        )
        if on
    ]
    native_env_flags = start_setters + ([f"--push-force {args.push_force}"] if args.push_force > 0 else [])
    if native_env_flags and args.backend not in (None, "fast"):
        errors.append(f"{native_env_flags[0]}: needs the fast backend's native vector env (--backend {args.backend!r})")
    elif native_env_flags and args.vectorization_mode not in (None, "vector_entry_point"):
        errors.append(
            f"{native_env_flags[0]}: needs the fast backend's native vector env (--vectorization-mode "
            f"{args.vectorization_mode!r}; leave it unset or give 'vector_entry_point')"
        )
    if len(start_setters) > 1:
        errors.append(f"{' and '.join(start_setters)}: each sets the start states; give one")
    if args.log_std_final is not None and args.learn_log_std:
        errors.append(f"--log-std-final {args.log_std_final}: anneals a frozen std; not with --learn-log-std True")
    if args.warm_start is not None:
        warm_checkpoint = checkpoint_path(Path(args.warm_start))
        if args.relay_window_steps:
            errors.append(f"--warm-start {args.warm_start}: not with a relay (--relay-warm-start warms its windows)")
        elif not warm_checkpoint.is_file():
            errors.append(
                f"--warm-start {args.warm_start}: no {warm_checkpoint.name} there; give the run folder of a trained "
                f"expert (<log-root>/<snippet>/<seed>)"
            )
    if errors:
        raise ValueError("; ".join(errors) + ".")


#: Flags a resumed expert may change: its budget, this invocation's limits and how it is computed and shown.
#: Every other flag shapes what the expert learns, so a resume with another value is refused by name.
RESUME_MAY_CHANGE = frozenset(
    {
        "clips",
        "log_root",
        "total_timesteps",
        "max_minutes",
        "resume",
        "torch_threads",
        "progress_bar",
        "checkpoint_every_seconds",
        "backend",
        "vectorization_mode",
        "eval_every_steps",
        "eval_num_envs",
        "relay_curve_steps",
        "relay_warm_start",  # only how a window's weights begin, which a resume does not repeat
        "warm_start",  # the same
    }
)


#: What the trainer did before these preset-filled flags existed (each one's "off"), for resuming older checkpoints.
BEFORE_THE_FLAG: dict[str, Any] = {
    "snippet_start_envs": 0,
    "early_stop_full_length_evals": 0,
    "action_parameterization": "absolute",
    "action_likelihood": "gaussian",
    "time_features": 0,
}


def check_resumed_args(saved_args: str, args: Args, run_dir: Path) -> None:
    """Raises ``ValueError`` naming each flag whose value differs from the one ``run_dir``'s checkpoint was trained
    with (``saved_args``, its JSON), outside :data:`RESUME_MAY_CHANGE`. A flag newer than the checkpoint counts as
    what the trainer did before the flag existed: its default where no preset fills it, else
    :data:`BEFORE_THE_FLAG`'s value; a newer flag in neither is not compared."""
    saved, current = json.loads(saved_args), json.loads(args_json(args))
    preset_filled = {name for preset in PRESETS.values() for name in preset}
    defaults = json.loads(args_json(Args()))
    # (--preset's own default has changed since: never taken for a checkpoint's.)
    before = {name: defaults[name] for name in defaults if name not in preset_filled | {"preset"}} | BEFORE_THE_FLAG
    saved = {**before, **saved}
    changed = [
        f"{flag(name)} {current[name]!r} (the checkpoint's: {saved[name]!r})"
        for name in current
        if name in saved and name not in RESUME_MAY_CHANGE and saved[name] != current[name]
    ]
    if changed:
        raise ValueError(
            f"{checkpoint_path(run_dir)} was trained with other settings: {', '.join(changed)}; pass the "
            f"checkpoint's values to resume it, or --no-resume to start it again."
        )


# -- relays: long snippets as short-window experts in time -------------------------------------------------------------


def train_relays(args: Args, on_evaluation: EvaluationCallback | None = None) -> int:
    """Each snippet as a relay (:mod:`mocapact_envs.policies.relay`): its windows trained by :func:`train_experts`
    in ``<run>/relay_windows/``, then composed into ``<run>/eval_rsi/model`` and evaluated;
    ``on_evaluation(k, record)`` is called once snippet ``k``'s relay is composed."""
    try:
        snippets = [p.snippet for p in plan_snippets(args.clips, crop=False)]
        plans = [plan_relay(s, args.relay_window_steps, args.relay_overlap_steps) for s in snippets]
        if args.relay_warm_start and not args.relay_handover_probability > 0:
            raise ValueError(
                "--relay-warm-start trains the windows one after another: give --relay-handover-probability."
            )
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
    curve = RelayCurve(args, plan, run_dir, window_models)

    if args.relay_handover_probability > 0:
        # One window after another: each learns from the states its predecessor hands over at the switch.
        for k, window in enumerate(plan.windows):
            starts = None
            if k > 0:
                starts = handover_states(
                    window_models[k - 1],
                    plan.windows[k - 1],
                    plan.switch_steps[k],
                    window,
                    num_envs=args.eval_num_envs,
                    min_steps=args.min_steps,
                    act_noise=args.act_noise,
                    termination_error_threshold=args.termination_error_threshold,
                    seed=args.seed,
                )
                print(f"{window.id}: {len(starts[0])} handover states from {plan.windows[k - 1].id}")
            one = dataclasses.replace(window_args, clips=(window.id,))
            warm = resume_state(window_models[k - 1].parents[1], True) if k > 0 and args.relay_warm_start else None
            code = train_experts(
                one,
                on_evaluation=lambda _, record, k=k: curve.on_window(k, record),
                start_states=[starts],
                initial_states=[warm],
            )
            if code != 0:
                return code, None
            if not window_state_finished(resume_state(window_models[k].parents[1], True), one.total_timesteps):
                # Stopped (a signal, --max-minutes): its successor must learn from its final expert.
                print(f"{window.id}: not finished; the same command resumes it.")
                return 0, None
    else:
        code = train_experts(window_args, on_evaluation=curve.on_window)
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


class RelayCurve:
    """A relay's learning curve: the relay of its windows' best models so far, evaluated as the relay's summed env
    steps pass each of ``--relay-curve-steps`` (``relay_curve.json`` in the run folder, kept across resumes)."""

    def __init__(self, args: Args, plan: RelayPlan, run_dir: Path, window_models: list[Path]):
        self.args, self.plan, self.run_dir, self.window_models = args, plan, run_dir, window_models
        self.path = run_dir / RELAY_CURVE_FILE
        self.points = json.loads(self.path.read_text()) if self.path.is_file() else []
        done = max((r["relay_steps"] for r in self.points), default=0)
        self.marks = [m for m in sorted(args.relay_curve_steps) if m > done]
        # Each window's env steps so far (from its checkpoint on a resume).
        self.window_steps = {
            j: int(state["global_step"])
            for j, state in enumerate(resume_state(model.parents[1], True) for model in window_models)
            if state is not None
        }

    def on_window(self, k: int, record: dict[str, Any]) -> None:
        """Window ``k`` was evaluated (``record``): evaluates the relay if a mark has passed."""
        self.window_steps[k] = record["global_step"]
        # Trained together, a window not yet evaluated this round stands where window k does; one after another,
        # the windows after k have not started.
        unseen = 0 if self.args.relay_handover_probability > 0 else record["global_step"]
        relay_steps = sum(self.window_steps.get(j, unseen) for j in range(len(self.plan.windows)))
        if not self.marks or relay_steps < self.marks[0]:
            return
        if not all((m / "config.json").is_file() for m in self.window_models):
            return  # the relay acts only once every window has a model
        while self.marks and relay_steps >= self.marks[0]:
            mark = self.marks.pop(0)
        snapshot = save_relay(
            self.run_dir / "relay_snapshot", self.plan, self.window_models, relay_metadata(self.args, self.plan)
        )
        evaluation = evaluate_relay(
            self.args, self.plan, snapshot, relay_steps=relay_steps, training_minutes=record["training_minutes"]
        )
        self.points.append({"mark": mark, **evaluation})
        write_json(self.path, self.points)


def window_state_finished(state: dict[str, Any] | None, total_timesteps: int) -> bool:
    """Whether a window's checkpoint ``state`` stopped early or reached its budget."""
    return state is not None and bool(state["early_stop"]["stopped"] or state["global_step"] >= total_timesteps)


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


# -- one expert's training state: what its checkpoint carries, and its env and logs -------------------------------------


@dataclass(frozen=True)
class ObservationLayout:
    """How the trainer flattens the envs' Dict observations (the same for every expert)."""

    keys: list[str]
    sizes: list[int]
    action_size: int
    #: column of the flat observation that holds the time in the clip (residual actions, time features)
    time_column: int

    @property
    def size(self) -> int:
        return sum(self.sizes)

    @classmethod
    def of(cls, envs: Any) -> ObservationLayout:
        keys = list(envs.single_observation_space.spaces)
        sizes = [envs.single_observation_space[k].shape[0] for k in keys]
        time_column = sum(sizes[: keys.index(TIME_KEY)]) if TIME_KEY in keys else 0
        return cls(keys, sizes, envs.single_action_space.shape[0], time_column)

    def flatten(self, observation: dict[str, np.ndarray], num_envs: int) -> np.ndarray:
        return flatten_observation(batched_observation(observation, num_envs), self.keys)


def new_early_stop() -> dict[str, Any]:
    return {"best_norm_return": -math.inf, "evals_without_improvement": 0, "full_length_evals": 0, "stopped": False}


@dataclass(eq=False)  # compared by identity
class ExpertRun:
    """Expert ``k`` of the ensemble: its snippet, run folder, envs and normalisers, and the counters its checkpoint
    carries across invocations (:meth:`restore`, :meth:`save_checkpoint`)."""

    k: int
    snippet: Snippet
    run_dir: Path
    envs: Any
    obs_normalizer: ObservationNormalizer
    reward_normalizer: RewardNormalizer
    reference_actions: ReferenceActions | None
    args_json: str
    tracker: EpisodeTracker
    own_starts: OwnStartStates | None = None  # with --own-start-probability; refilled after a resume
    upright: UprightShaping | None = None  # with --upright-reward-weight
    # -- carried by the checkpoint
    global_step: int = 0
    update: int = 0
    training_seconds: float = 0.0  # before this invocation
    best_return: dict[str, float] = dataclasses.field(default_factory=lambda: dict.fromkeys(EVAL_SETTINGS, -math.inf))
    early_stop: dict[str, Any] = dataclasses.field(default_factory=new_early_stop)
    evaluations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # -- this invocation
    resumed: bool = False
    active: bool = True
    stop_reason: str = ""
    start_step: int = 0
    checkpointed_step: int = 0
    next_eval_step: int = 0
    eval_envs: dict[str, Any] = dataclasses.field(default_factory=dict)
    writer: Any = None

    @property
    def last_eval_step(self) -> int:
        return self.evaluations[-1]["global_step"] if self.evaluations else -1

    def restore(self, state: dict[str, Any], policy: ExpertEnsemble) -> None:
        """Continues from checkpoint ``state``: network, normalisers, RNG and counters."""
        policy.load_expert_state(self.k, state["policy"])
        self.obs_normalizer.rms.load_state_dict(state["obs_rms"])
        self.reward_normalizer.return_rms.load_state_dict(state["return_rms"])
        set_rng_state(state["rng"])
        self.global_step, self.update = int(state["global_step"]), int(state["update"])
        self.training_seconds = float(state["training_seconds"])
        self.best_return, self.early_stop, self.evaluations = (
            state["best_return"],
            state["early_stop"],
            state["evaluations"],
        )
        self.resumed = True

    def save_checkpoint(self, policy: ExpertEnsemble, optimizer: torch.optim.Optimizer, seconds: float) -> None:
        """Writes everything :meth:`restore` reads; ``seconds``: this invocation's training time so far."""
        rms = self.reward_normalizer.return_rms.state_dict()
        state = {
            "global_step": self.global_step,
            "update": self.update,
            "training_seconds": self.training_seconds + seconds,
            "policy": policy.expert_state(self.k),
            "adam": adam_moments(optimizer, policy, self.k),
            "obs_rms": {n: torch.from_numpy(v) for n, v in self.obs_normalizer.rms.state_dict().items()},
            "return_rms": {n: torch.from_numpy(v) for n, v in rms.items()},
            "rng": rng_state(),
            "best_return": self.best_return,
            "early_stop": self.early_stop,
            "evaluations": self.evaluations,
            "args": self.args_json,
        }
        save_checkpoint(self.run_dir, state)
        self.checkpointed_step = self.global_step

    def save_model(self, kind: str, expert: ExpertActorCritic, layout: ObservationLayout, summary: dict) -> None:
        """The best model of evaluation ``kind`` so far, as ``load_expert`` reads it."""
        save_expert(
            self.run_dir / kind / "model",
            expert,
            self.obs_normalizer,
            layout.keys,
            layout.sizes,
            self.reward_normalizer.return_rms,
            self.reward_normalizer.config(),
            metadata={
                **clip_info(self.snippet),
                "ref_steps": [0],
                "global_step": self.global_step,
                "evaluation": {kind: summary},
            },
            reference_actions=self.reference_actions,
        )

    def observe(self, observation: dict[str, np.ndarray], layout: ObservationLayout) -> tuple[np.ndarray, np.ndarray]:
        """A batch of env observations as the policy's input (normalised, the statistics updated) and its
        reference actions (zeros for an absolute expert)."""
        flat = layout.flatten(observation, self.envs.num_envs)
        self.obs_normalizer.update(flat)
        offset = reference_offset(self.reference_actions, layout.time_column, flat)
        return self.obs_normalizer(flat), (np.zeros((len(flat), layout.action_size)) if offset is None else offset)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for env in (self.envs, *self.eval_envs.values()):
            env.close()


def training_env_kwargs(args: Args) -> dict[str, Any]:
    """The experts' observations: MoCapAct's time index and any ``--reference-observables`` at the current step."""
    return dict(observables=TIME_INDEX + tuple(args.reference_observables), ref_steps=(0,))


def make_expert_runs(
    args: Args,
    snippets: list[Snippet],
    backend: str,
    start_states: list[tuple[np.ndarray, np.ndarray] | None] | None,
) -> tuple[list[ExpertRun], ObservationLayout]:
    """Each snippet's envs, normalisers and run folder (``clip_info.json`` written); not yet resumed."""
    runs = []
    for k, snippet in enumerate(snippets):
        run_dir = Path(args.log_root) / snippet.id / str(args.seed)
        write_json(run_dir / "clip_info.json", clip_info(snippet))
        random_start = (
            tuple(world >= args.snippet_start_envs for world in range(args.num_envs))
            if args.snippet_start_envs
            else True
        )
        envs = make_tracking_vec_env(
            snippet.id,
            args.num_envs,
            backend,
            args.vectorization_mode,
            random_start=random_start,
            min_steps=clamp_min_steps(snippet, args.min_steps),
            act_noise=args.act_noise,
            termination_error_threshold=args.termination_error_threshold,
            **training_env_kwargs(args),
        )
        # The reference features are read only for the options that need them.
        if args.start_activations == "reference" or args.upright_reward_weight > 0:
            reference = get_source().clip_set(snippet.id).reference_features(0)
        if args.start_activations == "reference":
            envs.unwrapped.set_start_states(*driven_reference_states(reference), 1.0)
        if args.push_force > 0:
            envs.unwrapped.set_pushes(args.push_force, args.push_probability, args.push_steps)
        starts = (start_states or [None] * len(snippets))[k]
        if starts is not None:
            envs.unwrapped.set_start_states(*starts, args.relay_handover_probability)
        layout = ObservationLayout.of(envs)
        # With residual actions each policy's mean is added to its snippet's reference action at the observed step.
        residual = args.action_parameterization == "reference_residual"
        runs.append(
            ExpertRun(
                k=k,
                snippet=snippet,
                run_dir=run_dir,
                envs=envs,
                obs_normalizer=ObservationNormalizer(layout.size, enabled=args.normalize_observations),
                reward_normalizer=RewardNormalizer(args.num_envs, args.gamma, enabled=args.normalize_rewards),
                reference_actions=ReferenceActions.for_snippet(snippet.id) if residual else None,
                args_json=args_json(dataclasses.replace(args, clips=(snippet.id,))),
                tracker=EpisodeTracker(args.num_envs),
                own_starts=(
                    OwnStartStates(snippet, args.num_envs, args.own_start_min_age)
                    if args.own_start_probability > 0
                    else None
                ),
                upright=(
                    UprightShaping(snippet, reference["quaternion"], args.upright_reward_weight)
                    if args.upright_reward_weight > 0
                    else None
                ),
            )
        )
    autoreset_mode = runs[0].envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if autoreset_mode != AutoresetMode.NEXT_STEP:
        raise RuntimeError(f"the trainer expects next-step autoreset, the vector env uses {autoreset_mode}.")
    return runs, ObservationLayout.of(runs[0].envs)


def make_policy(args: Args, runs: list[ExpertRun], layout: ObservationLayout) -> ExpertEnsemble:
    """K independent actor-critics computed together; each expert's initial weights depend on its seed and snippet
    only, so an expert starts the same whatever it trains with."""
    experts = []
    for run in runs:
        torch.manual_seed(snippet_seed(args.seed, run.snippet.id))
        experts.append(
            ExpertActorCritic(
                layout.size,
                layout.action_size,
                args.policy_hidden_sizes,
                args.value_hidden_sizes,
                args.activation,
                args.log_std_init,
                args.learn_log_std,
                time_features=args.time_features,
                time_column=layout.time_column,
            )
        )
    torch.manual_seed(args.seed)
    return ExpertEnsemble(experts)


def start_from_states(
    runs: list[ExpertRun],
    initial_states: list[dict[str, Any] | None] | None,
    checkpoints: list[dict[str, Any] | None],
    policy: ExpertEnsemble,
    args: Args,
) -> None:
    """Each expert without a checkpoint of its own takes ``initial_states[k]``'s network and observation statistics
    (a warm start); ``ValueError`` when they do not fit its networks or observations. A frozen std stays this run's
    own (``--log-std-init``): it is a training setting, not something the source expert learnt."""
    for run, state in zip(runs, initial_states or [None] * len(runs), strict=True):
        if state is None or checkpoints[run.k] is not None:
            continue
        try:
            policy.load_expert_state(run.k, state["policy"])
            run.obs_normalizer.rms.load_state_dict(state["obs_rms"])
        except (ValueError, RuntimeError) as error:  # other networks or observations
            raise ValueError(f"{run.snippet.id}: the warm start's expert does not fit this one: {error}") from None
        if not args.learn_log_std:
            with torch.no_grad():
                policy.log_std[run.k] = args.log_std_init  # where --log-std-final's schedule also begins


def resume_runs(
    runs: list[ExpertRun], checkpoints: list[dict[str, Any] | None], policy: ExpertEnsemble, optimizer: Any
) -> None:
    """Restores every expert that has a checkpoint; raises ``ValueError`` naming a checkpoint trained with other
    settings."""
    for run, state in zip(runs, checkpoints, strict=True):
        if state is None:
            continue
        try:
            run.restore(state, policy)
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(
                f"{checkpoint_path(run.run_dir)} was written with other network settings ({run.run_dir / 'args.json'}); "
                f"pass the same flags, or --no-resume to start again.\n{error}"
            ) from error
        print(f"resuming {run.run_dir} from step {run.global_step:,} (update {run.update})")
    if any(state is not None for state in checkpoints):
        moments = [state["adam"] if state is not None else None for state in checkpoints]
        restore_adam_moments(optimizer, policy, moments, max(run.update for run in runs))


# -- PPO: rollouts, advantages, the update -----------------------------------------------------------------------------


@dataclass
class Rollout:
    """One update's data of every expert, a leading expert axis: (K, num_steps, num_envs, ...)."""

    obs: torch.Tensor
    actions: torch.Tensor
    offsets: torch.Tensor  # reference actions under the policy's mean (0 if absolute)
    logprobs: torch.Tensor
    rewards: torch.Tensor
    values: torch.Tensor
    terminateds: torch.Tensor
    dones: torch.Tensor
    valid: torch.Tensor  # False on steps that only autoreset, and for stopped experts
    next_obs: torch.Tensor  # (K, num_envs, ...): the observation after the last step
    next_offset: torch.Tensor
    resetting: np.ndarray  # (K, num_envs): the next step only autoresets
    action_bound: float | None = None  # 1.0: log probabilities of the clipped actions (--action-likelihood clipped)

    @classmethod
    def zeros(cls, num_experts: int, args: Args, layout: ObservationLayout) -> Rollout:
        shape = (num_experts, args.num_steps, args.num_envs)
        return cls(
            obs=torch.zeros((*shape, layout.size)),
            actions=torch.zeros((*shape, layout.action_size)),
            offsets=torch.zeros((*shape, layout.action_size)),
            logprobs=torch.zeros(shape),
            rewards=torch.zeros(shape),
            values=torch.zeros(shape),
            terminateds=torch.zeros(shape),
            dones=torch.zeros(shape),
            valid=torch.zeros(shape, dtype=torch.bool),
            next_obs=torch.zeros((num_experts, args.num_envs, layout.size)),
            next_offset=torch.zeros((num_experts, args.num_envs, layout.action_size)),
            resetting=np.zeros((num_experts, args.num_envs), dtype=bool),
            action_bound=1.0 if args.action_likelihood == "clipped" else None,
        )

    def reset(self, runs: list[ExpertRun], args: Args, layout: ObservationLayout) -> None:
        """Resets every expert's envs; a resumed run reseeds them from its update count (their RNG state is not
        checkpointed)."""
        for run in runs:
            observation, info = run.envs.reset(seed=args.seed + run.update * args.num_envs)
            run.tracker.on_reset(info)
            self.set_next(run.k, *run.observe(observation, layout))

    def set_next(self, k: int, normalized: np.ndarray, offset: np.ndarray) -> None:
        self.next_obs[k] = torch.as_tensor(normalized)
        self.next_offset[k] = torch.as_tensor(offset)


def collect_rollout(
    runs: list[ExpertRun], trained: list[ExpertRun], policy: ExpertEnsemble, rollout: Rollout, layout: ObservationLayout
) -> list[list[EpisodeMetrics]]:
    """Steps the ``trained`` experts' envs for one update; the training episodes that ended, per expert."""
    active = torch.tensor([run.active for run in runs])
    finished: list[list[EpisodeMetrics]] = [[] for _ in runs]
    for step in range(rollout.obs.shape[1]):
        rollout.obs[:, step], rollout.offsets[:, step] = rollout.next_obs, rollout.next_offset
        rollout.valid[:, step] = torch.from_numpy(~rollout.resetting) & active[:, None]
        with torch.no_grad():
            action, logprob, _, value = policy.action_and_value(
                rollout.next_obs, action_offset=rollout.next_offset, action_bound=rollout.action_bound
            )
        rollout.actions[:, step], rollout.logprobs[:, step], rollout.values[:, step] = action, logprob, value
        # The env sees clipped actions; the buffer keeps the sampled ones for their log-probability.
        env_actions = action.clamp(-1.0, 1.0).numpy()
        for run in trained:
            k, resetting = run.k, rollout.resetting[run.k]
            observation, reward, terminated, truncated, info = run.envs.step(env_actions[k])
            done = np.logical_or(terminated, truncated)
            trained_reward = reward if run.upright is None else run.upright(reward, info)
            rollout.rewards[k, step] = torch.from_numpy(run.reward_normalizer(trained_reward, done, ~resetting))
            rollout.terminateds[k, step], rollout.dones[k, step] = torch.from_numpy(terminated), torch.from_numpy(done)
            run.global_step += int((~resetting).sum())
            finished[k].extend(run.tracker.on_step(reward, terminated, truncated, info))
            run.tracker.on_reset(info, mask=resetting)
            if run.own_starts is not None:
                run.own_starts.observe(info, done, resetting)
            rollout.resetting[k] = done
            rollout.set_next(k, *run.observe(observation, layout))
    return finished


def advantages_and_returns(policy: ExpertEnsemble, rollout: Rollout, args: Args) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE. A truncated episode bootstraps from its final observation, which next-step autoreset returns as the
    following observation (obs[t + 1], or next_obs); a terminated one from 0."""
    with torch.no_grad():
        next_value = policy.value(rollout.next_obs)
        advantages = torch.zeros_like(rollout.rewards)
        last_gae = torch.zeros_like(next_value)
        for t in reversed(range(args.num_steps)):
            following_value = next_value if t == args.num_steps - 1 else rollout.values[:, t + 1]
            not_terminal = 1.0 - rollout.terminateds[:, t]
            delta = rollout.rewards[:, t] + args.gamma * following_value * not_terminal - rollout.values[:, t]
            last_gae = delta + args.gamma * args.gae_lambda * (1.0 - rollout.dones[:, t]) * last_gae
            advantages[:, t] = last_gae
    return advantages, advantages + rollout.values


def normalized_advantages(advantages: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """SB3 normalises advantages per minibatch: here per expert, over its real transitions."""
    mean = masked_mean(advantages, mask, count).unsqueeze(1)
    var = ((advantages - mean) ** 2 * mask).sum(-1) / (count - 1.0).clamp(min=1.0)
    return torch.where((count > 1).unsqueeze(1), (advantages - mean) / (var.sqrt().unsqueeze(1) + 1e-8), advantages)


def ppo_update(
    policy: ExpertEnsemble,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    args: Args,
    trained: list[int],
) -> dict[str, torch.Tensor]:
    """Optimises every expert's policy and value networks on its own data; the last minibatch's losses and the
    update's clip fraction, per expert. Steps that only reset stay in place, masked out of every mean."""
    num_experts = rollout.obs.shape[0]
    b_obs = rollout.obs.reshape(num_experts, -1, rollout.obs.shape[-1])
    b_actions = rollout.actions.reshape(num_experts, -1, rollout.actions.shape[-1])
    b_offsets = rollout.offsets.reshape(num_experts, -1, rollout.offsets.shape[-1])
    b_logprobs, b_advantages = rollout.logprobs.reshape(num_experts, -1), advantages.reshape(num_experts, -1)
    b_returns, b_valid = returns.reshape(num_experts, -1), rollout.valid.reshape(num_experts, -1).float()
    batch_size = b_obs.shape[1]
    clipfracs: list[torch.Tensor] = []
    for _epoch in range(args.update_epochs):
        permutation = torch.from_numpy(np.random.permutation(batch_size))
        for start in range(0, batch_size, args.minibatch_size):
            mb = permutation[start : start + args.minibatch_size]
            mask = b_valid[:, mb]
            count = mask.sum(-1).clamp(min=1.0)
            _, new_logprob, entropy, new_value = policy.action_and_value(
                b_obs[:, mb], b_actions[:, mb], b_offsets[:, mb], rollout.action_bound
            )
            log_ratio = new_logprob - b_logprobs[:, mb]
            ratio = log_ratio.exp()
            with torch.no_grad():
                old_approx_kl = masked_mean(-log_ratio, mask, count)
                approx_kl = masked_mean((ratio - 1) - log_ratio, mask, count)
                clipfracs.append(masked_mean(((ratio - 1.0).abs() > args.clip_coef).float(), mask, count))
            mb_advantages = normalized_advantages(b_advantages[:, mb], mask, count)
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
    return {
        "value_loss": v_loss.detach(),
        "policy_loss": pg_loss.detach(),
        "entropy": entropy_loss.detach(),
        "old_approx_kl": old_approx_kl,
        "approx_kl": approx_kl,
        "clipfrac": torch.stack(clipfracs).mean(0),
    }


def log_update(
    run: ExpertRun,
    losses: dict[str, torch.Tensor],
    rollout: Rollout,
    returns: torch.Tensor,
    learning_rate: float,
    action_std: float,
    elapsed: float,
    finished: list[EpisodeMetrics],
) -> None:
    """Expert ``run``'s TensorBoard scalars of one update (cleanrl's tags; ``action_std``: the mean over the actions
    of the std its rollout sampled with)."""
    k, step, writer = run.k, run.global_step, run.writer
    valid = rollout.valid[k].reshape(-1)
    y_pred, y_true = rollout.values[k].reshape(-1)[valid].numpy(), returns[k].reshape(-1)[valid].numpy()
    var_y = np.var(y_true)
    writer.add_scalar("charts/learning_rate", learning_rate, step)
    writer.add_scalar("charts/action_std", action_std, step)
    writer.add_scalar("charts/SPS", (run.global_step - run.start_step) / elapsed, step)
    for name, values in losses.items():
        writer.add_scalar(f"losses/{name}", values[k].item(), step)
    writer.add_scalar("losses/explained_variance", np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y, step)
    # Means over the rollout's finished episodes: one event per update, not per episode, keeps TensorBoard's queue
    # off the per-step path (its events took about 5% of a K = 8 cProfile).
    if finished:
        summary = summarize(finished)
        writer.add_scalar("charts/episodes", summary["episodes"], step)
        for tag, metric in TRAINING_EPISODE_TAGS.items():
            writer.add_scalar(tag, summary[f"mean_{metric}"], step)


def evaluate_run(
    run: ExpertRun, policy: ExpertEnsemble, layout: ObservationLayout, args: Args, backend: str, minutes: float
) -> dict[str, Any]:
    """MoCapAct's two evaluations of expert ``run`` (deterministic actions), logged; saves each one's best model."""
    expert = policy.expert(run.k)
    act = functools.partial(
        deterministic_actions,
        expert=expert,
        obs_normalizer=run.obs_normalizer,
        observation_keys=layout.keys,
        reference_actions=run.reference_actions,
        time_column=layout.time_column,
        num_envs=args.eval_num_envs,
    )
    record: dict[str, Any] = {"global_step": run.global_step, "training_minutes": minutes}
    for kind, episodes in (("eval_rsi", args.eval_rsi_episodes), ("eval_start", args.eval_start_episodes)):
        if kind not in run.eval_envs:
            run.eval_envs[kind] = make_eval_vec_env(
                run.snippet.id, kind, args.eval_num_envs, backend, args.vectorization_mode, **training_env_kwargs(args)
            )
        eval_seed = args.seed + 1_000_003 * (len(run.evaluations) + 1) + (kind == "eval_start")
        summary = summarize(run_episodes(run.eval_envs[kind], act, episodes, seed=eval_seed))
        for key, value in summary.items():
            run.writer.add_scalar(f"{kind}/{key}", value, run.global_step)
        run.writer.add_scalar(f"{kind}/training_minutes", minutes, run.global_step)
        if summary["mean_episode_return"] > run.best_return[kind]:  # each evaluation's best model
            run.best_return[kind] = summary["mean_episode_return"]
            run.save_model(kind, expert, layout, summary)
        record[kind] = summary
    run.evaluations.append(record)
    write_json(run.run_dir / "evaluations.json", run.evaluations)
    return record


def print_results(runs: list[ExpertRun]) -> None:
    for run in runs:
        if run.stop_reason == "nothing to do":
            continue
        print(f"{run.run_dir}: {run.stop_reason} at step {run.global_step:,}.")
        if run.evaluations:
            for kind in EVAL_SETTINGS:
                s = run.evaluations[-1][kind]
                print(
                    f"  {kind:10s} return {s['mean_episode_return']:8.2f}  length {s['mean_episode_length']:6.1f}  "
                    f"norm return {s['mean_norm_episode_return']:.3f}  norm length {s['mean_norm_episode_length']:.3f}"
                )


# -- the training loop -------------------------------------------------------------------------------------------------


def plan_training(args: Args) -> tuple[list[Snippet], str, list[dict[str, Any] | None]]:
    """The snippets of ``args.clips``, the backend and each expert's checkpoint to resume (or ``None``); raises
    ``ValueError`` naming every unknown, uncovered, repeated or broken snippet and a checkpoint of other settings."""
    if not args.clips:
        raise ValueError("no clip given: pass --clips with one or more clip or snippet ids.")
    snippets = [p.snippet for p in plan_snippets(args.clips, crop=False)]
    backend = check_backend(args.backend)
    ids = [s.id for s in snippets]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"snippet(s) {repeated} given more than once.")
    check_writable_folder(args.log_root, "--log-root")  # a read-only or full disk is named before any work
    run_dirs = [Path(args.log_root) / s.id / str(args.seed) for s in snippets]
    checkpoints = [resume_state(run_dir, args.resume) for run_dir in run_dirs]
    for run_dir, state in zip(run_dirs, checkpoints, strict=True):
        if state is not None:
            check_resumed_args(state["args"], args, run_dir)
    return snippets, backend, checkpoints


def start_runs(runs: list[ExpertRun], args: Args) -> bool:
    """Marks the experts left to train and opens every expert's logs; whether any is left."""
    for run in runs:
        run.active = not run.early_stop["stopped"] and run.global_step < args.total_timesteps
        run.stop_reason = f"reached {args.total_timesteps:,} steps" if run.active else "nothing to do"
        if not run.active:
            reason = "stopped early" if run.early_stop["stopped"] else f"reached {run.global_step:,} steps"
            print(f"{run.run_dir}: already {reason}; nothing to do (raise --total-timesteps to train on).")
    if not any(run.active for run in runs):
        return False
    table = "\n".join(f"|{name}|{value}|" for name, value in dataclasses.asdict(args).items())
    for run in runs:
        run.writer = open_tensorboard(run.run_dir, run.global_step if run.resumed else None)
        if run.active:
            write_json(run.run_dir / "args.json", json.loads(run.args_json))
            if not run.resumed:
                run.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        run.start_step = run.checkpointed_step = run.global_step
        run.next_eval_step = (run.global_step // args.eval_every_steps + 1) * args.eval_every_steps
    return True


def ppo_iteration(
    runs: list[ExpertRun],
    trained: list[ExpertRun],
    policy: ExpertEnsemble,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    layout: ObservationLayout,
    args: Args,
    elapsed: Callable[[], float],
) -> None:
    """One PPO update of the ``trained`` experts: collect, advantages, optimise, log."""
    for run in trained:
        run.update += 1
    # Every expert in an update steps as many times, so they share one schedule position.
    learning_rate = learning_rate_at(args, max(run.global_step for run in trained))
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    if args.log_std_final is not None:
        with torch.no_grad():
            # Per expert: each counts its own env steps (autoreset steps do not count), so they drift apart.
            for run in trained:
                policy.log_std[run.k] = log_std_at(args, run.global_step)
    finished = collect_rollout(runs, trained, policy, rollout, layout)
    for run in trained:
        if run.own_starts is not None and len(run.own_starts) >= MIN_OWN_START_STATES:
            run.envs.unwrapped.set_start_states(*run.own_starts.starts(), args.own_start_probability)
    action_std = policy.log_std.detach().exp().mean(dim=1)  # before the update: what the rollout sampled with
    advantages, returns = advantages_and_returns(policy, rollout, args)
    losses = ppo_update(policy, optimizer, rollout, advantages, returns, args, [run.k for run in trained])
    seconds = elapsed()
    for run in trained:
        log_update(run, losses, rollout, returns, learning_rate, action_std[run.k].item(), seconds, finished[run.k])


def evaluate_due(
    due: list[ExpertRun],
    policy: ExpertEnsemble,
    layout: ObservationLayout,
    args: Args,
    backend: str,
    elapsed: float,
    out_of_time: bool,
) -> None:
    """Evaluates each expert that is due; stops those that early stopping or the budget end."""
    for run in due:
        run.next_eval_step = (run.global_step // args.eval_every_steps + 1) * args.eval_every_steps
        record = evaluate_run(run, policy, layout, args, backend, (run.training_seconds + elapsed) / 60)
        reason = update_early_stop(run.early_stop, record, args)
        if reason is not None and not out_of_time:
            run.stop_reason, run.active = reason, False
        elif run.global_step >= args.total_timesteps:
            run.active = False


def train_experts(
    args: Args,
    on_evaluation: EvaluationCallback | None = None,
    start_states: list[tuple[np.ndarray, np.ndarray] | None] | None = None,
    initial_states: list[dict[str, Any] | None] | None = None,
) -> int:
    """One expert per snippet of ``args.clips`` (preset resolved), trained together. ``start_states[k]``:
    (steps, physics states) expert ``k``'s random-start worlds may start from (``--relay-handover-probability``);
    ``initial_states[k]``: a checkpoint whose network and observation statistics expert ``k`` starts from unless
    it resumes (``--relay-warm-start``)."""
    try:
        snippets, backend, checkpoints = plan_training(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    # -- seeding, environments, agents; then the state the checkpoints carry ----------------------------------------
    seed_everything(args.seed)
    torch.set_num_threads(args.torch_threads)
    runs, layout = make_expert_runs(args, snippets, backend, start_states)
    policy = make_policy(args, runs, layout)
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=args.learning_rate, eps=1e-5)
    try:
        start_from_states(runs, initial_states, checkpoints, policy, args)
        resume_runs(runs, checkpoints, policy, optimizer)
        left_to_train: bool | None = start_runs(runs, args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        left_to_train = None
    if not left_to_train:
        for run in runs:
            run.close()
        return 2 if left_to_train is None else 0

    # -- start the game -------------------------------------------------------------------------------------------------
    rollout = Rollout.zeros(len(runs), args, layout)
    rollout.reset(runs, args, layout)
    start_time = last_checkpoint = time.time()
    progress = tqdm(
        total=len(runs) * args.total_timesteps,
        initial=sum(min(run.global_step, args.total_timesteps) for run in runs),
        unit="step",
        disable=not args.progress_bar,
        dynamic_ncols=True,
    )
    if threading.current_thread() is threading.main_thread():  # a Ray trial runs main() in a thread
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops like Ctrl-C
    try:
        while any(run.active for run in runs):
            trained = [run for run in runs if run.active]  # the experts this iteration trains, evaluates, checkpoints
            # Past --max-minutes: no more updates; every expert is evaluated (unless it just was) and checkpointed.
            out_of_time = args.max_minutes is not None and time.time() - start_time >= 60 * args.max_minutes
            if out_of_time:
                for run in trained:
                    run.stop_reason, run.active = f"--max-minutes {args.max_minutes} reached", False
                due = [run for run in trained if run.last_eval_step != run.global_step]
            else:
                ppo_iteration(runs, trained, policy, optimizer, rollout, layout, args, lambda: time.time() - start_time)
                steps_per_second = sum(run.global_step - run.start_step for run in runs) / (time.time() - start_time)
                progress.update(sum(min(run.global_step, args.total_timesteps) for run in runs) - progress.n)
                label = runs[0].snippet.id if len(runs) == 1 else f"{len(trained)}/{len(runs)} experts"
                progress.set_description(f"{label} {steps_per_second:.0f} SPS")
                due = [run for run in trained if run.global_step >= min(run.next_eval_step, args.total_timesteps)]

            # -- evaluations (MoCapAct's two) every eval_every_steps, at the budget and at --max-minutes ----------
            evaluate_due(due, policy, layout, args, backend, time.time() - start_time, out_of_time)
            if due:
                shown = [run.evaluations[-1]["eval_rsi"] for run in runs if run.evaluations]
                progress.set_postfix(
                    rsi_len=f"{np.mean([r['mean_norm_episode_length'] for r in shown]):.2f}",
                    rsi_ret=f"{np.mean([r['mean_norm_episode_return'] for r in shown]):.2f}",
                )

            # -- checkpoints: after an evaluation, at the end, and every checkpoint_every_seconds ------------------
            periodic = time.time() - last_checkpoint >= args.checkpoint_every_seconds
            for run in trained:
                if run in due or out_of_time or periodic:
                    run.save_checkpoint(policy, optimizer, time.time() - start_time)
                    if run in due and on_evaluation is not None:
                        on_evaluation(run.k, run.evaluations[-1])
            if due or periodic:
                last_checkpoint = time.time()
    except KeyboardInterrupt:
        for run in runs:
            run.stop_reason = f"interrupted at step {run.global_step:,}; the next run resumes from the last checkpoint"
            run.global_step = run.checkpointed_step
    finally:
        progress.close()
        for run in runs:
            run.close()
    print_results(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
