"""Figures of the baselines' evaluation scripts: drawn without a display, saved whole or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
