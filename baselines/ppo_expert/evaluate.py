"""Evaluate a clip expert as MoCapAct does, film it, and plot its learning curve.

    .venv/bin/python baselines/ppo_expert/evaluate.py runs/experts/CMU_016_22-0-82/0

The expert is a run folder, an ``eval_rsi``/``eval_start`` folder or a model
folder, ours or MoCapAct's (``best_model.zip`` + ``vecnormalize.pkl``). Prints the
metrics of random-start episodes (action noise 0.1) and start-of-snippet episodes
(noise 0.01), deterministic actions, and writes to ``--out-dir``:
``metrics.json`` (with every episode's start and end in the clip), ``video.mp4``
(the humanoid with the reference ghost), ``episode_ends.png`` (where in the clip
episodes fell, and how far each start got) and ``learning_curve.png`` (normalized
episode length and return against env steps and training minutes, from the run's
TensorBoard logs).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

from mocapact_envs.envs.factory import make_tracking_env
from mocapact_envs.evaluation.metrics import EpisodeMetrics, summarize
from mocapact_envs.evaluation.plotting import save_figure, subplots
from mocapact_envs.evaluation.protocol import EVAL_SETTINGS, evaluate_expert, rendered_episode
from mocapact_envs.files import write_json
from mocapact_envs.policies.expert_files import find_model_dir, load_expert
from mocapact_envs.policies.run_layout import CLIP_INFO_FILE, read_clip_info
from mocapact_envs.training.run_folder import TENSORBOARD_DIR
from mocapact_envs.training.scripts import run_cli


@dataclass
class Args:
    expert: tyro.conf.Positional[str]
    """run folder (<root>/<clip>-<start>-<end>/<seed>), eval_rsi/eval_start folder or model folder"""
    clip: str | None = None
    """clip or snippet id to evaluate on; unset: the expert's own (clip_info.json or its config)"""
    rsi_episodes: int = 100
    """random-start episodes (MoCapAct: 1000)"""
    start_episodes: int = 10
    """start-of-snippet episodes (MoCapAct: 100)"""
    num_envs: int = 2
    """parallel environments per evaluation"""
    backend: str | None = None
    """tracking env backend for the metrics; unset: "fast" where available, else "dm_control" """
    vectorization_mode: Literal["sync", "async", "vector_entry_point"] | None = None
    """how sub-environments run; unset: the native vector env with the fast backend, else sync"""
    seed: int = 0
    """seed of the evaluation episodes"""
    out_dir: str | None = None
    """where outputs go; unset: <run folder>/evaluation, or ./expert_evaluation without a run folder"""
    video: bool = True
    """film one episode from the snippet start (noise 0.01) to video.mp4"""
    video_backend: str = "dm_control"
    """backend that renders the video (dm_control draws the reference ghost)"""
    video_size: tuple[int, int] = (640, 480)
    """video width and height"""
    plot: bool = True
    """plot where in the clip the episodes ended (episode_ends.png) and the learning curve from the run's
    TensorBoard logs (learning_curve.png, needs a run folder)"""


def find_run_dir(model_dir: Path) -> Path | None:
    """The run folder (holding clip_info.json) a model folder belongs to, if any."""
    for folder in (model_dir, *list(model_dir.parents)[:3]):
        if (folder / CLIP_INFO_FILE).is_file():
            return folder
    return None


def expert_clip(args: Args, expert, run_dir: Path | None) -> str:
    if args.clip:
        return args.clip
    if run_dir is not None:
        return read_clip_info(run_dir / CLIP_INFO_FILE).id
    snippet_id = getattr(expert, "snippet_id", None)
    if snippet_id:
        return snippet_id
    raise ValueError("the expert does not say which clip it tracks; pass --clip CMU_xxx_yy[-start-end].")


def print_table(results: dict[str, dict[str, float]]) -> None:
    table = Table(title="expert evaluation (deterministic actions)")
    columns = ("evaluation", "episodes", "return", "episode length", "norm. return", "norm. episode length", "fell")
    for column in columns:
        table.add_column(column, justify="right")
    for kind, s in results.items():
        table.add_row(
            kind,
            str(s["episodes"]),
            f"{s['mean_episode_return']:.2f}",
            f"{s['mean_episode_length']:.1f}",
            f"{s['mean_norm_episode_return']:.3f}",
            f"{s['mean_norm_episode_length']:.3f}",
            f"{s['terminated_fraction']:.0%}",
        )
    Console().print(table)


def record_video(expert, clip: str, path: Path, args: Args) -> int:
    """One start-of-snippet episode, as eval_start runs it, rendered with the reference ghost."""
    import imageio

    setting = EVAL_SETTINGS["eval_start"]
    width, height = args.video_size
    env = make_tracking_env(
        clip,
        args.video_backend,
        random_start=False,
        act_noise=setting.act_noise,
        render_mode="rgb_array",
        width=width,
        height=height,
    )
    frames = rendered_episode(env, lambda observation: expert.predict(observation, deterministic=True)[0], args.seed)
    imageio.mimsave(path, frames, fps=env.metadata["render_fps"], macro_block_size=1)
    return len(frames)


