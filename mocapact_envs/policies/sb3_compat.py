"""Reading MoCapAct's stable-baselines3 experts without the old gym or the mocapact package.

* :class:`ConcatKeysExtractor` stands in for MoCapAct's
  ``CmuHumanoidFeaturesExtractor``: both are weight-free and concatenate the
  Dict observation's ``observable_keys`` in that order (MoCapAct's extractor
  could also normalise; here ``vecnormalize.pkl``'s statistics do that outside).
* :func:`policy_kwargs_from_saved` rebuilds ``policy_kwargs`` from the readable
  part of the zip's JSON, mapping classes by name, so no cloudpickled entry is
  loaded.
* :func:`load_vecnormalize` reads ``vecnormalize.pkl`` with an unpickler that
  knows only what such a file holds, mapping gym < 0.24 and NumPy 1.x paths to
  today's classes.
"""

from __future__ import annotations

import codecs
import collections
import copyreg
import io
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium.spaces as spaces
import numpy as np
import torch
from numpy.random import _pickle as np_random_pickle
from numpy.random import bit_generator as np_bit_generator
from stable_baselines3.common.running_mean_std import RunningMeanStd as SB3RunningMeanStd
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env.vec_normalize import VecNormalize

#: MoCapAct's ``TIME_INDEX_OBSERVABLES`` in its concatenation order, with sizes.
MOCAPACT_TIME_INDEX_KEYS: dict[str, int] = {
    "walker/joints_pos": 56,
    "walker/joints_vel": 56,
    "walker/sensors_velocimeter": 3,
    "walker/sensors_gyro": 3,
    "walker/end_effectors_pos": 12,
    "walker/world_zaxis": 3,
    "walker/actuator_activation": 56,
    "walker/sensors_touch": 10,
    "walker/sensors_torque": 6,
    "walker/time_in_clip": 1,
}


