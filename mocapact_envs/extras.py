"""The optional extras, and the ``ImportError`` that names the extra to install.

The base install (``pip install mocapact-envs``) runs every environment without torch: gymnasium,
dm_control, MuJoCo, numpy and h5py. What builds on networks or other libraries comes with an extra:

* ``[video]``: imageio and its ffmpeg: mp4 videos of episodes (:func:`mocapact_envs.wrappers.video.write_video`);
* ``[train]``: ``[video]``, torch, stable-baselines3, sb3-contrib, tyro, TensorBoard, matplotlib and safetensors:
  loading and training experts, decoders (``low_level_policy=``), distillation, GPT, transfer
  training, rollout collection, the trainers in ``baselines/``, motion completion's prompt expert;
* ``[ray]``: ``[train]`` and Ray Tune: expert sweeps and collection on a Ray cluster;
* ``[data]``: Minari and the Hugging Face Hub client: Minari export, MoCapAct's downloads;
* ``[all]``: all of them (what ``make install`` and the lock install).

Code needing an extra imports its modules where it runs (or lives in modules the environments do
not import) and sits under :func:`needs_extra`, which turns the missing module's
``ModuleNotFoundError`` into a :class:`MissingExtraError` naming the extra.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

#: The top-level modules each extra installs (``pyproject.toml``'s ``[project.optional-dependencies]``).
EXTRA_OF_MODULE = {
    "imageio": "video",
    "imageio_ffmpeg": "video",
    "torch": "train",
    "stable_baselines3": "train",
    "sb3_contrib": "train",
    "tyro": "train",
    "tensorboard": "train",
    "matplotlib": "train",
    "safetensors": "train",
    "ray": "ray",
    "minari": "data",
    "huggingface_hub": "data",
}


class MissingExtraError(ModuleNotFoundError):
    """A module of an optional extra is not installed; the message says which extra installs it."""


def missing_extra(module: str, what: str) -> MissingExtraError:
    """The error for ``what`` needing ``module`` (a top-level module name of :data:`EXTRA_OF_MODULE`)."""
    extra = EXTRA_OF_MODULE.get(module, "all")
    return MissingExtraError(
        f"{what} needs {module}, which is not installed: it comes with mocapact-envs' [{extra}] extra, "
        f"pip install 'mocapact-envs[{extra}]' (or 'mocapact-envs[all]' for every extra). The base install "
        "runs the environments only.",
        name=module,
    )


@contextmanager
def needs_extra(what: str) -> Iterator[None]:
    """Inside (or, as a decorator, in the function), a missing extra's module raises :class:`MissingExtraError`
    naming ``what`` and the extra to install; other errors pass unchanged."""
    try:
        yield
    except MissingExtraError:
        raise
    except ModuleNotFoundError as error:
        module = (error.name or "").split(".")[0]
        if module not in EXTRA_OF_MODULE:
            raise
        raise missing_extra(module, what) from error


def require_extra(what: str, *modules: str) -> None:
    """Raises :class:`MissingExtraError` for the first of ``modules`` that is not installed, before any work."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise missing_extra(module, what)
