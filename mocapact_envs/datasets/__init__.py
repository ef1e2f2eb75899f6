"""Expert rollouts: MoCapAct's HDF5 files and PyTorch datasets over them."""

from mocapact_envs.datasets.d4rl_dataset import D4RLDataset
from mocapact_envs.datasets.expert_dataset import ExpertDataset
from mocapact_envs.datasets.rollouts import RolloutFiles, write_clip_file, write_dataset_metrics

__all__ = ["D4RLDataset", "ExpertDataset", "RolloutFiles", "write_clip_file", "write_dataset_metrics"]
