r"""PPO with GAE on a tabular MDP (chapter 4): a softmax policy table and a value table, trained from samples.

The same algorithm the book later runs on a language model, on a grid world where the exact answer is
known (chapter 3's :func:`rlhf_edu.numpy.mdp.policy_evaluation` and :func:`value_iteration`), so every
iteration can log how far the policy is from the optimum and how wrong the critic is.

- :func:`sample_episodes` rolls out a policy table in an MDP: a batch of episodes as (B, T) arrays, with
  ``dones`` (terminated) kept apart from truncation at ``max_steps``;
- :func:`train_tabular_ppo` is the PPO loop (Schulman et al., 2017) with GAE (Schulman et al., 2016), using the
  library's ``rlhf_edu.torch`` losses: ``gae``, ``whiten``, ``ppo_clip_loss``, ``value_loss``, ``entropy``,
  ``kl_divergence_from_logits``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from rlhf_edu import torch as rt
from rlhf_edu.numpy.mdp import TabularMDP, policy_evaluation, value_iteration
from rlhf_edu.train.history import History
from rlhf_edu.train.loop import check_finite_grads, check_finite_loss
from rlhf_edu.validation import (
    check_in_range,
    check_integer,
    check_nonnegative,
    check_positive,
    check_probabilities,
)

__all__ = ["Episodes", "sample_episodes", "train_tabular_ppo"]


@dataclasses.dataclass
class Episodes:
    """A batch of B episodes of at most T steps, as (B, T) arrays (row = episode, column = time step).

    - ``states``, ``actions``: int arrays; after an episode ends its row repeats the last state (padding);
    - ``rewards``: :math:`r(s_t, a_t)`, 0 on padding;
    - ``dones``: 1 where the episode **terminated** after step t (entered a terminal state), and on padding;
      0 at the last step of a row cut by ``max_steps`` (**truncated**: the episode goes on, so its return
      is bootstrapped with :math:`V(s_T)`);
    - ``mask``: 1 on real steps, 0 on padding;
    - ``final_states`` (B,): the state after each row's last real step; ``truncated`` (B,): rows cut by
      ``max_steps``.
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    mask: np.ndarray
    final_states: np.ndarray
    truncated: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Number of real steps of each episode, shape (B,)."""
        return self.mask.sum(axis=1).astype(int)


def _start_states(mdp, start, n, rng):
    live = np.flatnonzero(~mdp.terminal)
    if start is None:  # uniform over the non-terminal states
        return rng.choice(live, size=n)
    starts = np.broadcast_to(np.asarray(start), (n,)).astype(int) if np.ndim(start) == 0 else np.asarray(start)
    if starts.shape != (n,) or starts.dtype.kind not in "iu":
        raise ValueError(f"start must be None, a state index or {n} state indices, got {start!r}")
    if np.any((starts < 0) | (starts >= mdp.n_states)):
        raise ValueError(f"start must hold state indices in [0, {mdp.n_states}), got {start!r}")
    if np.any(mdp.terminal[starts]):
        raise ValueError("start must not be a terminal state (the episode would have no step)")
    return starts


def _categorical(cum_probs, rng):
    """One draw per row from the distributions whose cumulative sums are the rows of ``cum_probs``."""
    u = rng.random(cum_probs.shape[0])[:, None]
    return np.minimum((u >= cum_probs).sum(axis=1), cum_probs.shape[1] - 1)


def sample_episodes(mdp, policy, n_episodes, max_steps, start=None, rng=None) -> Episodes:
    r"""Roll out ``policy`` (S, A) in ``mdp`` for ``n_episodes`` episodes of at most ``max_steps`` steps.

    Each step draws :math:`a_t \sim \pi(\cdot|s_t)`, pays :math:`r(s_t, a_t)` (the MDP's expected reward)
    and draws :math:`s_{t+1} \sim P(\cdot|s_t, a_t)`; an episode ends when it enters a terminal state.
    ``start``: ``None`` (uniform over non-terminal states), a state index, or one index per episode.
    ``rng``: a seed or a ``numpy.random.Generator``. All episodes run in parallel (vectorised over B).

    Source: the agent-environment loop of the lecture notes; Sutton & Barto (2018), chapter 3.
    Used in chapter 4.

    >>> from rlhf_edu.numpy.mdp import two_by_two_world
    >>> mdp, _ = two_by_two_world()
    >>> ep = sample_episodes(mdp, np.full((4, 4), 0.25), n_episodes=3, max_steps=5, start=0, rng=0)
    >>> ep.states.shape, bool(np.all(ep.states[:, 0] == 0))
    ((3, 5), True)
    """
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp must be a rlhf_edu.numpy.mdp.TabularMDP, got {type(mdp).__name__}")
    policy = np.asarray(policy, dtype=np.float64)
    if policy.shape != (mdp.n_states, mdp.n_actions):
        raise ValueError(f"policy must have shape (S, A) = {(mdp.n_states, mdp.n_actions)}, got {policy.shape}")
    check_probabilities("policy", policy, axis=-1, atol=1e-5)
    B = check_integer("n_episodes", n_episodes, minimum=1)
    T = check_integer("max_steps", max_steps, minimum=1)
    rng = np.random.default_rng(rng)
    s = _start_states(mdp, start, B, rng)
    cum_pi = np.cumsum(policy, axis=1)
    cum_P = np.cumsum(mdp.transitions, axis=2)
    states = np.zeros((B, T), dtype=np.int64)
    actions = np.zeros((B, T), dtype=np.int64)
    rewards = np.zeros((B, T))
    dones = np.ones((B, T))
    mask = np.zeros((B, T))
    alive = np.ones(B, dtype=bool)
    for t in range(T):
        a = _categorical(cum_pi[s], rng)
        s_next = _categorical(cum_P[s, a], rng)
        states[:, t], actions[:, t] = s, a
        rewards[:, t] = np.where(alive, mdp.rewards[s, a], 0.0)
        mask[:, t] = alive
        ended = mdp.terminal[s_next]
        dones[:, t] = np.where(alive, ended, 1.0)
        s = np.where(alive, s_next, s)  # finished rows stay put (padding)
        alive = alive & ~ended
    return Episodes(states, actions, rewards, dones, mask, final_states=s, truncated=alive.copy())


def train_tabular_ppo(
    mdp,
    *,
    start=None,
    iterations: int = 40,
    episodes_per_iteration: int = 32,
    max_steps: int = 30,
    lam: float = 0.95,
    clip_eps: float = 0.2,
    epochs: int = 4,
    n_minibatches: int = 2,
    lr_policy: float = 0.1,
    lr_value: float = 0.3,
    value_clip: float | None = None,
    entropy_coef: float = 0.0,
    kl_coef: float = 0.0,
    value_coef: float = 1.0,
    whiten_advantages: bool = True,
    bootstrap_truncated: bool = True,
    return_critic: bool = False,
    seed: int = 0,
):
    r"""Train a softmax policy table with PPO-clip and GAE on ``mdp``; returns ``(policy, history)``.

    Parameters: logits :math:`\theta` (S, A), :math:`\pi_\theta(\cdot|s) = \mathrm{softmax}(\theta_s)`,
    starting uniform; a value table :math:`V_w` (S,), starting at 0. Each iteration:

    1. sample ``episodes_per_iteration`` episodes with the current policy (:func:`sample_episodes`);
    2. with the critic **as it is now** (frozen for this batch): GAE advantages and returns,
       :math:`\hat A = \mathrm{GAE}(\gamma, \lambda)`, :math:`\hat R = \hat A + V_{old}`, bootstrapping rows
       cut by ``max_steps`` with :math:`V(s_T)` (``bootstrap_truncated=True``; ``False`` treats truncation
       as termination, a classic bug); whitened over the batch if ``whiten_advantages``;
    3. ``epochs`` passes over ``n_minibatches`` minibatches of episodes, minimising the notes' full loss
       (the negative of :math:`L_{clip} + w_1 H - w_2 KL - w_3 L_V`):

       .. math:: \mathcal L = -L_{clip}(\theta) - w_1 H(\pi_\theta) + w_2\,
          \mathrm{KL}(\pi_{orig} \| \pi_\theta) + w_3\, L_V(w)

       with :math:`w_1` = ``entropy_coef``, :math:`w_2` = ``kl_coef`` (to the initial, uniform policy),
       :math:`w_3` = ``value_coef`` and ``value_clip`` the PPO2 value clipping (``None``: off), all means
       over the real steps. Adam with ``lr_policy`` for the logits and ``lr_value`` for the values.

    The history has one row per iteration: ``objective`` (the exact :math:`\sum_s d_0(s) V^\pi(s)` of the
    current policy, from chapter 3's policy evaluation), ``optimum`` (the same for :math:`V^*`), ``gap``,
    ``episode_return`` (mean discounted return of the sampled episodes from their start), ``length``,
    ``policy_loss``, ``value_loss``, ``entropy``, ``kl_ref``, ``clip_fraction``, ``approx_kl``,
    ``critic_error`` (:math:`\max_s |V_w(s) - V^\pi(s)|` before the update) and ``seconds``; plus a last
    row (``iteration = iterations``) with the ``objective`` and ``gap`` of the trained policy.
    With ``return_critic=True`` returns ``(policy, values, history)``. Deterministic for a ``seed``.

    Source: Schulman et al., "Proximal Policy Optimization Algorithms" (2017); Schulman et al.,
    "High-Dimensional Continuous Control Using Generalized Advantage Estimation" (2016); the lecture notes'
    PPO loss. Used in chapter 4.

    >>> from rlhf_edu.numpy.mdp import two_by_two_world
    >>> policy, history = train_tabular_ppo(two_by_two_world()[0], start=0, iterations=15)
    >>> round(history.last("objective"), 1), history.last("optimum")
    (-2.0, -2.0)
    """
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp must be a rlhf_edu.numpy.mdp.TabularMDP, got {type(mdp).__name__}")
    iterations = check_integer("iterations", iterations, minimum=1)
    B = check_integer("episodes_per_iteration", episodes_per_iteration, minimum=1)
    T = check_integer("max_steps", max_steps, minimum=1)
    epochs = check_integer("epochs", epochs, minimum=1)
    n_minibatches = check_integer("n_minibatches", n_minibatches, minimum=1)
    if n_minibatches > B:
        raise ValueError(f"n_minibatches ({n_minibatches}) must be at most episodes_per_iteration ({B})")
    check_in_range("lam", lam, 0.0, 1.0)
    check_in_range("clip_eps", clip_eps, 0.0, 1.0, low_open=True, high_open=True)
    check_positive("lr_policy", lr_policy)
    check_positive("lr_value", lr_value)
    for name, value in (("entropy_coef", entropy_coef), ("kl_coef", kl_coef), ("value_coef", value_coef)):
        check_nonnegative(name, value)
    if value_clip is not None:
        check_positive("value_clip", value_clip)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tables of a few dozen numbers: extra threads only add overhead (10x here)
    try:
        return _tabular_ppo(mdp, start, iterations, B, T, lam, clip_eps, epochs, n_minibatches, lr_policy,
                            lr_value, value_clip, entropy_coef, kl_coef, value_coef, whiten_advantages,
                            bootstrap_truncated, return_critic, seed)
    finally:
        torch.set_num_threads(threads)


def _tabular_ppo(mdp, start, iterations, B, T, lam, clip_eps, epochs, n_minibatches, lr_policy, lr_value,
                 value_clip, entropy_coef, kl_coef, value_coef, whiten_advantages, bootstrap_truncated,
                 return_critic, seed):
    """The loop of :func:`tabular_ppo` (arguments already checked)."""
    rng = np.random.default_rng(seed)
    shuffle = torch.Generator().manual_seed(seed)
    S, A = mdp.n_states, mdp.n_actions
    logits = torch.zeros(S, A, dtype=torch.float64, requires_grad=True)
    values = torch.zeros(S, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([{"params": [logits], "lr": lr_policy}, {"params": [values], "lr": lr_value}])
    ref_logits = logits.detach().clone()  # pi_orig of the KL term: the starting policy
    terminal = torch.as_tensor(mdp.terminal)

    # d0: the start distribution, to score a policy exactly by sum_s d0(s) V(s)
    live = np.flatnonzero(~mdp.terminal)
    d0 = np.zeros(S)
    if start is None:
        d0[live] = 1.0 / live.size
    else:
        np.add.at(d0, _start_states(mdp, start, np.size(start), rng), 1.0 / np.size(start))
    optimum = float(d0 @ value_iteration(mdp)[0])

    history = History("tabular_ppo", dict(iterations=iterations, episodes_per_iteration=B, max_steps=T, lam=lam,
                                          clip_eps=clip_eps, epochs=epochs, n_minibatches=n_minibatches,
                                          lr_policy=lr_policy, lr_value=lr_value, value_clip=value_clip,
                                          entropy_coef=entropy_coef, kl_coef=kl_coef, value_coef=value_coef,
                                          whiten_advantages=whiten_advantages,
                                          bootstrap_truncated=bootstrap_truncated, seed=seed))
    t0 = time.perf_counter()
    for iteration in range(iterations):
        # 1. rollouts with the current policy
        probs = torch.softmax(logits.detach(), dim=-1).numpy()
        v_pi = policy_evaluation(mdp, probs)  # the exact answer, for the logs only
        ep = sample_episodes(mdp, probs, B, T, start=start, rng=rng)
        s, a = torch.as_tensor(ep.states), torch.as_tensor(ep.actions)
        rewards, dones, mask = (torch.as_tensor(x) for x in (ep.rewards, ep.dones, ep.mask))

        # 2. advantages and returns with the critic frozen at rollout time
        with torch.no_grad():
            v_old = torch.where(mask > 0, values[s], torch.zeros_like(rewards))
            logp_old = torch.log_softmax(logits, dim=-1)[s, a]
            final = torch.as_tensor(ep.final_states)
            bootstrap = torch.as_tensor(ep.truncated) & ~terminal[final]
            if not bootstrap_truncated:
                bootstrap = torch.zeros_like(bootstrap)
            last_value = torch.where(bootstrap, values[final], torch.zeros(B, dtype=torch.float64))
            adv, returns = rt.gae(rewards, v_old, mdp.gamma, lam, dones=dones, last_value=last_value)
            if whiten_advantages:
                adv = rt.whiten(adv, mask)
            critic_error = float((values - torch.as_tensor(v_pi)).abs()[~terminal].max())

        # 3. PPO epochs over minibatches of episodes
        for _ in range(epochs):
            for rows in torch.randperm(B, generator=shuffle).chunk(n_minibatches):
                m = mask[rows]
                logp_all = torch.log_softmax(logits[s[rows]], dim=-1)  # (b, T, A)
                logp = logp_all.gather(-1, a[rows].unsqueeze(-1)).squeeze(-1)
                policy_loss, stats = rt.ppo_clip_loss(logp, logp_old[rows], adv[rows], m, clip_eps,
                                                      return_stats=True)
                n_real = m.sum()
                entropy = (rt.entropy(logp_all.exp()) * m).sum() / n_real
                kl_ref = (rt.kl_divergence_from_logits(ref_logits[s[rows]], logp_all) * m).sum() / n_real
                v_loss = rt.value_loss(values[s[rows]], returns[rows], old_values=v_old[rows], clip=value_clip,
                                       mask=m)
                loss = policy_loss - entropy_coef * entropy + kl_coef * kl_ref + value_coef * v_loss
                check_finite_loss(loss, f"loss at iteration {iteration}")  # never write NaN into the logits
                optimizer.zero_grad()
                loss.backward()
                check_finite_grads([logits, values])
                optimizer.step()

        start_returns = rt.discounted_returns(rewards, mdp.gamma, dones=dones)[:, 0]
        history.log(iteration=iteration, objective=float(d0 @ v_pi), optimum=optimum,
                    gap=optimum - float(d0 @ v_pi), episode_return=start_returns.mean(),
                    length=float(ep.lengths.mean()), policy_loss=policy_loss, value_loss=v_loss,
                    entropy=entropy, kl_ref=kl_ref, clip_fraction=stats["clip_fraction"],
                    approx_kl=stats["approx_kl"], critic_error=critic_error, seconds=time.perf_counter() - t0)

    policy = torch.softmax(logits.detach(), dim=-1).numpy()
    # the last row's "objective" is the policy before the last update; log the final one too
    final_value = float(d0 @ policy_evaluation(mdp, policy))
    history.log(iteration=iterations, objective=final_value, optimum=optimum, gap=optimum - final_value,
                seconds=time.perf_counter() - t0)
    if return_critic:
        return policy, values.detach().numpy().copy(), history
    return policy, history
