"""Expert rollouts: MoCapAct's HDF5 files and PyTorch datasets over them.

Reading and writing the files needs only h5py; the PyTorch datasets (``ExpertDataset``, ``D4RLDataset``)
need the ``[train]`` extra and load on first use, so the package's other modules (Minari export, rollout
files) import without torch.
"""

from mocapact_envs.datasets.rollouts import RolloutFiles, write_clip_file, write_dataset_metrics
from mocapact_envs.extras import needs_extra

__all__ = ["D4RLDataset", "ExpertDataset", "RolloutFiles", "write_clip_file", "write_dataset_metrics"]

_TORCH_DATASETS = {
    "D4RLDataset": "mocapact_envs.datasets.d4rl_dataset",
    "ExpertDataset": "mocapact_envs.datasets.expert_dataset",
}


def __getattr__(name: str):
    if name not in _TORCH_DATASETS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    with needs_extra(f"mocapact_envs.datasets.{name}"):
        module = importlib.import_module(_TORCH_DATASETS[name])
    return getattr(module, name)
