"""Clip experts' actor-critic network and the running statistics that normalise them.

MoCapAct's experts are stable-baselines3 PPO policies behind ``VecNormalize``:
separate policy and value MLPs over the concatenated observation, a Gaussian
policy whose state-independent log std is a parameter (frozen at log 0.1), and
observations and rewards scaled by running statistics. The pieces here do the
same in plain torch and numpy so the trainer, evaluation, rollout collection and
the loader share one implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from mocapact_envs.policies.low_level import ACTIVATIONS, build_mlp, check_activation


class RunningMeanStd:
    """Mean and variance of a stream of arrays (Chan et al.'s parallel update), as SB3 keeps them."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        # A tiny starting count keeps the first update from dividing by zero.
        self.count = float(epsilon)

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, np.float64).reshape((-1, *self.mean.shape))
        if len(batch) == 0:
            return
        # np.mean and np.var's own arithmetic (sum, divide; square the deviations, sum, divide) without their
        # Python wrappers: this runs on every env step, for a handful of rows.
        batch_count = len(batch)
        batch_mean = batch.sum(axis=0) / batch_count
        deviation = batch - batch_mean
        batch_var = (deviation * deviation).sum(axis=0) / batch_count
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + np.square(delta) * self.count * batch_count / total
        self.var = m2 / total
        self.count = float(total)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "mean": np.array(self.mean, np.float64),
            "var": np.array(self.var, np.float64),
            "count": np.array([self.count]),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean = np.asarray(state["mean"], np.float64).copy()
        self.var = np.asarray(state["var"], np.float64).copy()
        self.count = float(np.asarray(state["count"]).reshape(-1)[0])


