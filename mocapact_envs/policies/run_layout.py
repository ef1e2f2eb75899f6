"""Where experts live on disk: MoCapAct's run layout and the zoo's, and finding experts in them.

A run folder is ``<root>/<snippet>/<seed>/`` with ``clip_info.json`` (the snippet) and
``eval_rsi/model/`` (the expert, :mod:`mocapact_envs.policies.expert_files`); a zoo is a folder
whose ``experts/<listed snippet>/<seed>/`` are such runs (:mod:`mocapact_envs.tools.zoo` writes
them). Nothing here loads a network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mocapact_envs.files import read_json
from mocapact_envs.mocap.ids import Snippet, parse_snippet, suggest
from mocapact_envs.policies.relay import RELAY_WINDOWS_DIR

#: The file that names the snippet of an expert run (MoCapAct's layout).
CLIP_INFO_FILE = "clip_info.json"
#: A run's evaluations during training (``baselines/ppo_expert/train.py``).
EVALUATIONS_FILE = "evaluations.json"
#: MoCapAct's evaluation of a finished run (1,000 random starts, 100 snippet starts; the sweep writes it).
FINAL_EVALUATION_FILE = "final_evaluation.json"
#: Experts trained with baselines/ppo_expert and shipped with the package (MoCapAct's layout).
SHIPPED_EXPERTS = Path(__file__).parents[1] / "pretrained" / "experts"


@dataclass(frozen=True)
class ExpertRun:
    """One trained snippet expert: its run folder (``<root>/<snippet>/<seed>``) and snippet."""

    snippet: Snippet
    run_dir: Path
    #: Other ids the run answers to: a zoo expert's listed snippet id when it was trained on a cropped part.
    aliases: tuple[str, ...] = ()

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "eval_rsi" / "model"

    @property
    def names(self) -> tuple[str, ...]:
        """The ids that select this run: its snippet's, its clip's and its aliases."""
        return (self.snippet.id, self.snippet.clip_id, *self.aliases)


@dataclass
class ExpertSearch:
    """What :func:`find_experts` found: runs by clip id (snippets in start order) and what it passed over."""

    runs_by_clip: dict[str, list[ExpertRun]]
    duplicates: list[tuple[ExpertRun, ExpertRun]] = field(default_factory=list)
    without_model: list[Path] = field(default_factory=list)

    @property
    def num_snippets(self) -> int:
        return sum(len(runs) for runs in self.runs_by_clip.values())


#: The ``clip_info.json`` field where a zoo expert keeps its listed snippet id and how it was stored.
ZOO_INFO_KEY = "zoo"


def read_clip_info(path: Path) -> Snippet:
    """The snippet a ``clip_info.json`` names (MoCapAct's ``clip_id``/``start_step``/``end_step``)."""
    info = read_json(path)
    if "snippet_id" in info:
        return parse_snippet(info["snippet_id"])
    missing = [k for k in ("clip_id", "start_step", "end_step") if k not in info]
    if missing:
        raise ValueError(f"{path} lacks {missing}; it needs clip_id, start_step and end_step (or snippet_id).")
    return parse_snippet(f"{info['clip_id']}-{int(info['start_step'])}-{int(info['end_step'])}")


def find_experts(dirs: Sequence[str | Path], clips: Sequence[str] | None = None) -> ExpertSearch:
    """Every expert run under ``dirs``, grouped by clip; ``clips`` keeps only these clip or snippet ids
    (a zoo expert also answers to its listed snippet id).

    Where several runs (seeds) track the same snippet, the first in path order is used.
    """
    chosen: dict[str, ExpertRun] = {}
    search = ExpertSearch({})
    for root in dirs:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"expert folder {root} does not exist.")
        for info_path in sorted(root.rglob(CLIP_INFO_FILE)):
            if RELAY_WINDOWS_DIR in info_path.relative_to(root).parts:  # a relay's window runs, not experts
                continue
            listed = read_json(info_path).get(ZOO_INFO_KEY, {}).get("listed_snippet_id")
            snippet = read_clip_info(info_path)
            run = ExpertRun(snippet, info_path.parent, (listed,) if listed and listed != snippet.id else ())
            if not run.model_dir.is_dir():
                search.without_model.append(run.run_dir)
                continue
            if clips is not None and not set(run.names) & set(clips):
                continue
            if run.snippet.id in chosen:
                search.duplicates.append((chosen[run.snippet.id], run))
                continue
            chosen[run.snippet.id] = run
    for run in sorted(chosen.values(), key=lambda r: (r.snippet.clip_id, r.snippet.start, r.snippet.end)):
        search.runs_by_clip.setdefault(run.snippet.clip_id, []).append(run)
    return search


