"""MoCapAct's clip splits: its training and validation clips, and clips outside dm_control's ``ALL``.

MoCapAct distils on the snippets of its training clips, holds out those of its
validation clips (``mocapact_val_clips.txt``) and also evaluates on "extra" clips
that no expert tracked. Its published lists live in a ``clip_lists`` folder beside
the clips (``<MOCAPACT_MOCAP_PATH>/clip_lists``; ``../shared/cmu-mocap/clip_lists`` here).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mocapact_envs.mocap.ids import CLIP_ID_PATTERN, dm_control_subset, parse_snippet, read_id_file, suggest

#: MoCapAct's lists (``<mocap>/clip_lists``): locomotion snippets, validation clips, and the
#: snippets of the project's zoo (those of MoCapAct's 2,589 whose clips the shared folder holds).
LOCOMOTION_LIST, VALIDATION_LIST = "mocapact_locomotion_snippets.txt", "mocapact_val_clips.txt"
ZOO_SNIPPET_LIST = "shared_mocapact_snippets.txt"


def default_clip_lists() -> Path | None:
    """``<MOCAPACT_MOCAP_PATH>/clip_lists`` when the mocap path is a folder that has one."""
    mocap = os.environ.get("MOCAPACT_MOCAP_PATH")
    folder = Path(mocap).expanduser() / "clip_lists" if mocap else None
    return folder if folder is not None and folder.is_dir() else None


def clip_list(name: str, clip_lists: str | Path | None = None) -> list[str]:
    """The ids of one of MoCapAct's lists, from ``clip_lists`` (default: :func:`default_clip_lists`).

    A missing folder or file raises ``FileNotFoundError`` saying where it was looked for.
    """
    folder = Path(clip_lists) if clip_lists is not None else default_clip_lists()
    if folder is None:
        raise FileNotFoundError(
            f"MoCapAct's clip lists ({name}) are needed, and MOCAPACT_MOCAP_PATH "
            f"({os.environ.get('MOCAPACT_MOCAP_PATH')!r}) is not a folder with a clip_lists folder; "
            "set it to ../shared/cmu-mocap or give the clip_lists folder (--clip-lists)."
        )
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"MoCapAct's list {name} is not in {folder}.")
    return read_id_file(path)


def validation_clips(clip_lists: str | Path | None = None) -> frozenset[str]:
    """MoCapAct's validation clip ids (62 clips)."""
    return frozenset(clip_list(VALIDATION_LIST, clip_lists))


def held_out_clips(exclude_validation_clips: bool, clip_lists: str | Path | None = None) -> frozenset[str]:
    """The clips a trainer leaves out: MoCapAct's validation clips, or none when ``exclude_validation_clips``
    is false (a trainer's ``--no-exclude-validation-clips``)."""
    if not exclude_validation_clips:
        return frozenset()
    try:
        return validation_clips(clip_lists)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error} --no-exclude-validation-clips trains on every clip instead.") from None


def on_clips(ids: Iterable[str], clips: Iterable[str]) -> list[str]:
    """The clip or snippet ``ids`` whose clip is one of ``clips``, in their order."""
    clips = set(clips)
    return [i for i in ids if parse_snippet(i).clip_id in clips]


#: Named clip sets: the clips of the zoo's snippets (:data:`ZOO_SNIPPET_LIST`) on MoCapAct's training
#: clips (those not on its validation clips) and on its validation clips.
ZOO_CLIP_SETS = ("zoo-train", "zoo-val")


def zoo_clips(split: str, clip_lists: str | Path | None = None) -> list[str]:
    """The clip ids of the zoo's snippets on MoCapAct's validation clips (``"val"``) or off them
    (``"train"``), in the list's order, each once."""
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'val'.")
    clips = list(dict.fromkeys(parse_snippet(s).clip_id for s in clip_list(ZOO_SNIPPET_LIST, clip_lists)))
    validation = on_clips(clips, validation_clips(clip_lists))
    return validation if split == "val" else [c for c in clips if c not in validation]


def resolve_clips(names: str | Sequence[str], clip_lists: str | Path | None = None) -> list[str]:
    """Clip ids from clip ids and clip set names (:data:`ZOO_CLIP_SETS`), in order, each once.

    Anything else raises ``ValueError`` naming it and the choices.
    """
    clips: list[str] = []
    for name in [names] if isinstance(names, str) else names:
        if name in ZOO_CLIP_SETS:
            clips.extend(zoo_clips(name.removeprefix("zoo-"), clip_lists))
        elif CLIP_ID_PATTERN.match(name):
            clips.append(name)
        else:
            raise ValueError(
                f"{name!r} is neither a clip id like 'CMU_016_22' nor a clip set; clip sets: "
                f"{', '.join(ZOO_CLIP_SETS)}.{suggest(name, ZOO_CLIP_SETS)}"
            )
    if not clips:
        raise ValueError(f"{names!r} names no clips.")
    return list(dict.fromkeys(clips))


def extra_clips(mocap_path: str | Path | None = None) -> list[str]:
    """The clips of the mocap source (``MOCAPACT_MOCAP_PATH`` unless given) outside dm_control's ``ALL``:
    motion that no MoCapAct snippet covers, evaluated as whole clips (MoCapAct's "extra clips")."""
    from mocapact_envs.mocap.source import get_source

    known = set(dm_control_subset("ALL"))
    return [c for c in get_source(mocap_path).available_clips() if c not in known]
