"""Actions that track a snippet, found by trajectory optimisation on the tracking task's own physics.

iLQR (iterative linear-quadratic regulator) over MuJoCo's finite-difference derivatives, run receding-horizon
along the snippet: a window of ``horizon`` steps is optimised from the state the previous windows reached, its first
``commit`` steps are kept, and the next window starts there. The result, a :class:`TrackingPlan`, is the walker's
states, the actions that produce them from the snippet start (played open loop in a tracking world they give the
same states to within the constraint solver's tolerance: its warm start is not part of the state) and each window's
time-varying linear feedback gains from its last backward pass (taken around the trajectory before that pass's
accepted step, so near the kept states, not exactly at them).

Why: it answers whether a snippet's reference is physically trackable by the walker at all, and how far a
feedback law linearised around such a plan holds under MoCapAct's action noise
(``baselines/ppo_expert/feedforward.py`` measures both).

The planner's state is MuJoCo's ``qpos, qvel, act`` (dm_control's ``physics.get_state()``) followed by the constraint
solver's warm start (``qacc_warmstart``), which a tracking world carries from step to step: without it a replay
agrees with the plan only to the solver's tolerance, and a running motion amplifies that within about 150 steps.
Derivatives and errors live in
its tangent space (``nv + nv + na``: the free joint's orientation as a rotation vector). The cost of a step is
quadratic in the walker's pose and velocity error from the reference, weighted by :class:`TrackingWeights`, plus
a small one on the action's distance from the reference action.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

#: Line-search step sizes of an iLQR forward pass, largest first.
LINE_SEARCH = (1.0, 0.5, 0.25, 0.1)
#: Levenberg-Marquardt regularisation of the control Hessian: start, floor, and the ceiling at which iLQR gives up.
REGULARIZATION = (1e-3, 1e-6, 1e3)


@dataclass(frozen=True)
class TrackingWeights:
    """Diagonal weights of the quadratic tracking cost (per squared error unit)."""

    root_position: float = 100.0
    """per m^2 of the root's position error: a lag or offset moves every body, which MoCapAct's error counts"""
    root_rotation: float = 30.0
    """per rad^2 of the root's orientation error (rotation vector)"""
    joints: float = 1.0
    """per rad^2 of each hinge joint's error"""
    root_velocity: float = 1.0
    """per (m/s)^2 of the root's linear velocity error"""
    root_angular_velocity: float = 0.3
    """per (rad/s)^2 of the root's angular velocity error"""
    joint_velocity: float = 0.01
    """per (rad/s)^2 of each joint's velocity error"""
    action: float = 0.01
    """per squared unit of the action's distance from the reference action"""

    def state_diagonal(self, nv: int, na: int) -> np.ndarray:
        """The cost's diagonal over the tangent state (free joint first, as MuJoCo orders it)."""
        joints = nv - 6
        return np.concatenate(
            [
                np.full(3, self.root_position),
                np.full(3, self.root_rotation),
                np.full(joints, self.joints),
                np.full(3, self.root_velocity),
                np.full(3, self.root_angular_velocity),
                np.full(joints, self.joint_velocity),
                np.zeros(na),  # Servo activations follow the actions: not tracked themselves.
            ]
        )