def read_scalars(tb_dir: Path, tags: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(steps, values) of each tag found in a TensorBoard log folder."""
    import logging

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # purge notices of resumed runs are expected
    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    found = set(accumulator.Tags()["scalars"])
    scalars = {}
    for tag in tags:
        if tag in found:
            events = accumulator.Scalars(tag)
            scalars[tag] = (np.array([e.step for e in events]), np.array([e.value for e in events]))
    return scalars


def plot_episode_ends(episodes: dict[str, list[EpisodeMetrics]], clip: str, path: Path) -> None:
    """Where in the clip episodes fell (terminated on tracking error), and how far each start got."""
    figure, (ends, lengths) = subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0.0, 1.0, 41)
    for kind, eps in episodes.items():
        fell = [e.end_time_in_clip for e in eps if e.terminated]
        ends.hist(fell, bins=bins, alpha=0.6, label=f"{kind}: {len(fell)} of {len(eps)} fell")
        starts = [e.start_time_in_clip for e in eps]
        lengths.plot(starts, [e.norm_episode_length for e in eps], ".", alpha=0.6, label=kind)
    ends.set(xlabel="time in clip where the episode fell (0 to 1)", ylabel="episodes")
    lengths.set(xlabel="time in clip where the episode started (0 to 1)", ylabel="norm. episode length", ylim=(0, 1.05))
    for ax in (ends, lengths):
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(figure, path, title=f"episode ends on {clip}")


def plot_learning_curve(run_dir: Path, path: Path) -> bool:
    """Normalized episode length and return (both evaluations) against env steps and training minutes."""
    metrics = ("mean_norm_episode_length", "mean_norm_episode_return")
    tags = [f"{kind}/{m}" for kind in EVAL_SETTINGS for m in (*metrics, "training_minutes")]
    if not (run_dir / TENSORBOARD_DIR).is_dir():
        return False
    scalars = read_scalars(run_dir / TENSORBOARD_DIR, tags)
    if not any(tag in scalars for tag in tags):
        return False
    figure, axes = subplots(2, 2, figsize=(11, 7), sharey="row")
    for row, metric in enumerate(metrics):
        for kind in EVAL_SETTINGS:
            if f"{kind}/{metric}" not in scalars:
                continue
            steps, values = scalars[f"{kind}/{metric}"]
            _, minutes = scalars[f"{kind}/training_minutes"]
            axes[row, 0].plot(steps, values, marker=".", label=kind)
            axes[row, 1].plot(minutes, values, marker=".", label=kind)
        label = metric.removeprefix("mean_").replace("_", " ")
        axes[row, 0].set_ylabel(label)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend()
    axes[1, 0].set_xlabel("env steps")
    axes[1, 1].set_xlabel("training minutes")
    save_figure(figure, path, title=f"learning curve: {run_dir.parent.name} seed {run_dir.name}")
    return True


def main(args: Args) -> int:
    try:
        model_dir = find_model_dir(args.expert)
        expert = load_expert(model_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    run_dir = find_run_dir(model_dir)
    clip = expert_clip(args, expert, run_dir)
    out_dir = Path(args.out_dir) if args.out_dir else (run_dir / "evaluation" if run_dir else Path("expert_evaluation"))
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"expert {model_dir} on {clip}")

    try:
        episodes = evaluate_expert(
            expert,
            clip,
            {"eval_rsi": args.rsi_episodes, "eval_start": args.start_episodes},
            num_envs=args.num_envs,
            backend=args.backend,
            vectorization_mode=args.vectorization_mode,
            seed=args.seed,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = {kind: summarize(eps) for kind, eps in episodes.items()}
    if results:
        print_table(results)
    metrics = {
        "expert": str(model_dir),
        "clip": clip,
        "summary": results,
        "episodes": {kind: [e.as_dict() for e in eps] for kind, eps in episodes.items()},
    }
    write_json(out_dir / "metrics.json", metrics)
    print(f"metrics: {out_dir / 'metrics.json'}")

    if args.video:
        frames = record_video(expert, clip, out_dir / "video.mp4", args)
        print(f"video: {out_dir / 'video.mp4'} ({frames} frames)")
    if args.plot:
        if episodes:
            plot_episode_ends(episodes, clip, out_dir / "episode_ends.png")
            print(f"episode ends: {out_dir / 'episode_ends.png'}")
        if run_dir is not None and plot_learning_curve(run_dir, out_dir / "learning_curve.png"):
            print(f"learning curve: {out_dir / 'learning_curve.png'}")
        else:
            print("learning curve: skipped (no run folder with TensorBoard evaluation logs)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, Args))