# -- the zoo's layout ----------------------------------------------------------------

#: Where the zoo is unless a path is given: $MOCAPACT_ZOO, else ``zoo/`` at the root of the source checkout
#: the package runs from (a pip install has none: site-packages holds no zoo).
ZOO_ENV_VAR = "MOCAPACT_ZOO"
DEFAULT_ZOO = Path(__file__).resolve().parents[2] / "zoo"
EXPERTS_FOLDER = "experts"
#: The name that stands for the experts shipped with the package (:data:`SHIPPED_EXPERTS`), as
#: ``low_level_policy="pretrained"`` stands for the shipped decoder; a folder of that name is ``./pretrained``.
PRETRAINED = "pretrained"


class ZooNotFoundError(FileNotFoundError):
    """No zoo was given and none is where the package looks; the message says where it looked and how to get one."""


def zoo_root(path: str | Path | None = None) -> Path:
    """The zoo folder: ``path``, else ``$MOCAPACT_ZOO``, else ``zoo/`` at the source checkout's root.

    Raises :class:`ZooNotFoundError` when neither is given and the package does not run from a checkout
    that has its ``zoo/`` (a wheel or pip install).
    """
    if path:
        return Path(path).expanduser()
    if os.environ.get(ZOO_ENV_VAR):
        return Path(os.environ[ZOO_ENV_VAR]).expanduser()
    if DEFAULT_ZOO.is_dir():
        return DEFAULT_ZOO
    raise ZooNotFoundError(
        f"no expert zoo found: ${ZOO_ENV_VAR} is not set and {DEFAULT_ZOO} does not exist (the zoo/ folder of a "
        "mocapact-envs source checkout; a pip or wheel install does not include the zoo). Get the zoo/ folder of "
        f"the mocapact-envs repository (a git clone has it), then set {ZOO_ENV_VAR}=<clone>/zoo, or pass the "
        "zoo's folder: load_expert('<clone>/zoo', snippet_id), mocapact-collect <clone>/zoo."
    )


def expert_folder_argument(path: str | Path) -> Path:
    """An expert-folder argument (a command line's) as given, but where no such folder exists ``"pretrained"``
    is the shipped experts and ``"zoo"`` the project's zoo (:func:`zoo_root`)."""
    path = Path(path)
    if path.exists() or str(path) not in (PRETRAINED, "zoo"):
        return path
    return SHIPPED_EXPERTS if str(path) == PRETRAINED else zoo_root()


def experts_folder(path: str | Path | None = None) -> Path:
    """The ``experts`` folder of a zoo given by its folder or its ``experts`` folder.

    ``"zoo"`` where no such folder exists is the project's zoo (:func:`zoo_root`).
    """
    folder = expert_folder_argument(zoo_root(path))
    if (folder / EXPERTS_FOLDER).is_dir():
        return folder / EXPERTS_FOLDER
    if folder.is_dir() and (folder.name == EXPERTS_FOLDER or any(folder.glob(f"*/*/{CLIP_INFO_FILE}"))):
        return folder
    given = "" if path else f" (${ZOO_ENV_VAR})" if os.environ.get(ZOO_ENV_VAR) else ""
    raise FileNotFoundError(
        f"no expert zoo at {folder}{given}: it has no {EXPERTS_FOLDER}/<snippet>/<seed>/{CLIP_INFO_FILE} "
        f"(mocapact-zoo export writes them; the zoo/ folder of the mocapact-envs repository is one)."
    )


