"""Evaluate a transfer-task policy, film it, and compare learning curves of several runs.

    # mean return and length over 20 deterministic episodes, and a video
    .venv/bin/python baselines/transfer/evaluate.py --policy runs/transfer/go_to_target_ll_ppo_seed0 \
        --episodes 20 --video gtt_ll.mp4
    # learning curves of runs with and without the low-level policy, against env steps and minutes
    .venv/bin/python baselines/transfer/evaluate.py --compare runs/transfer/go_to_target_ll_ppo_seed0 \
        runs/transfer/go_to_target_raw_ppo_seed0 --labels "low-level policy" "raw actions" --plot gtt.png

``--policy`` is a saved policy directory (``config.json`` + ``model.safetensors``) or a
run directory, whose ``best_policy`` is used. The policy is loaded without pickles
(``mocapact_envs.training.task_policies.load_task_policy``) and runs on the environment it
was trained on, with its own copy of the low-level policy.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mocapact_envs.evaluation.plotting import save_figure, subplots
from mocapact_envs.files import write_json
from mocapact_envs.training.scripts import run_cli
from mocapact_envs.training.task_policies import load_task_policy, read_learning_curve, run_task_episodes


@dataclass
class Args:
    policy: str | None = None
    """saved policy directory, or a run directory (its best_policy is used)"""
    episodes: int = 10
    """deterministic episodes to average over"""
    seed: int = 0
    """seed of the first episode (episode i uses seed + i)"""
    episode_steps: int | None = None
    """episode length override; unset: the length the policy was trained with"""
    json_out: str | None = None
    """also write the results as JSON here"""
    video: str | None = None
    """write an mp4 of --video-episodes episodes here (needs MUJOCO_GL=egl or osmesa without a display)"""
    video_episodes: int = 1
    """episodes in the video (seeded from --seed)"""
    video_size: tuple[int, int] = (640, 480)
    """video width and height"""
    compare: tuple[str, ...] = ()
    """run directories whose evaluation curves (from their TensorBoard logs) are plotted together"""
    labels: tuple[str, ...] = ()
    """legend labels of --compare, in order; unset: the run directories' names"""
    plot: str = "learning_curves.png"
    """PNG written when --compare is given"""
    title: str | None = None
    """plot title; unset: none"""


def resolve_policy_dir(path: Path) -> Path:
    if (path / "config.json").is_file() or not (path / "best_policy").is_dir():
        return path
    return path / "best_policy"


def evaluate(args: Args) -> dict:
    policy_dir = resolve_policy_dir(Path(args.policy))
    policy = load_task_policy(policy_dir)
    overrides = {} if args.episode_steps is None else {"episode_steps": args.episode_steps}
    env = policy.make_env(**overrides)
    episodes = run_task_episodes(policy, env, args.episodes, seed=args.seed)
    env.close()
    returns = np.array([e["return"] for e in episodes])
    lengths = np.array([e["length"] for e in episodes])
    results = {
        "policy": str(policy_dir),
        "env_id": policy.config["env"]["env_id"],
        "algo": policy.algo,
        "low_level_policy": policy.config["env"]["low_level_policy"] is not None,
        "num_timesteps": policy.metadata.get("num_timesteps"),
        "episodes": len(episodes),
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "mean_length": float(lengths.mean()),
        "std_length": float(lengths.std()),
    }
    print(
        f"{policy_dir} ({results['env_id']}, {results['algo']}, "
        f"{'low-level policy' if results['low_level_policy'] else 'raw actions'}, step {results['num_timesteps']}): "
        f"return {results['mean_return']:.2f} +- {results['std_return']:.2f}, "
        f"length {results['mean_length']:.1f} +- {results['std_length']:.1f} over {len(episodes)} episodes"
    )
    if args.json_out:
        write_json(args.json_out, results)
    if args.video:
        record_video(args, policy, overrides)
    return results


def record_video(args: Args, policy, overrides: dict) -> None:
    import imageio.v2 as imageio

    width, height = args.video_size
    env = policy.make_env(render_mode="rgb_array", width=width, height=height, **overrides)
    Path(args.video).parent.mkdir(parents=True, exist_ok=True)
    # macro_block_size=1: any frame size, no resizing warning.
    with imageio.get_writer(args.video, fps=env.metadata["render_fps"], macro_block_size=1) as writer:
        run_task_episodes(policy, env, args.video_episodes, seed=args.seed, on_frame=writer.append_data)
    env.close()
    print(f"video: {args.video}")


def plot_comparison(args: Args) -> None:
    if args.labels and len(args.labels) != len(args.compare):
        raise ValueError(f"--labels has {len(args.labels)} entries for {len(args.compare)} --compare runs.")
    labels = args.labels or tuple(Path(run).name for run in args.compare)
    figure, (by_steps, by_minutes) = subplots(1, 2, figsize=(11, 4), sharey=True)
    for run, label in zip(args.compare, labels, strict=True):
        curve = read_learning_curve(run)
        by_steps.plot(curve["steps"], curve["mean_return"], marker=".", label=label)
        by_minutes.plot(curve["minutes"], curve["mean_return"], marker=".", label=label)
        # The second half of the run's wall-clock: a late level less noisy than one evaluation (the steps' half
        # when the run logged no minutes).
        clock = curve["minutes"] if not np.isnan(curve["minutes"]).any() else curve["steps"].astype(np.float64)
        late = curve["mean_return"][clock >= clock[-1] / 2]
        late_se = late.std(ddof=1) / np.sqrt(len(late)) if len(late) > 1 else np.nan
        print(
            f"{label}: {len(curve['steps'])} evaluations, last {curve['mean_return'][-1]:.2f} "
            f"at step {curve['steps'][-1]:,} ({curve['minutes'][-1]:.1f} min), best {np.nanmax(curve['mean_return']):.2f}, "
            f"second half mean {late.mean():.2f} (se {late_se:.2f}, {len(late)} evaluations)"
        )
    by_steps.set(xlabel="env steps", ylabel="eval mean return (deterministic)")
    by_minutes.set(xlabel="wall-clock training minutes")
    for axes in (by_steps, by_minutes):
        axes.grid(alpha=0.3)
    by_steps.legend()
    save_figure(figure, args.plot, title=args.title)
    print(f"plot: {args.plot}")


def main(args: Args) -> int:
    if args.policy is None and not args.compare:
        print("error: nothing to do; give --policy DIR to evaluate and/or --compare RUN [RUN ...] to plot.")
        return 2
    if args.episodes < 1 or args.video_episodes < 1:
        print(f"error: --episodes and --video-episodes must be >= 1, got {args.episodes}, {args.video_episodes}.")
        return 2
    try:
        if args.policy is not None:
            evaluate(args)
        if args.compare:
            plot_comparison(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
