"""dm_control's tracking error and ``reference_pose.rewards`` rewards, batched over worlds.

Both compare one block of the walker's features with the same block of the reference (see
:class:`~mocapact_envs.tasks.fast_tracking.features.WalkerFeatures`), so they read
``Frame.difference`` and compute nothing twice.
"""

from __future__ import annotations

import numpy as np

from mocapact_envs.tasks.fast_tracking.features import Frame, WalkerFeatures, constant

_ONE, _HALF = constant(1.0), constant(0.5)

#: ``multi_term_pose_reward``'s terms in the order of ``TrackingReward.block_starts``
#: (joint velocities, centre of mass, appendages) and then body quaternions.
_POSE_REWARD_SCALES = np.array([-0.1, -10.0, -40.0, -2.0])
_POSE_REWARD_WEIGHTS = np.array([1.0, 0.1, 0.15, 0.65])


class TrackingReward:
    """One of dm_control's rewards (``comic``, ``termination_reward``, ``multi_term_pose_reward``) and the
    tracking error it and termination use, for ``num_worlds`` worlds.

    Args:
        reward_type: the reward's name (checked by :class:`~mocapact_envs.tasks.tracking_settings.TrackingSettings`).
        termination_error_threshold: the tracking error that ends an episode.
        columns: the reference table's columns (:attr:`~.features.SnippetReference.columns`).
        walker_features: where the walker's features are.
        num_worlds: how many worlds each call computes.
    """

    def __init__(
        self,
        reward_type: str,
        termination_error_threshold: float,
        columns: dict[str, slice],
        walker_features: WalkerFeatures,
        num_worlds: int,
    ):
        self.reward_type = reward_type
        self.termination_error_threshold = termination_error_threshold
        self.features = walker_features
        self.unit_quaternion_columns = columns["unit_body_quaternions"]
        # Where joint velocities, centre of mass and appendages start in the reward's part of the block.
        self.block_starts = np.array([0, columns["center_of_mass"].start, columns["appendages"].start])
        self.block_starts[1:] -= columns["joints_velocity"].start
        self.pose_weights = _POSE_REWARD_WEIGHTS * (0.5 if reward_type == "comic" else 1.0)
        # One row per world: multiplying arrays of the same shape is faster than broadcasting.
        self.pose_scales = np.tile(_POSE_REWARD_SCALES, (num_worlds, 1))
        self.comic_error_scale = constant(0.5 / termination_error_threshold)

    def tracking_error(self, frame: Frame) -> np.ndarray:
        """dm_control's termination error: ``0.5 * mean |body error| + 0.5 * mean |joint error|``."""
        features = self.features
        error = np.abs(frame.difference[:, : features.num_error])
        # np.add.reduce / n is np.mean's own arithmetic (the same bits), without its Python overhead;
        # halving is exact, so 0.5 * (b + j) is dm_control's 0.5 * b + 0.5 * j bit for bit.
        joints = np.add.reduce(error[:, : features.num_joints], axis=1) / features.joint_count
        bodies = np.add.reduce(error[:, features.num_joints :], axis=1) / features.body_count
        return _HALF * (bodies + joints)

    def reward(self, frame: Frame, tracking_error: np.ndarray) -> np.ndarray:
        """dm_control's ``reference_pose.rewards`` reward of every world: (B,)."""
        if self.reward_type == "termination_reward":
            return 1 - tracking_error / self.termination_error_threshold
        # Joint velocities, centre of mass and appendages: one block against one of the reference.
        difference = frame.difference[:, self.features.num_error :]
        distances = np.empty((frame.batch, len(_POSE_REWARD_SCALES)))
        np.add.reduceat(np.square(difference), self.block_starts, axis=1, out=distances[:, :-1])
        # rewards.bounded_quat_dist is 0.5 * arccos(2 <q, r>^2 - 1) for unit q, r: arccos |<q, r>|.
        # MuJoCo's xquat is unit; the reference's are normalised when a snippet is loaded.
        reference_quats = frame.current[:, self.unit_quaternion_columns].reshape(frame.body_quaternions.shape)
        cosine = np.abs(np.add.reduce(frame.body_quaternions * reference_quats, axis=2))
        angle = np.arccos(np.minimum(_ONE, cosine))
        np.add.reduce(angle * angle, axis=1, out=distances[:, -1])
        # 0.1 exp(-10 d_com) + exp(-0.1 d_jointvel) + 0.15 exp(-40 d_appendages) + 0.65 exp(-2 d_quat).
        pose = np.exp(distances * self.pose_scales) @ self.pose_weights
        if self.reward_type == "multi_term_pose_reward":
            return pose
        # comic: 0.5 * (1 - error / threshold) + 0.5 * pose, the 0.5 folded into the weights.
        return (_HALF - tracking_error * self.comic_error_scale) + pose
