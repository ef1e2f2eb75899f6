"""Motion completion: mean episode length per clip for a GPT policy and MoCapAct's baselines.

    python baselines/gpt/complete.py --policy runs/gpt/best --prompt-experts runs/experts --clips CMU_016_22
    python baselines/gpt/complete.py --policy zero --prompt-experts zoo --clips zoo-val --total-episodes 100 \\
        --output-json runs/completion/zero_val.json
    python baselines/gpt/complete.py --compare runs/completion/zero_val.json runs/completion/gpt_val.json \\
        --labels zero GPT --plot runs/completion/val.png

An expert drives the first 32 steps (the prompt); the policy continues. The
metric is the mean episode length (the prompt included, at most ``max_steps``).
``--policy`` is a saved GPT policy, ``zero`` (zero actions after the prompt) or
``expert`` (the prompting expert going on past its snippet). ``--clips`` takes clip
ids or a clip set of the zoo: ``zoo-train`` (its clips among MoCapAct's training
clips) or ``zoo-val`` (among its validation clips). Episode ``i`` of a clip starts
from the same step with the same prompt whatever the policy, so runs with the same
clips, episodes and seed compare like for like. ``--compare`` puts the output JSONs
of such runs side by side: the difference of each mean length from the first's,
with its standard error ``sqrt(se1^2 + se2^2)``, and ``--plot`` draws the share of their
episodes still running at each step. Videos mark the prompt steps with an
orange band and a caption.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from mocapact_envs.envs.motion_completion import (
    BASELINES,
    DEFAULT_PROMPT_STEPS,
    CompletionActor,
    MotionCompletionEnv,
    length_summary,
    run_completion,
    spread_episodes,
)
from mocapact_envs.evaluation.plotting import plot_episode_survival
from mocapact_envs.files import read_json, write_json
from mocapact_envs.mocap.splits import resolve_clips
from mocapact_envs.policies.gpt import GPTPolicy
from mocapact_envs.policies.run_layout import expert_folder_argument
from mocapact_envs.training.scripts import run_cli
from mocapact_envs.wrappers.video import write_video

PROMPT_COLOR, POLICY_COLOR = (255, 140, 0), (40, 160, 255)


@dataclass
class Args:
    prompt_experts: Path | None = None
    """Folder of expert runs that prompt (their snippets must cover the clips; ``zoo`` is the project's
    zoo). Needed unless comparing."""
    policy: str = "zero"
    """A saved GPT policy directory, or a baseline: ``zero`` or ``expert``."""
    clips: list[str] = field(default_factory=lambda: ["CMU_016_22"])
    """Clip ids to start from, or a clip set: ``zoo-train`` (the clips of the zoo's snippets on MoCapAct's
    training clips) or ``zoo-val`` (those on its validation clips)."""
    episodes: int = 100
    """Episodes per clip (MoCapAct: 100); unused when a total is given."""
    total_episodes: int | None = None
    """Instead of a number per clip, this many episodes in all, dealt round-robin over the clips in order
    (100 over 73 clips: 2 for each of the first 27, 1 for each other); clips dealt none are left out."""
    max_steps: int = 500
    """Longest episode, the prompt included."""
    deterministic: bool = True
    """GPT: act with the action mean."""
    video_dir: Path | None = None
    """Write one video per clip here, prompt steps marked."""
    output_json: Path | None = None
    """Also write the lengths and their summaries (per clip and over all episodes) here; when comparing,
    the comparison."""
    compare: list[Path] = field(default_factory=list)
    """Output JSONs of earlier runs to show side by side instead of running: each one's mean length over
    all its episodes, and its difference from the first one's with the standard error of that difference,
    sqrt(se1^2 + se2^2); for runs of the same episodes also the paired one, of the per-episode differences."""
    labels: list[str] = field(default_factory=list)
    """Names of the compared runs in the table and the plot, one per ``--compare`` file (default: each
    run's ``--policy``)."""
    plot: Path | None = None
    """With ``--compare``: a PNG of the share of episodes still running at each step, one line per run."""
    title: str | None = None
    """Title of ``--plot``'s figure."""
    clip_lists: Path | None = None
    """Folder of MoCapAct's clip lists, read for the clip sets (default: ``$MOCAPACT_MOCAP_PATH/clip_lists``)."""
    seed: int = 0
    """Episode ``i`` of each clip is seeded ``seed + i``."""


def load_policy(name: str):
    return name if name in BASELINES else GPTPolicy.load(name)


def caption(frame: np.ndarray, text: str, color: tuple[int, int, int]) -> np.ndarray:
    """The frame with a coloured band and a caption at the top."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width, 24), fill=color)
    draw.text((8, 6), text, fill=(255, 255, 255))
    return np.asarray(image)


def record(policy, clip: str, prompt_experts: Path, args: Args, label: str) -> tuple[list[np.ndarray], float]:
    env = MotionCompletionEnv(clip, prompt_experts=prompt_experts, max_steps=args.max_steps, render_mode="rgb_array")
    actor = CompletionActor(policy, args.deterministic)
    observation, info = env.reset(seed=args.seed)
    actor.start(env, info)
    prompt = info["prompt_steps"]
    frames = [
        caption(f, f"prompt: expert {env.prompt_snippet_id} ({i}/{prompt})", PROMPT_COLOR)
        for i, f in enumerate(info["prompt_frames"])
    ]
    while True:
        observation, _, terminated, truncated, info = env.step(actor(env, observation))
        actor.observe(observation)
        frames.append(caption(env.render(), f"{label}: step {info['episode_steps']}", POLICY_COLOR))
        if terminated or truncated:
            env.close()
            return frames, env.metadata["render_fps"]


def number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def all_lengths(lengths: dict[str, list[int]]) -> list[int]:
    return [length for values in lengths.values() for length in values]


def episodes_run(run: dict) -> dict:
    """What makes two runs' episodes the same ones: the seed and the episodes per clip."""
    return {"seed": run.get("seed"), "episodes": {clip: len(values) for clip, values in run["lengths"].items()}}


def compare(
    paths: list[Path],
    output_json: Path | None,
    labels: list[str] | None = None,
    plot: Path | None = None,
    title: str | None = None,
) -> list[dict]:
    """Prints the runs' mean lengths side by side, each one's difference from the first's with its
    standard error sqrt(se1^2 + se2^2) (the runs taken as independent); returns the rows.

    Runs of the same episodes (seed and episodes per clip) start each episode alike, so the
    standard error of the episode-by-episode differences (``paired_se``) is given too."""
    runs = [read_json(path) for path in paths]
    for path, run in zip(paths, runs, strict=True):
        if not isinstance(run, dict) or "lengths" not in run:
            raise ValueError(f"{path} is not an output JSON of complete.py (it has no 'lengths').")
    if labels and len(labels) != len(paths):
        raise ValueError(f"--labels gives {len(labels)} names for {len(paths)} --compare files: {labels}.")
    labels = labels or [run.get("policy", "?") for run in runs]
    rows = []
    for path, run, label in zip(paths, runs, labels, strict=True):
        row = {"file": str(path), "policy": label, **length_summary(all_lengths(run["lengths"]))}
        if rows:
            reference = rows[0]
            row["difference"] = row["mean"] - reference["mean"]
            both = [row["se"], reference["se"]]
            row["difference_se"] = None if None in both else float(np.hypot(*both))
            row["paired_se"] = None
            if episodes_run(run) == episodes_run(runs[0]):
                paired = np.subtract(all_lengths(run["lengths"]), all_lengths(runs[0]["lengths"]))
                row["paired_se"] = length_summary(paired)["se"]
            else:
                print(f"note: {path} ran other episodes (seed, clips or episodes per clip) than {paths[0]}.")
        rows.append(row)
    table = Table(title=f"motion completion: mean episode length over all episodes, against {paths[0]}")
    columns = ("file", "policy", "n", "mean", "std", "se", "diff", "se of diff", "diff / se", "paired se")
    for column in columns:
        table.add_column(column, justify="left" if column in ("file", "policy") else "right")
    for index, row in enumerate(rows):
        against = [""] * 4  # the first run is the reference
        if index:
            difference, difference_se = row["difference"], row["difference_se"]
            ratio = difference / difference_se if difference_se else None
            against = [f"{difference:+.1f}", number(difference_se, 2), number(ratio), number(row["paired_se"], 2)]
        table.add_row(
            row["file"], row["policy"], str(row["n"]), number(row["mean"]), number(row["std"]), number(row["se"], 2),
            *against,
        )  # fmt: skip
    Console().print(table)
    if output_json:
        write_json(output_json, {"rows": rows})
    if plot:
        prompt_steps = {run.get("prompt_steps", DEFAULT_PROMPT_STEPS) for run in runs}
        marks = {f"prompt ends ({step} steps)": step for step in sorted(prompt_steps)}
        # The legend gives each run's mean and standard error from its table row.
        legend = [f"{row['policy']}: mean {row['mean']:.1f} +- {number(row['se'], 2)} (n {row['n']})" for row in rows]
        survival = {text: all_lengths(run["lengths"]) for text, run in zip(legend, runs, strict=True)}
        plot_episode_survival(survival, plot, marks=marks, title=title)
        print(f"plot: {plot}")
    return rows


def main(args: Args) -> dict:
    if args.compare:
        return {"rows": compare(args.compare, args.output_json, args.labels, args.plot, args.title)}
    if args.plot or args.labels:
        raise ValueError("--plot and --labels go with --compare (they draw and name the compared runs).")
    if args.prompt_experts is None:
        raise ValueError("give --prompt-experts (a folder of expert runs, or zoo) to run motion completion.")
    prompt_experts = expert_folder_argument(args.prompt_experts)
    clips = resolve_clips(args.clips, args.clip_lists)
    if args.total_episodes is not None:
        episodes: int | dict[str, int] = spread_episodes(clips, args.total_episodes)
        clips = list(episodes)
        spread = f"{args.total_episodes} episodes over {len(clips)} clips"
    else:
        if args.episodes < 1:
            raise ValueError(f"episodes per clip must be at least 1, got {args.episodes}.")
        episodes, spread = args.episodes, f"{args.episodes} episodes per clip"
    policy = load_policy(args.policy)
    label = args.policy if args.policy in BASELINES else "GPT"
    trained_clips = set() if isinstance(policy, str) else set(policy.config.extra.get("trained_clips", ()))
    if trained_clips & set(clips):
        print(
            f"note: the GPT trained on rollouts of {len(trained_clips & set(clips))} of these {len(clips)} clips: not held out."
        )
    lengths = run_completion(
        policy, clips, prompt_experts, episodes, max_steps=args.max_steps, seed=args.seed,
        deterministic=args.deterministic, progress_bar=True,
    )  # fmt: skip
    summaries = {clip: length_summary(values) for clip, values in lengths.items()}
    overall = length_summary(all_lengths(lengths))
    table = Table(title=f"motion completion with {label} ({spread}, at most {args.max_steps} steps)")
    for column in ("clip", "n", "mean length", "std", "se", "reached the limit"):
        table.add_column(column, justify="left" if column == "clip" else "right")
    for clip, values in [*lengths.items(), ("all clips", all_lengths(lengths))]:
        summary = summaries.get(clip, overall)
        table.add_row(
            clip, str(summary["n"]), number(summary["mean"]), number(summary["std"]), number(summary["se"], 2),
            f"{np.mean(np.array(values) >= args.max_steps):.0%}", style="bold" if clip == "all clips" else None,
        )  # fmt: skip
    Console().print(table)
    result = {
        "policy": args.policy,
        "prompt_experts": str(args.prompt_experts),
        "clip_names": args.clips,
        "max_steps": args.max_steps,
        "prompt_steps": DEFAULT_PROMPT_STEPS,
        "seed": args.seed,
        "deterministic": args.deterministic,
        "lengths": lengths,
        "per_clip": summaries,
        "overall": overall,
    }
    if args.output_json:
        write_json(args.output_json, result)
    if args.video_dir:
        for clip in clips:
            frames, fps = record(policy, clip, prompt_experts, args, label)
            path = args.video_dir / f"{clip}_{label}.mp4"
            write_video(path, frames, fps)
            print(f"video: {path}")
    return result


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
