"""The pickle-free directory format every torch policy of the package is saved in.

A saved policy is a directory with ``model.safetensors`` (the state dict,
normalisers included) and ``config.json`` (its format name and version and the
architecture), each written under a temporary name and renamed, the config last,
so a reader never sees half a policy. MoCapAct's pickled checkpoints stopped
loading on torch >= 2.6; these never depend on pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from mocapact_envs.files import read_json, read_tensors, write_json, write_tensors

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


class SavedInDirectory:
    """Mixin for ``nn.Module`` policies built from ``config``: :meth:`save` and :meth:`load`.

    Subclasses set ``config_class`` (with ``to_json_dict`` and ``from_json_dict(data,
    source)``) and ``description`` (for error messages).
    """

    config_class: ClassVar[type]
    description: ClassVar[str] = "policy"
    #: Where the policy was last saved or loaded from (an environment spec records it in place of the object).
    saved_directory: Path | None = None

    def save(self, directory: str | Path) -> Path:
        """Saves into ``directory`` (created if needed); returns it."""
        directory = Path(directory)
        write_tensors(directory / WEIGHTS_FILE, self.state_dict())
        write_json(directory / CONFIG_FILE, self.config.to_json_dict())
        self.saved_directory = directory
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: Any = "cpu"):
        """Loads a policy saved by :meth:`save`, in evaluation mode."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{directory} is not a saved {cls.description}: it lacks {', '.join(missing)} "
                f"(a policy directory holds {CONFIG_FILE} and {WEIGHTS_FILE})."
            )
        config = cls.config_class.from_json_dict(read_json(config_path), source=str(config_path))
        policy = cls(config)
        policy.load_state_dict(read_tensors(weights_path))
        policy.saved_directory = directory
        return policy.to(device).eval()