class ConcatKeysExtractor(BaseFeaturesExtractor):
    """Weight-free features: the Dict observation's ``observable_keys`` concatenated in that order."""

    def __init__(
        self, observation_space: spaces.Dict, observable_keys: Sequence[str] = tuple(MOCAPACT_TIME_INDEX_KEYS)
    ):
        missing = [k for k in observable_keys if k not in observation_space.spaces]
        if missing:
            raise ValueError(f"observable_keys {missing} are not in the observation space {list(observation_space)}.")
        self.observable_keys = tuple(observable_keys)
        size = sum(int(np.prod(observation_space[k].shape)) for k in self.observable_keys)
        super().__init__(observation_space, features_dim=size)

    def forward(self, observations: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([observations[k].flatten(1) for k in self.observable_keys], dim=-1)


_CLASS_REPR = re.compile(r"<class '([^']+)'>")
_DEFAULT_EXTRACTORS = ("CombinedExtractor", "FlattenExtractor")


def policy_kwargs_from_saved(saved: Mapping[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` from the zip's JSON: SB3 stores a class there only as its ``repr``."""
    kwargs: dict[str, Any] = {}
    for key, value in saved.items():
        if key.startswith(":"):
            continue  # the cloudpickled blob: never loaded
        match = _CLASS_REPR.fullmatch(value) if isinstance(value, str) else None
        class_name = match.group(1).rsplit(".", 1)[-1] if match else None
        if key == "activation_fn":
            activation = getattr(torch.nn, class_name or str(value), None)
            if not (isinstance(activation, type) and issubclass(activation, torch.nn.Module)):
                raise ValueError(f"cannot map activation_fn {value!r} to a torch.nn activation.")
            kwargs[key] = activation
        elif key == "features_extractor_class":
            if class_name == "CmuHumanoidFeaturesExtractor":
                kwargs[key] = ConcatKeysExtractor
            elif class_name not in _DEFAULT_EXTRACTORS:
                raise ValueError(
                    f"cannot map features_extractor_class {value!r}; known: CmuHumanoidFeaturesExtractor, "
                    f"{', '.join(_DEFAULT_EXTRACTORS)}."
                )
        elif key == "features_extractor_kwargs":
            # MoCapAct's loader passed obs_rms here; vecnormalize.pkl's statistics replace it.
            if isinstance(value, Mapping) and "observable_keys" in value:
                kwargs[key] = {"observable_keys": list(value["observable_keys"])}
        elif key in ("optimizer_class", "optimizer_kwargs", "device") or match:
            continue  # not needed to act
        else:
            kwargs[key] = value
    if kwargs.get("features_extractor_class") is ConcatKeysExtractor:
        kwargs.setdefault("features_extractor_kwargs", {})
    else:
        kwargs.pop("features_extractor_kwargs", None)
    return kwargs


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = np._core.multiarray
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "deque"): collections.deque,
        ("copyreg", "_reconstructor"): copyreg._reconstructor,
        ("builtins", "object"): object,
        ("_codecs", "encode"): codecs.encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"): VecNormalize,
        ("stable_baselines3.common.running_mean_std", "RunningMeanStd"): SB3RunningMeanStd,
        ("numpy.random", "__RandomState_ctor"): np_random_pickle.__randomstate_ctor,
        ("numpy.random._pickle", "__randomstate_ctor"): np_random_pickle.__randomstate_ctor,
        ("numpy.random._pickle", "__generator_ctor"): np_random_pickle.__generator_ctor,
        ("numpy.random._pickle", "__bit_generator_ctor"): np_random_pickle.__bit_generator_ctor,
        ("numpy.random.mtrand", "RandomState"): np.random.RandomState,
        ("numpy.random._pcg64", "PCG64"): np.random.PCG64,
        ("numpy.random._mt19937", "MT19937"): np.random.MT19937,
        ("numpy.random.bit_generator", "SeedSequence"): np.random.SeedSequence,
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"): np_bit_generator.__pyx_unpickle_SeedSequence,
    }
    # NumPy 2 renamed numpy.core to numpy._core.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        table[(module, "scalar")] = multiarray.scalar
    # gym < 0.24 kept each space in gym.spaces.<module>; Gymnasium's classes read their state.
    for package in ("gym", "gymnasium"):
        for module, name in (
            ("box", "Box"),
            ("dict", "Dict"),
            ("discrete", "Discrete"),
            ("multi_discrete", "MultiDiscrete"),
            ("multi_binary", "MultiBinary"),
            ("tuple", "Tuple"),
        ):
            table[(f"{package}.spaces.{module}", name)] = getattr(spaces, name)
    # gym 0.22 / 0.23 seeded spaces with their own Generator subclass.
    table[("gym.utils.seeding", "RandomNumberGenerator")] = np.random.Generator
    table[("gym.utils.seeding", "_generator_ctor")] = np_random_pickle.__generator_ctor
    return table


_ALLOWED_GLOBALS = _allowed_globals()


class AllowListUnpickler(pickle.Unpickler):
    """Resolves a pickle's globals from ``allowed`` only: any other class or function is refused.

    Subclasses set ``allowed`` (``(module, name) -> object``) and ``holds`` (what such a
    file holds, for the refusal message).
    """

    allowed: dict[tuple[str, str], Any] = {}
    holds = "a pickle of this kind"

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refers to {module}.{name}, which {self.holds} does not hold; refused (only known classes and "
                "functions are loaded, never arbitrary code)."
            ) from None


def sb3_allowed_globals() -> dict[tuple[str, str], Any]:
    """What SB3 1.x / 2.x pickles of gym < 0.24 or Gymnasium spaces and NumPy arrays refer to, mapped to today's."""
    return dict(_ALLOWED_GLOBALS)


class _VecNormalizeUnpickler(AllowListUnpickler):
    """Refuses every global but the classes and NumPy helpers a ``vecnormalize.pkl`` holds."""

    allowed = _ALLOWED_GLOBALS
    holds = "a VecNormalize pickle"


def load_vecnormalize(path: str | Path) -> VecNormalize:
    """A ``VecNormalize`` without its env, from a pickle of gym < 0.24 / SB3 1.x or of today."""
    try:
        vec_normalize = _VecNormalizeUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(f"{path} {error}") from None
    if not isinstance(vec_normalize, VecNormalize):
        raise ValueError(f"{path} holds a {type(vec_normalize).__name__}, not a VecNormalize.")
    if isinstance(vec_normalize.obs_rms, dict) and getattr(vec_normalize, "norm_obs_keys", None) is None:
        vec_normalize.norm_obs_keys = list(vec_normalize.obs_rms)
    return vec_normalize
