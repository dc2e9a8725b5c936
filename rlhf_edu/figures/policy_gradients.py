r"""Slide figures of chapter 4 (policy gradients, PPO and GAE), and the measurements behind them.

Figure functions take only keyword arguments with defaults (the chapter's widgets change them) and
return a matplotlib ``Figure``:

- :func:`reinforce_bandit_figure` (``ch04_reinforce_bandit``): sampled policy-gradient steps on the notes'
  two-action example;
- :func:`baseline_variance_figure` (``ch04_baseline_variance``): a baseline leaves the REINFORCE gradient's
  mean alone and changes its spread (the notes' "best way to learn / sleep" example);
- :func:`gae_bias_variance_figure` (``ch04_gae_bias_variance``): bias and variance of GAE(lambda)
  advantages against the exact ones of chapter 3, Monte Carlo (lambda = 1) to TD(0) (lambda = 0);
- :func:`clip_objective_figure` (``ch04_clip_objective``): PPO's clipped objective against the ratio, for
  A > 0 and A < 0, with the notes' "unlimited" example;
- :func:`value_clip_figure` (``ch04_value_clip``): PPO2's clipped value loss;
- :func:`tabular_ppo_figure` (``ch04_tabular_ppo``): PPO with GAE on the classic grid world against the
  optimum.

The measurements :func:`learn_sleep_bandit`, :func:`reinforce_gradient_moments` and
:func:`gae_bias_variance` are public: the chapter prints their numbers.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from rlhf_edu.figures import slide_figure
from rlhf_edu.numpy.advantages import gae
from rlhf_edu.numpy.mdp import action_values, classic_grid_world, grid_world, policy_evaluation, value_iteration
from rlhf_edu.numpy.policy_gradient import ppo_clip_objective, value_loss

__all__ = [
    "learn_sleep_bandit",
    "reinforce_bandit_figure",
    "reinforce_gradient_moments",
    "baseline_variance_figure",
    "bias_variance_world",
    "gae_bias_variance",
    "gae_bias_variance_figure",
    "clip_objective_figure",
    "value_clip_figure",
    "tabular_ppo_figure",
]


# --------------------------------------------------------------------------------------------------
# REINFORCE and baselines
# --------------------------------------------------------------------------------------------------


def learn_sleep_bandit():
    """The notes' example as a one-step problem: state "The best way to", actions ("learn", "sleep").

    Returns ``(actions, q, pi)``: ``q = (0.9, 0.2)``; the notes give :math:`V = 0.6` without the policy, and
    :math:`V = \\sum_a \\pi(a) Q(a)` forces :math:`\\pi(\\text{learn}) = 4/7`.
    """
    q = np.array([0.9, 0.2])
    p_learn = (0.6 - q[1]) / (q[0] - q[1])  # solve p * 0.9 + (1 - p) * 0.2 = 0.6
    return ("learn", "sleep"), q, np.array([p_learn, 1.0 - p_learn])


def reinforce_gradient_moments(pi, rewards, baseline):
    r"""Exact mean and total variance of the one-sample REINFORCE estimate for a softmax policy.

    With logits :math:`\theta`, :math:`\nabla_\theta \log\pi(a) = e_a - \pi`, and the estimate
    :math:`g(a) = (r(a) - b)(e_a - \pi)`, :math:`a \sim \pi`. Returns ``(mean, variance)``: the mean vector
    :math:`\sum_a \pi(a) g(a)` (it does not depend on b) and :math:`\mathbb E\|g - \mathbb E g\|^2`
    (summed over the logits), computed by enumerating the actions, no sampling.

    >>> mean, var = reinforce_gradient_moments(np.array([0.5, 0.5]), np.array([1.0, 0.0]), 0.0)
    >>> mean.tolist(), float(var)
    ([0.25, -0.25], 0.125)
    """
    pi, rewards = np.asarray(pi, dtype=float), np.asarray(rewards, dtype=float)
    grads = (rewards - baseline)[:, None] * (np.eye(pi.size) - pi[None, :])  # row a: g(a)
    mean = pi @ grads
    variance = pi @ np.sum((grads - mean) ** 2, axis=1)
    return mean, variance


@slide_figure("ch04_baseline_variance")
def baseline_variance_figure(n_samples=1):
    """Mean and standard deviation of the REINFORCE gradient (logit of "learn") against the baseline b.

    ``n_samples``: the estimate averages that many samples (its standard deviation shrinks by sqrt(n)).
    """
    actions, q, pi = learn_sleep_bandit()
    bs = np.linspace(-1.0, 2.0, 121)
    means, stds = [], []
    for b in bs:
        grads = (q - b)[:, None] * (np.eye(2) - pi[None, :])
        m = pi @ grads
        means.append(m[0])
        stds.append(np.sqrt(pi @ (grads[:, 0] - m[0]) ** 2 / n_samples))
    means, stds = np.array(means), np.array(stds)
    fig, ax = plt.subplots(figsize=(6.6, 3.6), layout="constrained")
    ax.fill_between(bs, means - stds, means + stds, color="C0", alpha=0.2, label="mean $\\pm$ 1 std")
    ax.plot(bs, means, color="C0", label="mean (the true gradient)")
    best = bs[int(np.argmin(stds))]
    top = ax.get_ylim()[1]
    for b, name, color, y in ((0.0, "b = 0 (plain REINFORCE)", "C3", 0.95), (0.6, "b = V = 0.6 (the notes)", "C2", 0.8),
                              (best, f"least spread: b = {best:.2f}", "0.4", 0.65)):
        ax.axvline(b, color=color, ls="--", lw=1)
        ax.text(b, top * y, " " + name, color=color, fontsize=8, va="top")
    ax.set_xlabel("baseline b (reward units)")
    ax.set_ylabel("$\\partial J / \\partial \\theta_{learn}$ estimate")
    ax.set_title(f"A baseline moves the spread, not the mean ({n_samples} sample{'s' if n_samples > 1 else ''})")
    ax.legend(fontsize=8, loc="lower right")
    return fig


@slide_figure("ch04_reinforce_bandit")
def reinforce_bandit_figure(lr=0.5, steps=60, runs=8, reward_noise=0.3, seed=0):
    r"""Policy gradient in one picture: pi("learn") under sampled REINFORCE updates and under the exact gradient.

    The notes' two actions with rewards 0.9 ("learn") and 0.2 ("sleep") plus Gaussian noise
    (``reward_noise``, a reward model is never exact), a softmax policy starting at pi(learn) = 4/7; each
    sampled run draws one action per step and moves the logits by ``lr * (r - b) * grad log pi`` with a
    running-mean baseline b; the thick line follows the exact gradient :math:`\pi \odot (r - \pi \cdot r)`.
    """
    actions, q, pi0 = learn_sleep_bandit()
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    for run in range(runs):
        theta, baseline, curve = np.log(pi0), float(pi0 @ q), []
        for _ in range(steps):
            pi = np.exp(theta - theta.max())
            pi /= pi.sum()
            curve.append(pi[0])
            a = int(rng.random() >= pi[0])  # 0: learn, 1: sleep
            r = q[a] + reward_noise * rng.normal()
            theta = theta + lr * (r - baseline) * (np.eye(2)[a] - pi)  # REINFORCE with a baseline
            baseline = 0.9 * baseline + 0.1 * r
        ax.plot(curve, color="C0", alpha=0.35, lw=1, label="sampled REINFORCE runs" if run == 0 else None)
    theta, curve = np.log(pi0), []
    for _ in range(steps):
        pi = np.exp(theta - theta.max())
        pi /= pi.sum()
        curve.append(pi[0])
        theta = theta + lr * pi * (q - pi @ q)  # the exact gradient of sum_a pi(a) r(a)
    ax.plot(curve, color="k", lw=2.2, label="exact gradient ascent")
    ax.set_xlabel("update step (one sampled action each)")
    ax.set_ylabel('probability of "learn"')
    ax.set_ylim(0, 1.02)
    ax.set_title('Try, score, reinforce: "learn" (0.9) beats "sleep" (0.2)')
    ax.legend(fontsize=8, loc="lower right")
    return fig


# --------------------------------------------------------------------------------------------------
# GAE: bias and variance against the exact advantage
# --------------------------------------------------------------------------------------------------


def bias_variance_world(slip=0.1, epsilon=0.5, critic_noise=3.0, seed=1):
    r"""The setting of the chapter's bias-variance experiment: ``(mdp, policy, critic)``.

    Sutton & Barto's 4x4 world (-1 per move, gamma = 1) with slippery moves (``slip``), the
    :math:`\epsilon`-soft optimal policy :math:`(1-\epsilon)\pi^* + \epsilon/4`, and an imperfect critic
    :math:`\hat V = V^\pi + ` ``critic_noise`` :math:`\cdot z`, :math:`z \sim N(0, 1)` fixed per state (0 at
    the terminal states).
    """
    mdp, _ = grid_world((4, 4), terminals=[(0, 0), (3, 3)], step_reward=-1.0, off_grid_reward=-1.0,
                        gamma=1.0, slip=slip)
    _, pi_star = value_iteration(mdp)
    policy = (1.0 - epsilon) * pi_star + epsilon / mdp.n_actions
    v_pi = policy_evaluation(mdp, policy)
    z = np.random.default_rng(seed).normal(size=mdp.n_states)
    critic = np.where(mdp.terminal, 0.0, v_pi + critic_noise * z)
    return mdp, policy, critic


def gae_bias_variance(mdp, policy, critic, lams, n_episodes=4000, max_steps=60, seed=0, return_samples=None):
    r"""Squared bias and variance of GAE(lambda) advantages, measured against the exact answer.

    Samples ``n_episodes`` episodes (starts uniform over non-terminal states), computes
    ``gae(rewards, critic[states], gamma, lam, dones, last_value)`` for each ``lam``, and compares each
    step's advantage with its target :math:`Q^\pi(s,a) - \hat V(s)` (exact :math:`Q^\pi` from chapter 3's
    ``action_values(mdp, policy_evaluation(mdp, policy))``). The critic's own error at :math:`s_t` only
    shifts the baseline, which leaves the policy gradient unbiased, so the target subtracts :math:`\hat V`;
    with an exact critic it is :math:`A^\pi(s,a)`. Per (s, a) pair: bias = mean error, variance = variance
    of the error; both are averaged over the pairs, weighted by visits.

    Returns ``{"lam", "bias2", "variance", "mse"}`` (arrays over ``lams``); with ``return_samples=(s, a)``
    also ``"samples"``: for each lambda the advantages of every visit of that pair, and ``"target"``.
    """
    from rlhf_edu.train.tabular_ppo import sample_episodes  # the same sampler as the PPO loop

    ep = sample_episodes(mdp, policy, n_episodes, max_steps, rng=seed)
    q = action_values(mdp, policy_evaluation(mdp, policy))
    values = np.where(ep.mask > 0, critic[ep.states], 0.0)
    last = np.where(ep.truncated, critic[ep.final_states], 0.0)
    target = q[ep.states, ep.actions] - critic[ep.states]
    real = ep.mask > 0
    pair = (ep.states * mdp.n_actions + ep.actions)[real]
    n_pairs = mdp.n_states * mdp.n_actions
    counts = np.bincount(pair, minlength=n_pairs)
    weights = counts / counts.sum()
    out = {"lam": np.asarray(lams, dtype=float), "bias2": [], "variance": [], "mse": [], "samples": []}
    for lam in lams:
        adv, _ = gae(ep.rewards, values, mdp.gamma, lam, dones=ep.dones, last_value=last)
        err = (adv - target)[real]
        mean = np.bincount(pair, err, minlength=n_pairs) / np.maximum(counts, 1)
        mean_sq = np.bincount(pair, err ** 2, minlength=n_pairs) / np.maximum(counts, 1)
        out["bias2"].append(weights @ mean ** 2)
        out["variance"].append(weights @ np.maximum(mean_sq - mean ** 2, 0.0))
        if return_samples is not None:
            s, a = return_samples
            out["samples"].append(adv[real][pair == s * mdp.n_actions + a])
    for key in ("bias2", "variance"):
        out[key] = np.array(out[key])
    out["mse"] = out["bias2"] + out["variance"]
    if return_samples is None:
        del out["samples"]
    else:
        s, a = return_samples
        out["target"] = float(q[s, a] - critic[s])
    return out


@slide_figure("ch04_gae_bias_variance")
def gae_bias_variance_figure(lam=None, n_episodes=3000):
    """Squared bias, variance and their sum (the MSE) of GAE(lambda) advantages against lambda.

    ``lam`` (optional) marks one value with a vertical line (the chapter's widget).
    """
    mdp, policy, critic = bias_variance_world()
    lams = np.linspace(0.0, 1.0, 11)
    res = gae_bias_variance(mdp, policy, critic, lams, n_episodes=n_episodes)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    ax.plot(lams, res["bias2"], "o-", label="bias$^2$ (critic errors leak in)")
    ax.plot(lams, res["variance"], "s-", label="variance (sampled future)")
    ax.plot(lams, res["mse"], "k^-", label="mean squared error = bias$^2$ + variance")
    best = lams[int(np.argmin(res["mse"]))]
    ax.axvline(best, color="0.5", ls=":", lw=1)
    ax.text(best, ax.get_ylim()[1] * 0.95, f" best $\\lambda$ = {best:.1f}", fontsize=8, color="0.3", va="top")
    if lam is not None:
        ax.axvline(lam, color="C3", lw=1.5)
    ax.set_xlabel("$\\lambda$  (0 = TD(0), 1 = Monte Carlo)")
    ax.set_ylabel("error of $\\hat A$ (squared return units)")
    ax.set_title("GAE trades bias for variance (4x4 world, noisy critic)")
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------------
# PPO's clipped objective and value loss
# --------------------------------------------------------------------------------------------------


@slide_figure("ch04_clip_objective")
def clip_objective_figure(clip_eps=0.2):
    """PPO's per-sample objective :math:`\\min(\\rho A, \\mathrm{clip}(\\rho, 1-\\epsilon, 1+\\epsilon) A)` vs the ratio.

    Left A = +1, right A = -1; the dot is the notes' example (0.1 -> 0.3, ratio 3).
    """
    ratio = np.linspace(0.0, 3.5, 701)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6), layout="constrained", sharey=True)
    for ax, adv in zip(axes, (1.0, -1.0)):
        obj = ppo_clip_objective(ratio, adv, clip_eps)
        ax.plot(ratio, ratio * adv, color="0.6", ls="--", lw=1, label="unclipped $\\rho A$")
        ax.plot(ratio, obj, color="C0", lw=2.2, label="PPO: min(unclipped, clipped)")
        ax.axvspan(1 - clip_eps, 1 + clip_eps, color="C2", alpha=0.12, label=f"[1-$\\epsilon$, 1+$\\epsilon$], $\\epsilon$={clip_eps:g}")
        point = float(ppo_clip_objective(3.0, adv, clip_eps))
        ax.plot([3.0], [point], "o", color="C3")
        ax.annotate(f"ratio 3 (0.1 -> 0.3): {point:+.2f}", (3.0, point), textcoords="offset points",
                    xytext=(-10, 12 if adv > 0 else -16), ha="right", fontsize=8, color="C3")
        flat = "$\\rho > 1+\\epsilon$" if adv > 0 else "$\\rho < 1-\\epsilon$"
        ax.set_title(f"A = {adv:+g}: flat (zero gradient) where {flat}")
        ax.set_xlabel("probability ratio $\\rho = \\pi_\\theta(a|s) / \\pi_{old}(a|s)$")
        ax.axhline(0, color="0.85", lw=0.8)
    axes[0].set_ylabel("per-sample objective (advantage units)")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("PPO's clipped surrogate: no reward for moving the ratio beyond the clip range")
    return fig


@slide_figure("ch04_value_clip")
def value_clip_figure(clip=0.2, old_value=0.0, target=1.0):
    """PPO2's value loss :math:`\\frac12\\max((V-R)^2, (V_{old} + \\mathrm{clip}(V - V_{old}, -c, c) - R)^2)` vs V."""
    v = np.linspace(-1.0, 2.0, 601)
    plain = np.array([value_loss(np.array([x]), np.array([target])) for x in v])
    clipped = np.array([value_loss(np.array([x]), np.array([target]), old_values=np.array([old_value]), clip=clip)
                        for x in v])
    fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    ax.plot(v, plain, color="0.6", ls="--", label="$\\frac{1}{2} (V - R)^2$")
    ax.plot(v, clipped, color="C0", lw=2.2, label="clipped (PPO2): the max of both terms")
    ax.axvspan(old_value - clip, old_value + clip, color="C2", alpha=0.12, label=f"$V_{{old}} \\pm c$, c = {clip:g}")
    ax.axvline(target, color="C3", ls=":", lw=1)
    ax.text(target, ax.get_ylim()[1] * 0.9, " target R", color="C3", fontsize=8)
    ax.set_xlabel("new value prediction V (return units)")
    ax.set_ylabel("value loss (squared return units)")
    ax.set_title(f"Value clipping: flat beyond $V_{{old}}$ + c towards R ($V_{{old}}$ = {old_value:g}, R = {target:g})")
    ax.legend(fontsize=8, loc="upper left")
    return fig


# --------------------------------------------------------------------------------------------------
# PPO on the grid
# --------------------------------------------------------------------------------------------------


@slide_figure("ch04_tabular_ppo")
def tabular_ppo_figure(history=None):
    """Learning curves of :func:`rlhf_edu.train.tabular_ppo.tabular_ppo` on the classic grid world.

    ``history``: a run's history (default: a fresh run with the default settings on the classic grid).
    Left: the exact value of the policy (chapter 3's policy evaluation) against the optimum; right: the
    critic's largest error and the fraction of clipped samples.
    """
    if history is None:
        from rlhf_edu.train.tabular_ppo import train_tabular_ppo

        _, history = train_tabular_ppo(classic_grid_world()[0])
    it = history["iteration"]
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.6), layout="constrained")
    ax = axes[0]
    ax.plot(it, history["objective"], "o-", ms=3, label="PPO policy: exact $\\sum_s d_0(s) V^\\pi(s)$")
    ax.plot(it, history["episode_return"], color="0.6", lw=1, label="sampled return (partial, from the start)")
    ax.axhline(history.last("optimum"), color="C2", ls="--", label="optimum $\\sum_s d_0(s) V^*(s)$ (chapter 3)")
    ax.set_xlabel("PPO iteration (one batch of episodes each)")
    ax.set_ylabel("expected discounted return")
    ax.set_title("The policy climbs to the optimum")
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[1]
    ax.plot(it, history["critic_error"], "o-", ms=3, color="C1", label="critic: $\\max_s |V_\\psi(s) - V^\\pi(s)|$")
    ax.set_xlabel("PPO iteration")
    ax.set_ylabel("critic error (return units)")
    ax2 = ax.twinx()
    ax2.plot(it, history["clip_fraction"], color="C4", lw=1, label="clip fraction")
    ax2.set_ylabel("fraction of clipped samples")
    ax2.set_ylim(0, 1)
    ax.set_title("The critic learns alongside")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper right")
    return fig
