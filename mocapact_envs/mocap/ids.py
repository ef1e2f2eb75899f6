"""Clip ids, snippet ids and named collections of them.

A clip id names one CMU recording as dm_control does (``CMU_016_22``: subject 16,
trial 22). A snippet id adds MoCapAct's step bounds (``CMU_016_22-0-82``): start
and end step at the 0.03 s control rate, both inclusive as dm_control's
``Trajectory(start_step=..., end_step=...)`` treats them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CLIP_ID_PATTERN = re.compile(r"^CMU_(\d{3})_(\d{2})$")
SNIPPET_ID_PATTERN = re.compile(r"^(CMU_\d{3}_\d{2})-(\d+)-(\d+)$")

#: dm_control's ``cmu_subsets`` collections, by the names users pass.
DM_CONTROL_SUBSETS = ("ALL", "LOCOMOTION_SMALL", "WALK_TINY", "RUN_JUMP_TINY", "GET_UP")


@dataclass(frozen=True)
class Snippet:
    """A clip, optionally restricted to steps ``start`` to ``end`` (inclusive).

    ``end=None`` means "to the last step of the clip"; the data layer resolves it.
    """

    clip_id: str
    start: int = 0
    end: int | None = None

    @property
    def id(self) -> str:
        """The snippet id in MoCapAct's convention, or the bare clip id."""
        if self.end is None and self.start == 0:
            return self.clip_id
        return f"{self.clip_id}-{self.start}-{self.end}"

    def __str__(self) -> str:
        return self.id


def parse_snippet(text: str) -> Snippet:
    """Parses a clip id (``CMU_016_22``) or a snippet id (``CMU_016_22-0-82``)."""
    text = text.strip()
    if CLIP_ID_PATTERN.match(text):
        return Snippet(text)
    match = SNIPPET_ID_PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is neither a clip id like 'CMU_016_22' nor a snippet id like "
            f"'CMU_016_22-0-82' (clip, start step, end step)."
        )
    clip_id, start, end = match.group(1), int(match.group(2)), int(match.group(3))
    if end <= start:
        raise ValueError(f"snippet {text!r} ends (step {end}) before it starts (step {start}).")
    return Snippet(clip_id, start, end)


def amc_file_clip_id(path: Path) -> str | None:
    """Maps a CMU file name ``16_22.amc`` to its clip id ``CMU_016_22``."""
    match = re.match(r"^(\d+)_(\d+)$", path.stem)
    if match is None:
        return None
    return f"CMU_{int(match.group(1)):03d}_{int(match.group(2)):02d}"


def read_id_file(path: str | Path) -> list[str]:
    """Reads one id a line, keeping a last line that has no newline.

    MoCapAct's published lists lack a trailing newline, which made shell loops drop
    their last entry; blank lines and ``#`` comments are skipped.
    """
    text = Path(path).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def dm_control_subset(name: str) -> list[str]:
    """The clip ids of one of dm_control's ``cmu_subsets`` collections."""
    from dm_control.locomotion.tasks.reference_pose import cmu_subsets

    if name not in DM_CONTROL_SUBSETS:
        raise ValueError(
            f"unknown collection {name!r}; dm_control's collections are {', '.join(DM_CONTROL_SUBSETS)}, "
            "or pass the path of a text file of clip or snippet ids."
        )
    return list(getattr(cmu_subsets, name).ids)


def resolve_snippets(clips: str | Sequence[str]) -> list[Snippet]:
    """Turns what a user names into a list of snippets.

    ``clips`` is a clip id, a snippet id, a collection name from
    :data:`DM_CONTROL_SUBSETS`, the path of a text file of ids (one a line), or a
    sequence mixing any of these.
    """
    items: Iterable[str] = [clips] if isinstance(clips, str) else clips
    snippets: list[Snippet] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"clip names must be strings, got {item!r} ({type(item).__name__}).")
        if item in DM_CONTROL_SUBSETS:
            snippets.extend(Snippet(c) for c in dm_control_subset(item))
        elif Path(item).suffix == ".txt" or Path(item).is_file():
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(f"id list {item!r} does not exist.")
            snippets.extend(parse_snippet(line) for line in read_id_file(path))
        else:
            try:
                snippets.append(parse_snippet(item))
            except ValueError as error:
                raise ValueError(
                    f"{error} Collections: {', '.join(DM_CONTROL_SUBSETS)}; or a path to a .txt id list."
                ) from None
    if not snippets:
        raise ValueError(f"{clips!r} names no clips.")
    return snippets


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' hint naming the closest choices, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.6)
    return f" Did you mean {', '.join(close)}?" if close else ""
