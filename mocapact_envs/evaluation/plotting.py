"""Figures of the baselines' evaluation scripts: drawn without a display, saved whole or not at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mocapact_envs.files import replace_atomically


def subplots(*args: Any, **kwargs: Any):
    """``matplotlib.pyplot.subplots`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(figure, path: str | Path, title: str | None = None) -> None:
    """Lays out ``figure`` (under ``title`` if given), writes it to ``path`` atomically, and frees it."""
    import matplotlib.pyplot as plt

    if title:
        figure.suptitle(title)
    figure.tight_layout()
    # The format comes from the suffix, which the temporary name keeps.
    replace_atomically(path, lambda tmp: figure.savefig(tmp, dpi=100))
    plt.close(figure)


def plot_length_ratios(
    ratios: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    path: str | Path,
    target: float,
    title: str | None = None,
) -> None:
    """Per-snippet ratios policy / expert of normalized episode length, one panel per group of snippets.

    ``ratios[panel][policy label][snippet]`` is ``{"rsi": ratio, "start": ratio}``
    (:func:`~mocapact_envs.evaluation.protocol.length_ratios`); panels without ratios are left out.
    Each series is sorted and drawn against the share of snippets (each snippet at the middle of its
    share), so the share under ``target`` (a dotted line) reads off the x axis, whatever the count.
    """
    panels = {name: by_label for name, by_label in ratios.items() if any(by_label.values())}
    if not panels:
        raise ValueError("no snippet has both a policy and an expert result: there is no ratio to plot.")
    figure, axes = subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False, sharey=True)
    highest = target
    for ax, (name, by_label) in zip(axes[0], panels.items(), strict=True):
        count = max(len(per_snippet) for per_snippet in by_label.values())
        for index, (label, per_snippet) in enumerate(by_label.items()):
            for kind, style, marker, start in (
                ("rsi", "-", "o", "random start"),
                ("start", "--", "s", "snippet start"),
            ):
                values = np.sort([r[kind] for r in per_snippet.values()])
                if not len(values):
                    continue
                highest = max(highest, float(values.max()))
                ax.plot(
                    (np.arange(len(values)) + 0.5) / len(values),
                    values,
                    linestyle=style,
                    marker=marker,
                    markersize=3.5,
                    color=f"C{index}",
                    label=f"{label}, {start}: median {np.median(values):.2f}, {np.mean(values >= target):.0%} >= {target:g}",
                )
        ax.axhline(target, color="black", linestyle=":", linewidth=1.2, label=f"target {target:g}")
        ax.set(
            title=f"{name} ({count} snippet{'s' if count != 1 else ''})",
            xlabel="share of the snippets, sorted by ratio",
            ylabel="policy / expert normalized episode length",
            xlim=(0, 1),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylim(0, 1.05 * highest)
    save_figure(figure, path, title=title)


def plot_episode_survival(
    lengths: Mapping[str, Sequence[int]],
    path: str | Path,
    marks: Mapping[str, int] | None = None,
    title: str | None = None,
) -> None:
    """The share of episodes still running at each step, one line per run.

    ``lengths[label]`` are a run's episode lengths, its line labelled ``label`` in the legend.
    ``marks`` draws labelled vertical lines at given steps (such as where a prompt ends), so what
    each run adds after them reads off the x axis.
    """
    if not lengths or not all(len(values) for values in lengths.values()):
        raise ValueError("every run needs at least one episode length to plot its survival.")
    figure, ax = subplots(figsize=(7.5, 4.8))
    for index, (label, values) in enumerate(lengths.items()):
        values = np.sort(np.asarray(values, dtype=np.int64))
        steps = np.arange(values.max() + 2)
        surviving = 1.0 - np.searchsorted(values, steps, side="right") / len(values)
        ax.step(steps, surviving, where="post", color=f"C{index}", label=label)
    for index, (name, step) in enumerate((marks or {}).items()):
        ax.axvline(step, color="black", linestyle=":" if index == 0 else "--", linewidth=1.2, label=name)
    ax.set(xlabel="episode step", ylabel="share of episodes still running", ylim=(0, 1.02), xlim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(figure, path, title=title)