def shipped_expert(snippet_id: str | None = None) -> Path:
    """The run folder of an expert shipped with the package: ``snippet_id``'s (a snippet or clip id), or the
    only one when none is named."""
    experts = zoo_experts(SHIPPED_EXPERTS)
    listed = ", ".join(sorted({e.listed_id for e in experts})) or "none"
    if snippet_id is not None:
        try:
            return find_zoo_expert(SHIPPED_EXPERTS, snippet_id).run_dir
        except ValueError as error:
            raise ValueError(
                f"the package ships no expert for {snippet_id!r}; it ships {listed} ({SHIPPED_EXPERTS}). The zoo "
                "has many more: load_expert('zoo', snippet_id)."
            ) from error
    if len(experts) != 1:
        raise ValueError(
            f"the package ships {len(experts)} experts ({listed}) in {SHIPPED_EXPERTS}; name one: "
            f"load_expert({PRETRAINED!r}, snippet_id)."
        )
    return experts[0].run_dir


@dataclass(frozen=True)
class ZooExpert:
    """One expert of the zoo: the snippet id it is listed under and its run folder (``experts/<id>/<seed>``)."""

    listed_id: str
    run_dir: Path
    #: What it was trained on and tracks: the listed snippet, or the part of it the converted clip covers.
    snippet: Snippet

    @property
    def cropped(self) -> bool:
        return self.snippet.id != self.listed_id

    @property
    def seed(self) -> str:
        return self.run_dir.name


def zoo_experts(path: str | Path | None = None) -> list[ZooExpert]:
    """Every expert of a zoo, by listed snippet id then seed."""
    experts = []
    for info_path in sorted(experts_folder(path).glob(f"*/*/{CLIP_INFO_FILE}")):
        experts.append(ZooExpert(info_path.parent.parent.name, info_path.parent, read_clip_info(info_path)))
    return experts


def find_zoo_expert(path: str | Path | None, snippet_id: str, seed: int | str | None = None) -> ZooExpert:
    """The zoo's expert for ``snippet_id`` (listed or covered id; a clip id with one snippet in the zoo).

    Several seeds: the smallest unless ``seed`` says which. Unknown ids raise ``ValueError`` naming
    the closest ids and how many the zoo holds.
    """
    experts = zoo_experts(path)
    matches = [e for e in experts if snippet_id in (e.listed_id, e.snippet.id)]
    if not matches:
        of_clip = [e for e in experts if e.snippet.clip_id == snippet_id]
        if len({e.listed_id for e in of_clip}) == 1:
            matches = of_clip
        elif of_clip:
            raise ValueError(
                f"clip {snippet_id} has {len({e.listed_id for e in of_clip})} snippets in the zoo: "
                f"{', '.join(sorted({e.listed_id for e in of_clip}))}; name one."
            )
    if seed is not None:
        matches = [e for e in matches if e.seed == str(seed)]
    if not matches:
        listed = sorted({e.listed_id for e in experts})
        what = f"snippet {snippet_id!r}" + (f" with seed {seed}" if seed is not None else "")
        shown = ", ".join(listed[:8]) + (f" and {len(listed) - 8} more" if len(listed) > 8 else "")
        raise ValueError(
            f"the zoo {experts_folder(path)} has no expert for {what}.{suggest(snippet_id, listed)} "
            f"It holds {len(listed)} snippets: {shown or 'none'} (mocapact-zoo list shows them all)."
        )
    return min(matches, key=seed_order)


def seed_order(expert: ZooExpert) -> tuple[int, str]:
    """The order in which :func:`find_zoo_expert` prefers one seed of a snippet to another: the smallest first."""
    return (int(expert.seed) if expert.seed.isdigit() else 0, expert.seed)
