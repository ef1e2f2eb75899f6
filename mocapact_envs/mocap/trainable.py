"""Which part of a listed snippet an expert can be trained on, checked before anything trains.

A listed MoCapAct snippet can run past the end of its converted clip (the AMC file is shorter than
the clip MoCapAct used), or start or end on steps the conversion flags as broken (a capture glitch:
an episode starting there fails at once). :func:`plan_snippets` resolves a list of ids against the
mocap source, names every such snippet at once, and, with ``crop=True``, plans the trainable part
instead (same start, the clip's last step as end; broken steps cut off either end), marked as cropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mocapact_envs.mocap.ids import Snippet, resolve_snippets, suggest
from mocapact_envs.mocap.source import get_source


@dataclass(frozen=True)
class PlannedSnippet:
    requested: str
    """the id as listed"""
    snippet: Snippet
    """what is trained: the listed snippet, or its trainable part (``end`` resolved)"""
    cropped: bool

    @property
    def snippet_id(self) -> str:
        return self.snippet.id


def plan_snippets(ids: Sequence[str], crop: bool, mocap_path: str | None = None) -> list[PlannedSnippet]:
    """Every id resolved against the mocap source; raises ``ValueError`` naming all the ids that cannot be
    trained (unknown, not in the source, past the clip's end or on broken steps without ``crop``, or too short
    once cropped)."""
    source = get_source(mocap_path)
    available = set(source.available_clips())
    problems, planned = [], []
    for requested in ids:
        try:
            (snippet,) = resolve_snippets(requested)
        except ValueError as error:
            problems.append(f"{requested}: {error}")
            continue
        if snippet.clip_id not in available:
            problems.append(
                f"{requested}: clip {snippet.clip_id} is not in {source.description}{suggest(snippet.clip_id, available)}"
            )
            continue
        last_step = source.num_steps(snippet.clip_id) - 1
        listed_end = last_step if snippet.end is None else snippet.end
        covered_end = min(listed_end, last_step)
        start, end = snippet.start, covered_end
        quality = source.clip_set(snippet.clip_id).quality(snippet.clip_id)
        broken = set(quality.broken_steps if quality else ()) & set(range(start, end + 1))
        while start in broken:
            start += 1
        while end in broken:
            end -= 1
        inner_broken = {step for step in broken if start <= step <= end}
        if end - start < 1:
            problems.append(
                f"{requested}: leaves fewer than 2 steps of {snippet.clip_id} to track (its steps in "
                f"{source.description} end at {last_step}{'; broken steps cropped off' if broken else ''})"
            )
            continue
        if inner_broken:
            problems.append(f"{requested}: {'; '.join(quality.problems_within(start, end))}")
            continue
        trainable = Snippet(snippet.clip_id, start, end)
        cropped = (start, end) != (snippet.start, listed_end)
        if cropped and not crop:
            reasons = []
            if listed_end > last_step:
                reasons.append(
                    f"runs past the end of {snippet.clip_id}, whose steps in {source.description} end at {last_step}"
                )
            if broken:
                reasons += quality.problems_within(snippet.start, covered_end)
            problems.append(f"{requested}: {'; '.join(reasons)}; its trainable part is {trainable.id}")
            continue
        planned.append(PlannedSnippet(requested, trainable, cropped))
    if problems:
        raise ValueError(f"{len(problems)} of {len(ids)} snippet(s) cannot be trained:\n  " + "\n  ".join(problems))
    return planned
