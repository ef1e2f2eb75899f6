"""The zoo's table and figures: ``mocapact-zoo table`` writes them into ``zoo/README.md``, ``zoo/table.json``
and ``zoo/figures/``; ``mocapact-zoo frames`` draws experts with their reference ghost."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mocapact_envs.envs.factory import make_tracking_env
from mocapact_envs.evaluation.plotting import save_figure, subplots
from mocapact_envs.evaluation.protocol import rendered_episode
from mocapact_envs.files import read_json, replace_atomically, write_json
from mocapact_envs.mocap.ids import parse_snippet, read_id_file
from mocapact_envs.mocap.splits import (
    LOCOMOTION_LIST,
    ZOO_SNIPPET_LIST,
    clip_list,
    validation_clips,
)
from mocapact_envs.policies.expert_files import load_expert
from mocapact_envs.policies.run_layout import (
    CLIP_INFO_FILE,
    FINAL_EVALUATION_FILE,
    ZOO_INFO_KEY,
    experts_folder,
    find_zoo_expert,
    zoo_experts,
)
from mocapact_envs.tasks.tracking_settings import TrackingSettings

README_FILE = "README.md"
TABLE_START, TABLE_END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"
DISTRIBUTIONS_FIGURE = "figures/distributions.png"
TRACKED_STEPS_FIGURE = "figures/tracked_steps.png"
FRAMES_FIGURE = "figures/frames.png"


def snippet_kinds(snippet_id: str, clip_lists: Path | None) -> str:
    """``locomotion`` (MoCapAct's locomotion snippets), ``validation`` (a validation clip), both or ``-``."""
    if clip_lists is None:
        return "?"
    kinds = []
    if snippet_id in clip_list(LOCOMOTION_LIST, clip_lists):
        kinds.append("locomotion")
    if parse_snippet(snippet_id).clip_id in validation_clips(clip_lists):
        kinds.append("validation")
    return ", ".join(kinds) or "-"


def snippet_steps(snippet_id: str) -> int:
    """The steps a listed snippet id spans, both ends included."""
    snippet = parse_snippet(snippet_id)
    return (snippet.end or 0) - (snippet.start or 0) + 1


def table_rows(path: str | Path | None = None, clip_lists: Path | None = None) -> list[dict[str, Any]]:
    """One row per zoo expert (smallest seed per snippet) from its final_evaluation.json."""
    rows, seen = [], set()
    for expert in zoo_experts(path):
        if expert.listed_id in seen:
            continue
        seen.add(expert.listed_id)
        row: dict[str, Any] = {
            "snippet": expert.listed_id,
            "seed": expert.seed,
            "kind": snippet_kinds(expert.listed_id, clip_lists),
            "steps": snippet_steps(expert.listed_id),
            "trained_on": expert.snippet.id,
            "cropped": expert.cropped,
        }
        training = read_json(expert.run_dir / CLIP_INFO_FILE).get(ZOO_INFO_KEY, {}).get("training", {})
        if "num_envs" in training:
            row["snippet_start_worlds"] = f"{training['snippet_start_envs']} of {training['num_envs']}"
        final_path = expert.run_dir / FINAL_EVALUATION_FILE
        if final_path.is_file():
            final = read_json(final_path)
            if "env_steps" in final:  # a run without evaluations during training has neither
                row["training_minutes"] = round(float(final["training_minutes"]), 1)
                row["env_steps"] = int(final["env_steps"])
            for kind, label in (("eval_rsi", "rsi"), ("eval_start", "start")):
                if kind in final:
                    row[f"{label}_norm_length"] = round(float(final[kind]["mean_norm_episode_length"]), 3)
                    row[f"{label}_norm_return"] = round(float(final[kind]["mean_norm_episode_return"]), 3)
                    row[f"{label}_mean_length"] = round(float(final[kind]["mean_episode_length"]), 1)
                    row[f"{label}_episodes"] = int(final[kind]["episodes"])
        rows.append(row)
    if clip_lists is not None and (clip_lists / ZOO_SNIPPET_LIST).is_file():
        # The listed snippets without an expert get a row too, so the table accounts for every one.
        held = {row["snippet"] for row in rows}
        for listed_id in read_id_file(clip_lists / ZOO_SNIPPET_LIST):
            if listed_id not in held:
                rows.append(
                    {"snippet": listed_id, "kind": snippet_kinds(listed_id, clip_lists), "steps": snippet_steps(listed_id),
                     "cropped": False, "trained": False}
                )  # fmt: skip
        rows.sort(key=lambda row: row["snippet"])
    return rows


#: Snippet length bands (steps, inclusive upper bounds) of the table's summary.
LENGTH_BANDS = ((50, "up to 50 steps"), (100, "51 to 100 steps"), (None, "over 100 steps"))

TABLE_COLUMNS = (
    ("snippet", "snippet"),
    ("kind", "kind"),
    ("steps", "steps"),
    ("env_steps", "training env steps"),
    ("training_minutes", "training minutes"),
    ("snippet_start_worlds", "snippet-start worlds"),
    ("rsi_norm_length", "norm. length, random starts"),
    ("rsi_norm_return", "norm. return, random starts"),
    ("start_norm_length", "norm. length, snippet start"),
    ("start_norm_return", "norm. return, snippet start"),
)


#: The previous zoo's figures beside a snippet's (``mocapact-zoo table --previous``): its table.json's keys.
PREVIOUS_KEYS = ("rsi_norm_length", "start_norm_length", "rsi_norm_return", "start_norm_return")
PREVIOUS_COLUMNS = (
    ("previous_rsi_norm_length", "previous zoo: norm. length, random starts"),
    ("previous_start_norm_length", "previous zoo: norm. length, snippet start"),
)


def table_fault(table: Any) -> str | None:
    """What keeps ``table`` from being a zoo's table.json that :func:`with_previous` can read; None when nothing."""
    if not isinstance(table, list):
        return "not a list of rows"
    for i, row in enumerate(table):
        if not isinstance(row, dict) or not isinstance(row.get("snippet"), str):
            return f"row {i} has no snippet"
        for key in PREVIOUS_KEYS:
            if key in row and not isinstance(row[key], int | float):
                return f"{row['snippet']}'s {key} is {row[key]!r}, not a number"
    return None


def with_previous(rows: list[dict[str, Any]], previous_table: str | Path) -> list[dict[str, Any]]:
    """``rows`` with the previous zoo's figures of each snippet (``previous_<key>``, from its table.json) beside."""
    previous_table = Path(previous_table)
    if not previous_table.is_file():
        raise FileNotFoundError(f"previous table {previous_table} does not exist (a zoo's table.json).")
    table = read_json(previous_table)
    bad = table_fault(table)
    if bad:
        raise ValueError(f"previous table {previous_table} is not a zoo's table.json: {bad}.")
    previous = {row["snippet"]: row for row in table}
    return [row | {f"previous_{key}": previous[row["snippet"]][key]
                   for key in PREVIOUS_KEYS if key in previous.get(row["snippet"], {})}
            for row in rows]  # fmt: skip


def median_summary(rows: list[dict[str, Any]], prefix: str = "") -> str:
    """Medians of normalized length (and the share at 0.8 or more) from both starts: the zoo's headline."""
    parts = []
    for label, key in (("random starts", "rsi"), ("snippet starts", "start")):
        lengths = np.array([r[f"{prefix}{key}_norm_length"] for r in rows if f"{prefix}{key}_norm_length" in r])
        returns = np.array([r[f"{prefix}{key}_norm_return"] for r in rows if f"{prefix}{key}_norm_return" in r])
        if len(lengths):
            parts.append(
                f"From {label}: normalized length median {np.median(lengths):.3f} "
                f"(mean {lengths.mean():.3f}, {np.mean(lengths >= 0.8):.0%} at least 0.8)"
                + (f", normalized return median {np.median(returns):.3f}." if len(returns) else ".")
            )
    return " ".join(parts)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    columns = TABLE_COLUMNS + tuple(c for c in PREVIOUS_COLUMNS if any(c[0] in row for row in rows))
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key, _ in columns:
            if row.get("trained", True):
                value = row.get(key, "not evaluated" if key == "rsi_norm_length" else "")
            else:
                value = "not trained yet" if key == "env_steps" else row.get(key, "")
            if key == "env_steps" and isinstance(value, int):
                value = f"{value / 1e6:.2f}M"
            if key == "snippet" and row["cropped"]:
                value = f"{value} (cropped: trained on {row['trained_on'].split('-', 1)[1]})"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    experts = [r for r in rows if r.get("trained", True)]
    evaluated = [r for r in experts if "rsi_norm_length" in r]
    untrained = len(rows) - len(experts)
    summary = [
        f"{len(experts)} experts, {len(evaluated)} evaluated, {sum(r['cropped'] for r in experts)} cropped"
        + (f"; {untrained} listed snippets not trained yet." if untrained else ".")
    ]
    if evaluated:
        summary.append(median_summary(evaluated))
        previous = [r for r in evaluated if "previous_rsi_norm_length" in r]
        if previous:
            summary.append(
                f"On the {len(previous)} snippets the previous zoo also evaluated, this zoo: {median_summary(previous)} "
                f"The previous zoo: {median_summary(previous, 'previous_')}"
            )
        bands, lower = [], 0
        for upper, label in LENGTH_BANDS:
            listed = [r for r in rows if lower < r["steps"] and (upper is None or r["steps"] <= upper)]
            band = [r["rsi_norm_length"] for r in listed if "rsi_norm_length" in r]
            if listed:
                median = f"median {np.median(band):.3f}" if band else "none evaluated"
                bands.append(f"{label}: {len(band)} of {len(listed)} evaluated, {median}")
            lower = upper or lower
        summary.append(f"Normalized length from random starts by snippet length: {'; '.join(bands)}.")
        # Steps tracked in the longest band: where experts stop keeping up (figures/tracked_steps.png).
        long_from = LENGTH_BANDS[-2][0]
        long_tracked = [
            r["start_mean_length"] for r in evaluated if r["steps"] > long_from and "start_mean_length" in r
        ]
        if long_tracked:
            median_steps = float(np.median(long_tracked))
            summary.append(
                f"From the snippet start, the {len(long_tracked)} evaluated snippets over {long_from} steps are tracked "
                f"for a median of {median_steps:.0f} steps ({median_steps * TrackingSettings.control_timestep:.1f} s; "
                f"{TRACKED_STEPS_FIGURE})."
            )
        episodes = evaluated[0].get("rsi_episodes"), evaluated[0].get("start_episodes")
        summary.append(f"Episodes per expert: {episodes[0]} from random starts, {episodes[1]} from the snippet start.")
    return "\n".join(lines) + "\n\n" + " ".join(summary) + "\n"


def plot_distributions(rows: list[dict[str, Any]], path: Path) -> bool:
    """Histograms of normalized episode length and return over the experts, from both starts (as MoCapAct's paper)."""
    evaluated = [r for r in rows if "rsi_norm_length" in r]
    if not evaluated:
        return False

    figure, axes = subplots(2, 2, figsize=(10, 7), sharex=True)
    bins = np.linspace(0.0, 1.0, 21)
    for column, (start, label) in enumerate((("rsi", "random starts"), ("start", "snippet start"))):
        for row, (metric, name) in enumerate((("norm_length", "normalized episode length"), ("norm_return", "normalized episode return"))):  # fmt: skip
            values = [r[f"{start}_{metric}"] for r in evaluated if f"{start}_{metric}" in r]
            ax = axes[row, column]
            ax.hist(values, bins=bins, color="tab:blue" if column == 0 else "tab:orange", alpha=0.85)
            ax.axvline(float(np.median(values)), color="black", linestyle="--", label=f"median {np.median(values):.2f}")
            ax.set(xlabel=f"{name}, {label}", ylabel="experts")
            ax.grid(alpha=0.3)
            ax.legend()
    save_figure(figure, path, title=f"{len(evaluated)} zoo experts (MoCapAct's evaluation)")
    return True


def plot_tracked_steps(rows: list[dict[str, Any]], path: Path) -> bool:
    """Mean steps tracked (episode length) against snippet length, from both starts: where experts stop keeping up."""
    evaluated = [r for r in rows if "start_mean_length" in r]
    if not evaluated:
        return False

    figure, ax = subplots(figsize=(7, 5))
    steps = np.array([snippet_steps(r["trained_on"]) for r in evaluated])  # cropped ones: the part trained
    for key, label, color in (
        ("start", "from the snippet start", "tab:orange"),
        ("rsi", "from random starts", "tab:blue"),
    ):
        ax.scatter(
            steps,
            [r[f"{key}_mean_length"] for r in evaluated],
            s=18,
            color=color,
            label=f"mean episode length, {label}",
        )
    # An episode from the snippet start ends at the snippet's last step at most.
    ceiling = np.array([0, steps.max()])
    ax.plot(ceiling, ceiling - 1, color="black", linestyle="--", linewidth=1, label="whole snippet (from its start)")
    ax.set(
        xlabel=f"snippet length trained (steps of {TrackingSettings.control_timestep} s)",
        ylabel="steps tracked before the episode ends",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(figure, path, title=f"{len(evaluated)} zoo experts: steps tracked against snippet length")
    return True


def write_table(
    path: str | Path | None = None, clip_lists: Path | None = None, previous_table: str | Path | None = None
) -> list[dict[str, Any]]:
    """Regenerates the table between the markers of the zoo's README.md, table.json and the two figures;
    ``previous_table``: a previous zoo's table.json, whose figures go beside each snippet's."""
    root = experts_folder(path).parent
    rows = table_rows(path, clip_lists)
    if previous_table is not None:
        rows = with_previous(rows, previous_table)
    readme = root / README_FILE
    table = f"{TABLE_START}\n{markdown_table(rows)}{TABLE_END}"
    text = readme.read_text() if readme.is_file() else f"# Expert zoo\n\n{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text or TABLE_END not in text:
        raise ValueError(f"{readme} lacks the markers {TABLE_START} and {TABLE_END} that hold the table.")
    before, rest = text.split(TABLE_START, 1)
    after = rest.split(TABLE_END, 1)[1]
    replace_atomically(readme, lambda tmp: tmp.write_text(before + table + after))
    write_json(root / "table.json", rows)
    plot_distributions(rows, root / DISTRIBUTIONS_FIGURE)
    plot_tracked_steps(rows, root / TRACKED_STEPS_FIGURE)
    return rows


def render_frames(
    path: str | Path | None, snippet_ids: Sequence[str], output: Path, frames: int = 4, size: int = 240
) -> Path:
    """A grid of frames (one row per expert) of episodes from the snippet start, with the reference ghost."""

    figure, axes = subplots(len(snippet_ids), frames, figsize=(2.6 * frames, 2.4 * len(snippet_ids)), squeeze=False)
    for row, snippet_id in enumerate(snippet_ids):
        expert = find_zoo_expert(path, snippet_id)
        policy = load_expert(expert.run_dir)
        env = make_tracking_env(
            expert.snippet.id, "dm_control", random_start=False, render_mode="rgb_array", width=size, height=size
        )
        images = rendered_episode(
            env, lambda observation, policy=policy: policy.predict(observation, deterministic=True)[0]
        )
        for column, index in enumerate(np.linspace(0, len(images) - 1, frames).round().astype(int)):
            ax = axes[row, column]
            ax.imshow(images[index])
            ax.set_axis_off()
            ax.set_title(f"{expert.listed_id}, step {index}" if column == 0 else f"step {index}", fontsize=8)
    save_figure(figure, output, title="zoo experts (colour) and their reference (grey ghost), from the snippet start")
    return output
