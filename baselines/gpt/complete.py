"""Motion completion: mean episode length per clip for a GPT policy and MoCapAct's baselines.

    python baselines/gpt/complete.py --policy runs/gpt/best --prompt-experts runs/experts --clips CMU_016_22
    python baselines/gpt/complete.py --policy zero --prompt-experts runs/experts --clips CMU_016_22

An expert drives the first 32 steps (the prompt); the policy continues. The
metric is the mean episode length (the prompt included, at most ``max_steps``).
``--policy`` is a saved GPT policy, ``zero`` (zero actions after the prompt) or
``expert`` (the prompting expert going on past its snippet). Videos mark the
prompt steps with an orange band and a caption.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from mocapact_envs.demo import write_video
from mocapact_envs.envs.motion_completion import BASELINES, CompletionActor, MotionCompletionEnv, run_completion
from mocapact_envs.files import write_json
from mocapact_envs.policies.gpt import GPTPolicy
from mocapact_envs.training.scripts import run_cli

PROMPT_COLOR, POLICY_COLOR = (255, 140, 0), (40, 160, 255)


@dataclass
class Args:
    prompt_experts: Path
    """Folder of expert runs that prompt (their snippets must cover the clips)."""
    policy: str = "zero"
    """A saved GPT policy directory, or a baseline: ``zero`` or ``expert``."""
    clips: list[str] = field(default_factory=lambda: ["CMU_016_22"])
    """Clips to start from."""
    episodes: int = 100
    """Episodes per clip (MoCapAct: 100)."""
    max_steps: int = 500
    """Longest episode, the prompt included."""
    deterministic: bool = True
    """GPT: act with the action mean."""
    video_dir: Path | None = None
    """Write one video per clip here, prompt steps marked."""
    output_json: Path | None = None
    """Also write the lengths here."""
    seed: int = 0


def load_policy(name: str):
    return name if name in BASELINES else GPTPolicy.load(name)


def caption(frame: np.ndarray, text: str, color: tuple[int, int, int]) -> np.ndarray:
    """The frame with a coloured band and a caption at the top."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width, 24), fill=color)
    draw.text((8, 6), text, fill=(255, 255, 255))
    return np.asarray(image)


def record(policy, clip: str, args: Args, label: str) -> tuple[list[np.ndarray], float]:
    env = MotionCompletionEnv(
        clip, prompt_experts=args.prompt_experts, max_steps=args.max_steps, render_mode="rgb_array"
    )
    actor = CompletionActor(policy, args.deterministic)
    observation, info = env.reset(seed=args.seed)
    actor.start(env, info)
    prompt = info["prompt_steps"]
    frames = [
        caption(f, f"prompt: expert {info['prompt_snippet_id']} ({i}/{prompt})", PROMPT_COLOR)
        for i, f in enumerate(info["prompt_frames"])
    ]
    while True:
        observation, _, terminated, truncated, info = env.step(actor(env, observation))
        actor.observe(observation)
        frames.append(caption(env.render(), f"{label}: step {info['episode_steps']}", POLICY_COLOR))
        if terminated or truncated:
            env.close()
            return frames, env.metadata["render_fps"]


def main(args: Args) -> dict[str, list[int]]:
    policy = load_policy(args.policy)
    label = args.policy if args.policy in BASELINES else "GPT"
    lengths = run_completion(
        policy, args.clips, args.prompt_experts, args.episodes, max_steps=args.max_steps, seed=args.seed,
        deterministic=args.deterministic, progress_bar=True,
    )  # fmt: skip
    table = Table(
        title=f"motion completion with {label} ({args.episodes} episodes per clip, at most {args.max_steps} steps)"
    )
    for column in ("clip", "mean length", "std", "reached the limit"):
        table.add_column(column, justify="left" if column == "clip" else "right")
    for clip, values in lengths.items():
        table.add_row(
            clip,
            f"{np.mean(values):.1f}",
            f"{np.std(values):.1f}",
            f"{np.mean(np.array(values) >= args.max_steps):.0%}",
        )
    Console().print(table)
    if args.output_json:
        write_json(args.output_json, {"policy": args.policy, "lengths": lengths})
    if args.video_dir:
        for clip in args.clips:
            frames, fps = record(policy, clip, args, label)
            path = args.video_dir / f"{clip}_{label}.mp4"
            write_video(path, frames, fps)
            print(f"video: {path}")
    return lengths


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
