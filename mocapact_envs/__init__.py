"""MoCapAct's humanoid motion-capture tasks as Gymnasium environments.

Importing the package registers every ``mocapact/`` environment id.
"""

import os
import warnings

# Offscreen rendering without a display; a user's choice wins.
os.environ.setdefault("MUJOCO_GL", "egl")

# dm_control's composer turns every DeprecationWarning on when imported, so it is
# imported first and the one message we silence is filtered after it: dm_control's
# HDF5 loader asks protobuf for label() once per field it reads.
import dm_control.composer  # noqa: E402, F401

warnings.filterwarnings("ignore", message=r"label\(\) is deprecated", category=DeprecationWarning)

from mocapact_envs.envs.registration import register_envs  # noqa: E402
from mocapact_envs.envs.tracking import MocapTrackingEnv  # noqa: E402
from mocapact_envs.envs.transfer import GoToTargetEnv, VelocityControlEnv  # noqa: E402
from mocapact_envs.policies.expert_files import load_expert  # noqa: E402

__version__ = "0.1.0"
__all__ = ["GoToTargetEnv", "MocapTrackingEnv", "VelocityControlEnv", "register_envs", "__version__", "load_expert"]

register_envs()