class ObservationNormalizer:
    """``clip((x - mean) / sqrt(var + epsilon), -clip, clip)`` over flat observations, as SB3's VecNormalize."""

    def __init__(self, size: int, clip: float = 10.0, epsilon: float = 1e-8, enabled: bool = True):
        self.size, self.clip, self.epsilon, self.enabled = size, float(clip), float(epsilon), enabled
        self.rms = RunningMeanStd((size,))

    def update(self, flat_observation: np.ndarray) -> None:
        if self.enabled:
            self.rms.update(flat_observation)

    def __call__(self, flat_observation: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return np.asarray(flat_observation, np.float32)
        scaled = (flat_observation - self.rms.mean) / np.sqrt(self.rms.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def config(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "clip": self.clip, "epsilon": self.epsilon}


class RewardNormalizer:
    """SB3 VecNormalize's reward scaling: rewards divided by the std of a running discounted return.

    ``valid`` marks the sub-environments whose step is a real transition: with
    Gymnasium's next-step autoreset the step after an episode end only resets,
    and its reward (0) must not enter the statistics.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8, enabled: bool = True):
        self.gamma, self.clip, self.epsilon, self.enabled = float(gamma), float(clip), float(epsilon), enabled
        self.return_rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs)

    @property
    def scale(self) -> float:
        """What a normalised reward (and so a critic's value) is multiplied by to undo the scaling."""
        return float(np.sqrt(self.return_rms.var + self.epsilon)) if self.enabled else 1.0

    def __call__(self, rewards: np.ndarray, dones: np.ndarray, valid: np.ndarray) -> np.ndarray:
        rewards = np.asarray(rewards, np.float64)
        if not self.enabled:
            return rewards.astype(np.float32)
        self.returns[valid] = self.returns[valid] * self.gamma + rewards[valid]
        self.return_rms.update(self.returns[valid])
        self.returns[np.asarray(dones, bool)] = 0.0
        return np.clip(rewards / self.scale, -self.clip, self.clip).astype(np.float32)

    def config(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "gamma": self.gamma, "clip": self.clip, "epsilon": self.epsilon}


def _orthogonal_init(out_gain: float) -> Callable[[nn.Linear, bool], None]:
    """SB3's orthogonal initialisation, for :func:`build_mlp`: gain sqrt(2) inside, ``out_gain`` on the output."""

    def initialize(layer: nn.Linear, is_output: bool) -> None:
        nn.init.orthogonal_(layer.weight, out_gain if is_output else math.sqrt(2))
        nn.init.zeros_(layer.bias)

    return initialize


class TimeFeatures(nn.Module):
    """Appends ``sin`` and ``cos`` of ``k * pi / 2`` times one observation column (the normalised time in the
    snippet), ``k = 1 .. count``: Fourier features that let an MLP tell apart nearby steps of a long snippet,
    which a single scalar input resolves poorly. No parameters, so state dicts are unchanged."""

    def __init__(self, column: int, count: int):
        super().__init__()
        self.column, self.count = int(column), int(count)
        frequencies = torch.arange(1, self.count + 1, dtype=torch.float32) * (math.pi / 2)
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        if not self.count:
            return observation
        phase = observation[..., self.column : self.column + 1] * self.frequencies
        return torch.cat([observation, torch.sin(phase), torch.cos(phase)], dim=-1)


def clipped_normal_log_prob(distribution: Normal, action: torch.Tensor, bound: float) -> torch.Tensor:
    """Per-dimension log-likelihood of ``clip(action, -bound, bound)`` under ``distribution``.

    An env that clips a Gaussian's samples executes a distribution with a point mass at each bound: every
    sample past the bound is the same action. Its log-likelihood there is ``log P(x >= bound)`` (or
    ``log P(x <= -bound)``), not the density of the sample, so a mean already past a bound gets no gradient
    from noise that changed nothing the env saw (Fujita and Maeda, "Clipped action policy gradient", 2018).
    Inside the bounds it is the Gaussian's density."""
    mean, std = distribution.loc, distribution.scale
    upper = torch.special.log_ndtr((mean - bound) / std)  # log P(x >= bound)
    lower = torch.special.log_ndtr((-bound - mean) / std)  # log P(x <= -bound)
    inside = distribution.log_prob(action)
    return torch.where(action >= bound, upper, torch.where(action <= -bound, lower, inside))


class _GaussianActorCritic:
    """What PPO asks of an actor-critic with a state-independent Gaussian policy: ``input_features``,
    ``actor_mean``, ``critic`` and ``log_std`` are the subclass's; ``action_offset`` (the reference actions of
    residual experts) is added to the network's mean."""

    input_features: nn.Module
    actor_mean: nn.Module
    critic: nn.Module
    log_std: nn.Parameter

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        return self.critic(self.input_features(observation)).squeeze(-1)

    def mean_action(self, observation: torch.Tensor, action_offset: torch.Tensor | None = None) -> torch.Tensor:
        """The policy's mean; ``action_offset`` (for example the reference actions) is added to the network's output."""
        mean = self.actor_mean(self.input_features(observation))
        return mean if action_offset is None else mean + action_offset

    def distribution(self, observation: torch.Tensor, action_offset: torch.Tensor | None = None) -> Normal:
        mean = self.mean_action(observation, action_offset)
        std = self.log_std.exp()
        if mean.dim() > std.dim():  # a batch: one std row per expert, the same for every observation
            std = std.unsqueeze(-2)
        # No argument validation: it checks every step that the std is positive, which exp() guarantees.
        return Normal(mean, std.expand_as(mean), validate_args=False)

    def act(
        self, observation: torch.Tensor, deterministic: bool = False, action_offset: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unclipped actions: the mean, or a sample."""
        if deterministic:
            return self.mean_action(observation, action_offset)
        return self.distribution(observation, action_offset).sample()

    def action_and_value(
        self,
        observation: torch.Tensor,
        action: torch.Tensor | None = None,
        action_offset: torch.Tensor | None = None,
        action_bound: float | None = None,
    ):
        """A sampled (or the given) action, its log probability, the entropy and the value, as PPO needs.

        With ``action_bound`` the log probability is that of the action the env executes,
        ``clip(action, -bound, bound)`` (:func:`clipped_normal_log_prob`); without it, the Gaussian's density."""
        distribution = self.distribution(observation, action_offset)
        if action is None:
            action = distribution.sample()
        if action_bound is None:
            log_prob = distribution.log_prob(action)
        else:
            log_prob = clipped_normal_log_prob(distribution, action, action_bound)
        return action, log_prob.sum(-1), distribution.entropy().sum(-1), self.value(observation)


class ExpertActorCritic(_GaussianActorCritic, nn.Module):
    """Separate policy and value MLPs over a normalised flat observation; Gaussian actions.

    The policy's standard deviation is ``exp(log_std)``, one per action, independent
    of the observation; MoCapAct keeps it frozen at 0.1 (``learn_log_std=False``).
    """

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        policy_hidden_sizes: Sequence[int] = (1024, 1024, 1024),
        value_hidden_sizes: Sequence[int] = (1024, 1024, 1024),
        activation: str = "tanh",
        log_std_init: float = math.log(0.1),
        learn_log_std: bool = False,
        time_features: int = 0,
        time_column: int = 0,
    ):
        super().__init__()
        check_activation(activation)
        if time_features < 0 or not 0 <= time_column < observation_size:
            raise ValueError(
                f"time_features must be >= 0 and time_column in [0, {observation_size}); got {time_features} and "
                f"{time_column}."
            )
        self.observation_size, self.action_size = int(observation_size), int(action_size)
        self.policy_hidden_sizes = tuple(int(s) for s in policy_hidden_sizes)
        self.value_hidden_sizes = tuple(int(s) for s in value_hidden_sizes)
        self.activation = activation
        self.learn_log_std = bool(learn_log_std)
        self.input_features = TimeFeatures(time_column, time_features)
        input_size = observation_size + 2 * self.input_features.count
        # Small last-layer gains as SB3: near-zero mean actions and values at the start.
        mlp = dict(activation=activation, layer_norm=False)
        self.actor_mean = build_mlp(
            input_size, self.policy_hidden_sizes, action_size, **mlp, initialize=_orthogonal_init(0.01)
        )
        self.critic = build_mlp(input_size, self.value_hidden_sizes, 1, **mlp, initialize=_orthogonal_init(1.0))
        self.log_std = nn.Parameter(torch.full((action_size,), float(log_std_init)), requires_grad=learn_log_std)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON (``log_std`` itself lives with the weights)."""
        return {
            "observation_size": self.observation_size,
            "action_size": self.action_size,
            "policy_hidden_sizes": list(self.policy_hidden_sizes),
            "value_hidden_sizes": list(self.value_hidden_sizes),
            "activation": self.activation,
            "learn_log_std": self.learn_log_std,
        } | (  # only where used, so experts without them keep their config
            {"time_features": self.input_features.count, "time_column": self.input_features.column}
            if self.input_features.count
            else {}
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ExpertActorCritic:
        keys = ("observation_size", "action_size", "policy_hidden_sizes", "value_hidden_sizes", "activation")
        return cls(
            **{k: config[k] for k in keys},
            learn_log_std=bool(config.get("learn_log_std", False)),
            time_features=int(config.get("time_features", 0)),
            time_column=int(config.get("time_column", 0)),
        )


class _BatchedMLP(nn.Module):
    """K independent MLPs of one shape, evaluated together: inputs ``(K, B, in)``, outputs ``(K, B, out)``.

    Layer ``i`` keeps ``weights[i]`` as ``(K, out, in)`` and ``biases[i]`` as ``(K, out)``, so
    ``weights[i][k]`` is exactly the ``nn.Linear`` weight of network ``k``'s layer ``i``.
    """

    def __init__(self, mlps: Sequence[nn.Sequential], activation: str):
        super().__init__()
        linears = [[layer for layer in mlp if isinstance(layer, nn.Linear)] for mlp in mlps]
        self.weights = nn.ParameterList(
            [torch.stack([net[i].weight.detach() for net in linears]) for i in range(len(linears[0]))]
        )
        self.biases = nn.ParameterList(
            [torch.stack([net[i].bias.detach() for net in linears]) for i in range(len(linears[0]))]
        )
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Parameters read from the lists' own dict: iterating a ParameterList of three costs about 6 us, a third
        # of one 4 x 256 x 256 layer, on every rollout step.
        weights, biases = self.weights._parameters.values(), self.biases._parameters.values()
        for i, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
            if i:
                x = self.activation(x)
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        return x


class ExpertEnsemble(_GaussianActorCritic, nn.Module):
    """K independent :class:`ExpertActorCritic` networks of one architecture, computed as batched tensor operations.

    Inputs and outputs carry a leading expert axis: observations ``(K, B, D)``, actions ``(K, B, A)``,
    values and log probabilities ``(K, B)``. Summing the K experts' losses trains each on its own loss:
    they share no parameter (gradient clipping is per expert, :meth:`clip_grad_norm_`).
    :meth:`expert` and :meth:`load_expert_state` convert expert ``k`` to and from an ``ExpertActorCritic``
    state dict, so each expert is saved and resumed exactly as a single one.
    """

    def __init__(self, experts: Sequence[ExpertActorCritic]):
        super().__init__()
        first = experts[0]
        if any(e.config() != first.config() for e in experts):
            raise ValueError("the experts of an ensemble must share one architecture.")
        self.num_experts = len(experts)
        self.single_config = first.config()
        self.input_features = first.input_features  # parameter-free, and the same for every expert
        self.actor_mean = _BatchedMLP([e.actor_mean for e in experts], first.activation)
        self.critic = _BatchedMLP([e.critic for e in experts], first.activation)
        self.log_std = nn.Parameter(
            torch.stack([e.log_std.detach() for e in experts]), requires_grad=first.learn_log_std
        )
        # The ensemble parameter behind each ExpertActorCritic state-dict key (Linear layers sit at even
        # indices of its Sequential MLPs, activations between them).
        batched = {"log_std": self.log_std}
        for name, mlp in (("actor_mean", self.actor_mean), ("critic", self.critic)):
            for i, (weight, bias) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
                batched[f"{name}.{2 * i}.weight"], batched[f"{name}.{2 * i}.bias"] = weight, bias
        self._single_keys = list(first.state_dict())
        if set(batched) != set(self._single_keys):
            raise AssertionError(f"ensemble keys {sorted(batched)} differ from {self._single_keys}.")
        self._batched = [batched[key] for key in self._single_keys]

    def expert(self, k: int) -> ExpertActorCritic:
        """Expert ``k`` as a standalone network (a copy)."""
        single = ExpertActorCritic.from_config(self.single_config)
        single.load_state_dict(self.expert_state(k))
        return single

    def expert_state(self, k: int) -> dict[str, torch.Tensor]:
        """Expert ``k``'s weights under ``ExpertActorCritic``'s state-dict keys."""
        return {key: p[k].detach().clone() for key, p in zip(self._single_keys, self._batched, strict=True)}

    @torch.no_grad()
    def load_expert_state(self, k: int, state: Mapping[str, torch.Tensor]) -> None:
        missing = set(self._single_keys) ^ set(state)
        if missing:
            raise ValueError(f"the expert state does not match the ensemble's architecture (keys {sorted(missing)}).")
        for key, p in zip(self._single_keys, self._batched, strict=True):
            if p[k].shape != state[key].shape:
                raise ValueError(f"{key}: shape {tuple(state[key].shape)}, the ensemble's is {tuple(p[k].shape)}.")
            p[k].copy_(state[key])

    def expert_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Pairs of (``ExpertActorCritic`` state-dict key, ensemble parameter with a leading expert axis)."""
        return list(zip(self._single_keys, self._batched, strict=True))

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Each expert's gradients scaled to a total norm of at most ``max_norm``; the K norms before clipping."""
        grads = [p.grad for p in self._batched if p.grad is not None]
        norms = torch.stack([g.reshape(self.num_experts, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
        return norms