class ControlStep:
    """One environment step of a tracking world's physics: ``num_substeps`` MuJoCo steps with the action held.

    Works on a private ``MjData`` of ``model``, so it never disturbs the worlds that train or evaluate.
    """

    def __init__(self, model: mujoco.MjModel, num_substeps: int):
        self.model = model
        self.data = mujoco.MjData(model)
        self.num_substeps = int(num_substeps)
        self.nq, self.nv, self.na, self.nu = model.nq, model.nv, model.na, model.nu
        self.tangent_size = 2 * model.nv + model.na
        #: ``qpos, qvel, act``: what a tracking world's ``physics_states`` gives; the planner's state adds the warm start.
        self.physics_size = model.nq + model.nv + model.na
        self._substep_a = np.zeros((self.tangent_size, self.tangent_size))
        self._substep_b = np.zeros((self.tangent_size, self.nu))

    def planning_state(self, physics_state: np.ndarray, warm_start: np.ndarray | None = None) -> np.ndarray:
        """A world's ``qpos, qvel, act`` with its solver warm start (zeros, as after a reset, if not given)."""
        warm_start = np.zeros(self.nv) if warm_start is None else warm_start
        return np.concatenate([np.asarray(physics_state, np.float64)[: self.physics_size], warm_start])

    def _set(self, state: np.ndarray, action: np.ndarray) -> None:
        data, nq, nv, end = self.data, self.nq, self.nv, self.physics_size
        data.qpos[:], data.qvel[:], data.act[:] = state[:nq], state[nq : nq + nv], state[nq + nv : end]
        data.qacc_warmstart[:] = state[end:] if len(state) > end else 0.0
        data.ctrl[:] = action

    def _state(self) -> np.ndarray:
        data = self.data
        return np.concatenate([data.qpos, data.qvel, data.act, data.qacc_warmstart])

    def __call__(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The planning state one step after ``state`` (a planning or a physics state) under ``action``."""
        self._set(state, action)
        mujoco.mj_step(self.model, self.data, self.num_substeps)
        return self._state()

    def derivatives(self, state: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The step's Jacobians with respect to the tangent state and the action: the substeps' forward
        finite differences (``mjd_transitionFD``) chained."""
        self._set(state, action)
        a_step, b_step = self._substep_a, self._substep_b
        jacobian_state = np.eye(self.tangent_size)
        jacobian_action = np.zeros((self.tangent_size, self.nu))
        for _ in range(self.num_substeps):
            mujoco.mjd_transitionFD(self.model, self.data, 1e-6, 0, a_step, b_step, None, None)
            jacobian_state = a_step @ jacobian_state
            jacobian_action = a_step @ jacobian_action + b_step
            mujoco.mj_step(self.model, self.data)
        return jacobian_state, jacobian_action

    def difference(self, state: np.ndarray, nominal: np.ndarray) -> np.ndarray:
        """``state - nominal`` in the tangent space (planning or physics states: the warm start does not count)."""
        nq, nv, end = self.nq, self.nv, self.physics_size
        position = np.zeros(nv)
        mujoco.mj_differentiatePos(self.model, position, 1.0, nominal[:nq], state[:nq])
        velocity = state[nq : nq + nv] - nominal[nq : nq + nv]
        return np.concatenate([position, velocity, state[nq + nv : end] - nominal[nq + nv : end]])


class TrackingCost:
    """The quadratic tracking cost of a snippet's reference.

    Args:
        step: the physics (for tangent differences).
        reference_qpos, reference_qvel: the reference pose and velocity at each snippet step, as the walker's
            ``qpos`` and ``qvel`` (``(T + 1, nq)``, ``(T + 1, nv)``).
        reference_actions: the reference action at each step (``(T + 1, nu)``), which actions are pulled towards.
        weights: the cost's weights.
    """

    def __init__(
        self,
        step: ControlStep,
        reference_qpos: np.ndarray,
        reference_qvel: np.ndarray,
        reference_actions: np.ndarray,
        weights: TrackingWeights = TrackingWeights(),
    ):
        self.step = step
        self.reference_qpos = np.asarray(reference_qpos, np.float64)
        self.reference_qvel = np.asarray(reference_qvel, np.float64)
        self.reference_actions = np.asarray(reference_actions, np.float64)
        self.state_weights = weights.state_diagonal(step.nv, step.na)
        self.action_weight = float(weights.action)

    def error(self, state: np.ndarray, time_step: int) -> np.ndarray:
        """The tangent error of ``state`` from the reference at snippet step ``time_step`` (activations: 0)."""
        nq, nv = self.step.nq, self.step.nv
        activation = state[nq + nv : self.step.physics_size]
        reference = np.concatenate([self.reference_qpos[time_step], self.reference_qvel[time_step], activation])
        return self.step.difference(state, reference)

    def total(self, states: np.ndarray, actions: np.ndarray, first_step: int) -> float:
        """The cost of ``actions`` taken from ``states[0]`` at snippet step ``first_step``."""
        cost = 0.0
        for i, action in enumerate(actions):
            error = self.error(states[i + 1], first_step + i + 1)
            pull = action - self.reference_actions[first_step + i]
            cost += 0.5 * error @ (self.state_weights * error) + 0.5 * self.action_weight * pull @ pull
        return cost


@dataclass
class SnippetProblem:
    """What planning a snippet from its start needs: the control step of its tracking world, the tracking cost of
    its reference, the first planning state (the reset's, warm start included) and the number of steps to plan (the
    environment acts at steps 0 .. ``num_steps - 1``)."""

    step: ControlStep
    cost: TrackingCost
    start: np.ndarray
    num_steps: int

    @classmethod
    def for_snippet(cls, snippet_id: str, weights: TrackingWeights = TrackingWeights()) -> SnippetProblem:
        """Built from a tracking world of the snippet (MoCapAct's task, the fast backend's physics)."""
        from mocapact_envs.tasks.fast_tracking.worlds import TrackingWorlds
        from mocapact_envs.tasks.reference_actions import TIME_KEY, ReferenceActions
        from mocapact_envs.tasks.tracking_settings import TrackingSettings, load_clip_set

        clip_set = load_clip_set(snippet_id)
        if len(clip_set.snippets) != 1:
            raise ValueError(f"{snippet_id!r} names {len(clip_set.snippets)} snippets; give one snippet id.")
        reference_actions = ReferenceActions.from_joints(clip_set.reference_features(0)["joints"])
        worlds = TrackingWorlds(clip_set, (TIME_KEY,), TrackingSettings(random_start=False), num_worlds=1, seed=0)
        try:
            worlds.reset((0,))
            worlds.evaluate(with_reward=False)
            step = ControlStep(worlds.dynamics_model, worlds.num_substeps)
            start = step.planning_state(worlds.physics_states()[0], worlds.datas[0].qacc_warmstart)
            reference_qpos, reference_qvel = worlds.reference_trajectory()
            num_steps = int(worlds.last_step[0])
        finally:
            worlds.close()
        actions = reference_actions.actions.astype(np.float64)
        return cls(step, TrackingCost(step, reference_qpos, reference_qvel, actions, weights), start, num_steps)


@dataclass
class IlqrResult:
    """One window's optimised trajectory: ``states`` (``H + 1``), ``actions`` (``H``), cost and feedback ``gains``
    (``(H, nu, tangent)``: ``action = actions[t] + gains[t] @ difference(state, states[t])``)."""

    states: np.ndarray
    actions: np.ndarray
    cost: float
    gains: np.ndarray
    iterations: int


def rollout(
    step: ControlStep,
    start: np.ndarray,
    actions: np.ndarray,
    nominal: np.ndarray | None = None,
    gains: np.ndarray | None = None,
    feedforward: np.ndarray | None = None,
    step_size: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """States and the (clipped) actions taken from ``start``: ``actions``, or with ``gains`` iLQR's update
    ``actions + step_size * feedforward + gains @ (state - nominal)``."""
    states, taken = [start], []
    state = start
    for t, action in enumerate(actions):
        if gains is not None:
            action = action + step_size * feedforward[t] + gains[t] @ step.difference(state, nominal[t])
        action = np.clip(action, -1.0, 1.0)
        state = step(state, action)
        states.append(state)
        taken.append(action)
    return np.array(states), np.array(taken)


def backward_pass(
    cost: TrackingCost,
    states: np.ndarray,
    actions: np.ndarray,
    jacobians: list[tuple[np.ndarray, np.ndarray]],
    first_step: int,
    regularization: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """iLQR's feedback gains and feedforward terms, or ``None`` where the control Hessian is not positive definite."""
    horizon, nu = len(actions), cost.step.nu
    weights = cost.state_weights
    error = cost.error(states[horizon], first_step + horizon)
    value_gradient, value_hessian = weights * error, np.diag(weights)
    gains = np.zeros((horizon, nu, cost.step.tangent_size))
    feedforward = np.zeros((horizon, nu))
    eye = np.eye(nu)
    for t in range(horizon - 1, -1, -1):
        a, b = jacobians[t]
        pull = actions[t] - cost.reference_actions[first_step + t]
        q_x = a.T @ value_gradient
        q_u = cost.action_weight * pull + b.T @ value_gradient
        value_hessian_a, value_hessian_b = value_hessian @ a, value_hessian @ b
        q_xx = a.T @ value_hessian_a
        q_uu = cost.action_weight * eye + b.T @ value_hessian_b
        q_ux = b.T @ value_hessian_a
        if t > 0:  # The state cost of step t (the window's first state is given, not chosen).
            error = cost.error(states[t], first_step + t)
            q_x = q_x + weights * error
            q_xx = q_xx + np.diag(weights)
        # The gains solve the regularised system; the value's update uses the unregularised one (Tassa et al. 2012).
        try:
            factor = np.linalg.cholesky(q_uu + regularization * eye)
        except np.linalg.LinAlgError:
            return None
        right = np.concatenate([q_ux, q_u[:, None]], axis=1)
        solution = -np.linalg.solve(factor.T, np.linalg.solve(factor, right))
        gain, step_term = solution[:, :-1], solution[:, -1]
        gains[t], feedforward[t] = gain, step_term
        value_gradient = q_x + gain.T @ (q_uu @ step_term) + gain.T @ q_u + q_ux.T @ step_term
        value_hessian = q_xx + gain.T @ q_uu @ gain + gain.T @ q_ux + q_ux.T @ gain
        value_hessian = 0.5 * (value_hessian + value_hessian.T)
    return gains, feedforward


def ilqr(
    cost: TrackingCost,
    start: np.ndarray,
    actions: np.ndarray,
    first_step: int,
    iterations: int,
    tolerance: float = 0.01,
) -> IlqrResult:
    """Optimises ``actions`` from ``start`` (at snippet step ``first_step``): at most ``iterations`` iLQR
    iterations, stopping once one lowers the cost by less than ``tolerance`` of it."""
    step = cost.step
    states, actions = rollout(step, start, actions)
    total = cost.total(states, actions, first_step)
    regularization, floor, ceiling = REGULARIZATION
    gains = np.zeros((len(actions), step.nu, step.tangent_size))
    done = 0
    jacobians = None
    for _ in range(iterations):
        done += 1
        if jacobians is None:  # After a rejected step the trajectory, and so its derivatives, are unchanged.
            jacobians = [step.derivatives(states[t], actions[t]) for t in range(len(actions))]
        solved = backward_pass(cost, states, actions, jacobians, first_step, regularization)
        while solved is None and regularization < ceiling:
            regularization *= 10
            solved = backward_pass(cost, states, actions, jacobians, first_step, regularization)
        if solved is None:
            break
        gains, feedforward = solved
        previous = total
        accepted = False
        for step_size in LINE_SEARCH:
            new_states, new_actions = rollout(step, start, actions, states, gains, feedforward, step_size)
            new_total = cost.total(new_states, new_actions, first_step)
            if new_total < total:
                states, actions, total, accepted = new_states, new_actions, new_total, True
                jacobians = None
                break
        regularization = max(regularization / 3, floor) if accepted else regularization * 10
        if (not accepted and regularization > ceiling) or (accepted and previous - total < tolerance * previous):
            break
    return IlqrResult(states, actions, total, gains, done)


@dataclass
class TrackingPlan:
    """A whole snippet's optimised trajectory from its start: ``states`` (``T + 1``), ``actions`` and ``gains``
    (``T``), and each window's cost."""

    states: np.ndarray
    actions: np.ndarray
    gains: np.ndarray
    window_costs: list[float]

    def feedback_action(self, step: ControlStep, state: np.ndarray, time_step: int) -> np.ndarray:
        """The plan's action at ``time_step`` with its linear feedback on ``state``'s distance from the plan."""
        correction = self.gains[time_step] @ step.difference(state, self.states[time_step])
        return np.clip(self.actions[time_step] + correction, -1.0, 1.0)


def receding_horizon_plan(
    cost: TrackingCost,
    start: np.ndarray,
    num_steps: int,
    horizon: int = 30,
    commit: int = 10,
    iterations: int = 8,
    tolerance: float = 0.01,
    progress: Callable[[int, float], None] | None = None,
) -> TrackingPlan:
    """Plans ``num_steps`` steps from ``start`` (the snippet's first state) window by window, each window
    warm-started from the previous one's remaining actions and the reference actions after them.

    ``progress(steps_kept, window_cost)`` is called after each window."""
    if horizon < 1 or iterations < 1:
        raise ValueError(f"horizon and iterations must be >= 1, got {horizon} and {iterations}.")
    if not 0 < commit <= horizon:
        raise ValueError(f"commit must be in [1, horizon={horizon}], got {commit}.")
    if len(cost.reference_qpos) <= num_steps:
        raise ValueError(
            f"the reference has {len(cost.reference_qpos)} steps; planning {num_steps} needs {num_steps + 1}."
        )
    states, actions, gains, costs = [start], [], [], []
    state, first, carried = start, 0, np.zeros((0, cost.step.nu))
    while first < num_steps:
        length = min(horizon, num_steps - first)
        guess = np.concatenate([carried, cost.reference_actions[first + len(carried) : first + length]])[:length]
        window = ilqr(cost, state, guess, first, iterations, tolerance)
        kept = min(commit, num_steps - first)
        states.extend(window.states[1 : kept + 1])
        actions.extend(window.actions[:kept])
        gains.extend(window.gains[:kept])
        costs.append(window.cost)
        state, carried, first = window.states[kept], window.actions[kept:], first + kept
        if progress is not None:
            progress(first, window.cost)
    return TrackingPlan(np.array(states), np.array(actions), np.array(gains), costs)
