"""The main job: watch the CMU humanoid track a real clip, and read its metrics.

Writes ``<out-dir>/<clip>_reference.mp4`` (a kinematic replay of the reference)
and ``<out-dir>/<clip>_<policy>.mp4`` (the simulated humanoid with its grey
reference ghost), and prints MoCapAct's per-episode tracking metrics. The policy
is the clip expert shipped in ``mocapact_envs/pretrained/experts`` when there is
one (CMU_016_22), else zero actions.

    python -m mocapact_envs.tools.demo --clip CMU_016_22-0-82 --out-dir demo_output
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from mocapact_envs.envs.tracking import MocapTrackingEnv
from mocapact_envs.evaluation.metrics import EpisodeMetrics, EpisodeTracker
from mocapact_envs.mocap.amc import WalkerPoser
from mocapact_envs.policies.run_layout import SHIPPED_EXPERTS
from mocapact_envs.tools.help_format import DefaultsHelpFormatter
from mocapact_envs.wrappers.video import write_video

VIDEO_SIZE = (640, 480)


def reference_replay(env: MocapTrackingEnv, camera: str) -> list[np.ndarray]:
    """Frames of the first snippet's reference, posed kinematically (no physics)."""
    features = env.clip_set.reference_features(0)
    poser = WalkerPoser()
    frames = []
    for t in range(len(features["joints"])):
        poser.set_features({name: values[t] for name, values in features.items()})
        frames.append(poser.physics.render(height=VIDEO_SIZE[1], width=VIDEO_SIZE[0], camera_id=camera))
    return frames


def run_episode(env: MocapTrackingEnv, policy, seed: int) -> tuple[EpisodeMetrics, list[np.ndarray]]:
    """One episode with ``policy(observation) -> action``; its metrics and frames (none unless the env renders)."""
    tracker = EpisodeTracker()
    observation, info = env.reset(seed=seed)
    tracker.on_reset(info)
    rendering = env.render_mode == "rgb_array"
    frames = [env.render()] if rendering else []
    while True:
        observation, reward, terminated, truncated, info = env.step(policy(observation))
        if rendering:
            frames.append(env.render())
        finished = tracker.on_step(reward, terminated, truncated, info)
        if finished:
            return finished[0], frames


def zero_action_policy(observation) -> np.ndarray:
    return np.zeros(56, dtype=np.float32)


def choose_policy(name: str, snippet_id: str, console: Console):
    """``(label, observation -> action)`` for ``--policy``: a shipped or given expert, or zero actions."""
    from mocapact_envs.policies.expert_files import load_expert
    from mocapact_envs.policies.run_layout import find_experts

    if name == "zero":
        return "zero_action", zero_action_policy
    if name == "expert":
        runs = find_experts([SHIPPED_EXPERTS], [snippet_id]).runs_by_clip if SHIPPED_EXPERTS.is_dir() else {}
        run = next((r for rs in runs.values() for r in rs if r.snippet.id == snippet_id), None)
        if run is None:
            console.print(f"no expert ships for {snippet_id}: showing zero actions (train one: baselines/ppo_expert)")
            return "zero_action", zero_action_policy
        path = run.run_dir
    else:
        path = Path(name)
    expert = load_expert(path)
    return "expert", lambda observation: expert.predict(observation, deterministic=True)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mocapact-demo", description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter
    )
    # MoCapAct's snippet of the clip, the one the shipped expert tracks (the whole converted clip runs 3 steps on).
    parser.add_argument("--clip", default="CMU_016_22-0-82", help="clip or snippet id to track")
    parser.add_argument("--out-dir", type=Path, default=Path("demo_output"), help="where videos are written")
    parser.add_argument("--mocap-path", default=None, help="reference source (default: $MOCAPACT_MOCAP_PATH)")
    parser.add_argument("--episodes", type=int, default=3, help="policy episodes to run (the first starts the clip)")
    parser.add_argument(
        "--policy",
        default="expert",
        help="'expert' (the expert shipped for the clip, else zero actions), 'zero', or an expert run folder",
    )
    parser.add_argument("--seed", type=int, default=0, help="episode i is seeded seed + i")
    args = parser.parse_args(argv)
    console = Console()
    try:
        run_demo(args, console)
    except (ValueError, FileNotFoundError) as error:  # bad clip, source or policy: the message says which
        Console(stderr=True).print(f"[red]error:[/red] {error}")
        return 2
    return 0


def run_demo(args: argparse.Namespace, console: Console) -> None:
    """Writes the reference replay and the policy's episode video, and prints the metrics table."""
    env = MocapTrackingEnv(args.clip, mocap_path=args.mocap_path, random_start=False, render_mode="rgb_array")
    fps = env.metadata["render_fps"]
    reference_path = args.out_dir / f"{args.clip}_reference.mp4"
    write_video(reference_path, reference_replay(env, env.camera), fps)
    console.print(f"kinematic replay of the reference: {reference_path}")

    policy_name, policy = choose_policy(args.policy, env.clip_set.snippets[0].id, console)
    table = Table(title=f"{policy_name} policy on {args.clip} ({env.clip_set.snippets[0].id})")
    for column in ("episode", "start", "return", "length", "norm. return", "norm. length", "ended by"):
        table.add_column(column, justify="right")
    video_frames: list[np.ndarray] = []
    random_start_env = MocapTrackingEnv(args.clip, mocap_path=args.mocap_path, random_start=True)
    for episode in range(args.episodes):
        episode_env = env if episode == 0 else random_start_env
        metrics, frames = run_episode(episode_env, policy, seed=args.seed + episode)
        if episode == 0:
            video_frames = frames
        table.add_row(
            str(episode),
            "clip start" if episode == 0 else "random",
            f"{metrics.episode_return:.2f}",
            str(metrics.episode_length),
            f"{metrics.norm_episode_return:.3f}",
            f"{metrics.norm_episode_length:.3f}",
            "tracking error" if metrics.terminated else "clip end",
        )
    episode_path = args.out_dir / f"{args.clip}_{policy_name}.mp4"
    write_video(episode_path, video_frames, fps)
    console.print(table)
    console.print(f"humanoid and reference ghost, episode 0: {episode_path}")


if __name__ == "__main__":
    sys.exit(main())
