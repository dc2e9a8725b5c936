"""Build chapters/04_policy_gradients_ppo_gae.ipynb (run from the repository root; then execute it with nbconvert).

    .venv/bin/python chapters/build/04_policy_gradients_ppo_gae.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace chapters/04_policy_gradients_ppo_gae.ipynb
"""

from chapter_builder import ChapterBuilder

book = ChapterBuilder("04_policy_gradients_ppo_gae.ipynb")
md, code = book.md, book.code
IGNORE = ["nbval-ignore-output"]


# ================================================================================================
md(r"""
# Chapter 4. Policy gradients, PPO and GAE: from tabular to tokens

Chapter 3 computed values exactly, with the whole model $P, R$ in hand. Real problems (a language model
writing a review, scored at the end) give no model: only **samples**. This chapter learns a policy from
samples. It starts from one identity (the log-derivative trick), adds a baseline and a critic to tame the
noise, measures the bias and variance of the advantage estimators on chapter 3's grid against the exact
answer, builds PPO's clipped objective step by step, trains PPO with GAE on the grid, and finally runs the
same algorithm on a tiny language model, where a state is a prompt plus the tokens so far and an action is
the next token.

## 1. Goals

After this chapter you can

1. derive the policy gradient $\nabla_\theta J = \mathbb E[\nabla_\theta \log\pi_\theta(a|s)\,A(s,a)]$ from the
   log-derivative trick, and say why subtracting a baseline keeps it unbiased;
2. compute Monte Carlo, TD(0) and GAE($\lambda$) advantages, and measure their bias and variance against the
   exact advantage;
3. derive PPO's surrogate from importance sampling, and compute the clipped objective, the KL-penalised
   variant, the clipped value loss, the entropy bonus and the notes' full PPO loss;
4. train PPO with GAE on a grid world and on a tiny language model (the token-level MDP), and read its
   curves: reward, KL, clip fraction, value error;
5. recognise three classic bugs: bootstrapping across an episode end, advantages from the updated critic,
   a flipped KL.
""")

code(r"""
%matplotlib inline
%config InlineBackend.figure_formats = ["png"]
import inspect
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch

import importlib
tabular_ppo_module = importlib.import_module("rlhf_edu.train.tabular_ppo")  # the module (rlhf_edu.train.tabular_ppo is also a function)
from rlhf_edu import numpy as rn
from rlhf_edu import torch as rt
from rlhf_edu.exercises import check_clipped_objective, check_gae, check_reinforce_loss, check_value_loss_clipping
from rlhf_edu.figures import policy_gradients as figs
from rlhf_edu.lm import set_seed
from rlhf_edu.plotting import plot_grid_values, plot_history
from rlhf_edu.train.tabular_ppo import sample_episodes, tabular_ppo

T0 = time.perf_counter()
np.random.seed(0)
torch.manual_seed(0)
set_seed(0)
torch.set_num_threads(1)  # tiny tensors (and a shared 2-core machine): one thread is fastest and reproducible
np.set_printoptions(precision=4, suppress=True)
""")

# ================================================================================================
md(r"""
## 2. The idea in words, and one picture

The agent tries an action, gets a score, and makes that action **more likely if it scored better than
usual, less likely if worse**. No model of the world is needed, only the ability to sample and to
differentiate $\log \pi_\theta(a|s)$. Below, the notes' example: in the state "The best way to", the action
"learn" scores 0.9 and "sleep" 0.2 (plus some noise, as a reward model is never exact). Each thin line is a
run that samples one action per step and nudges the probabilities; the thick line follows the exact
gradient. Sampled updates wander, but climb.

Everything else in the chapter is about making this work when the score comes at the end of a long
sequence (advantages, critics, GAE), and about taking several safe steps per batch of samples (PPO).
""")

code(r"""
fig = figs.reinforce_bandit_figure()
plt.show()
""")

# ================================================================================================
md(r"""
## 3. Derivation

### 3.1 The objective

For an MDP (chapter 3) and a policy $\pi_\theta$ with parameters $\theta$, the goal is the expected return
from the start, $J(\theta) = \mathbb E_{\tau \sim \pi_\theta}[G_0]$ with $G_0 = \sum_t \gamma^t r_t$. For a
language model (the notes' "policy model objective"), one prompt $x$ and one sampled completion $y$ form the
episode and the reward model scores the end:

$$J(\theta) = \mathbb E_{x\sim \mathcal D,\; y \sim \pi_\theta(\cdot|x)}\big[r(x, y)\big].$$

We want $\nabla_\theta J$ to do gradient ascent $\theta \leftarrow \theta + \alpha \nabla_\theta J$, but $y$
is *sampled*: there is no path to backpropagate through.

### 3.2 The log-derivative trick and REINFORCE

For one state and actions $a$ (the notes' slide):

$$\nabla_\theta \mathbb E_{a\sim\pi_\theta}[r(a)] = \nabla_\theta \sum_a \pi_\theta(a)\, r(a)
= \sum_a \pi_\theta(a)\, \frac{\nabla_\theta \pi_\theta(a)}{\pi_\theta(a)}\, r(a)
= \mathbb E_{a\sim\pi_\theta}\big[\nabla_\theta \log \pi_\theta(a)\; r(a)\big],$$

using $\nabla \log \pi = \nabla\pi / \pi$. An expectation can be estimated by samples: the **REINFORCE**
estimator (Williams, 1992) is $\frac1N\sum_i \nabla_\theta \log\pi_\theta(a_i)\, r(a_i)$, $a_i \sim \pi_\theta$.

**Whole trajectories.** $p_\theta(\tau) = \rho_0(s_0)\prod_t \pi_\theta(a_t|s_t) P(s_{t+1}|s_t,a_t)$, so

$$\nabla_\theta \log p_\theta(\tau) = \sum_t \nabla_\theta \log\pi_\theta(a_t|s_t):$$

the dynamics $P$ do not depend on $\theta$ and drop out, which is why no model is needed. For a language model
this is the notes' $\nabla_\theta \log \pi_\theta(y|x) = \nabla \log p(x_5|x_{1:4}) + \nabla \log p(x_6|x_{1:4},x_5)$:
a sequence's log-probability is the **sum** of its tokens' log-probabilities. Since $a_t$ cannot change rewards
paid before $t$, only the reward-to-go stays in expectation:

$$\nabla_\theta J = \mathbb E\Big[\sum_t \nabla_\theta \log \pi_\theta(a_t|s_t)\, \gamma^t G_t\Big]
= \sum_s d^\pi(s) \sum_a \nabla_\theta \pi_\theta(a|s)\, Q^\pi(s,a),$$

the **policy gradient theorem** (Sutton et al., 2000), with $d^\pi(s) = \sum_t \gamma^t P(s_t = s)$ the
discounted visits: exactly the formula that autograd confirmed on the $2\times2$ world in chapter 3.
(Implementations usually drop the $\gamma^t$ in front of $G_t$; with $\gamma = 1$, as in RLHF, nothing changes.)

### 3.3 Baselines, and the advantage

Any $b(s)$ that does not depend on the action can be subtracted for free:

$$\mathbb E_{a\sim\pi_\theta}\big[\nabla_\theta\log\pi_\theta(a|s)\, b(s)\big] = b(s) \sum_a \nabla_\theta \pi_\theta(a|s)
= b(s)\, \nabla_\theta \underbrace{\textstyle\sum_a \pi_\theta(a|s)}_{=1} = 0.$$

The mean is unchanged, the variance is not: a good baseline makes the scores of the samples small numbers of
both signs. The natural choice is $b(s) = V^\pi(s)$, which turns $Q$ into the **advantage**

$$A^\pi(s,a) = Q^\pi(s,a) - V^\pi(s), \qquad \mathbb E_{a\sim\pi}[A^\pi(s,a)] = 0,$$

"how much better is $a$ than what the policy does on average in $s$". The notes' example: in
$s_t$ = "The best way to", $Q(s_t, \text{learn}) = 0.9$, $Q(s_t,\text{sleep}) = 0.2$, $V(s_t) = 0.6$, so
$A(\text{learn}) = 0.3$ and $A(\text{sleep}) = -0.4$. Two remarks on the slide: the reward slide before it
calls the good action "code" (0.9) and the advantage slide calls it "learn" (we use "learn"); and $V = 0.6$ is
not free: $V = \sum_a \pi(a)Q(a)$ forces $\pi(\text{learn}) = 4/7$, and then $\frac47 \cdot 0.3 + \frac37\cdot(-0.4) = 0$,
as an advantage must average to zero.

### 3.4 Estimating the advantage: Monte Carlo, TD(0) and GAE

$Q^\pi$ is unknown; a **critic** $V(s) \approx V^\pi(s)$ is learned alongside (the notes' $V_\gamma$). With the
one-step **TD residual** $\delta_t = r_t + \gamma V(s_{t+1}) - V(s_t)$ (0 for $V(s_{t+1})$ after the end):

* **Monte Carlo**: $\hat A_t = G_t - V(s_t) = \sum_{l\ge0}\gamma^l r_{t+l} - V(s_t)$. Its expectation is
  $Q^\pi(s_t,a_t) - V(s_t)$: a critic error at $s_t$ only shifts the baseline, so the gradient stays **unbiased**;
  but it adds up the noise of every future step: **high variance**.
* **TD(0)**: $\hat A_t = \delta_t$. One sampled step, then trust the critic: **low variance**, but **biased**
  wherever $V(s_{t+1}) \ne V^\pi(s_{t+1})$.
* **$n$-step**: $\hat A^{(n)}_t = \sum_{l<n}\gamma^l r_{t+l} + \gamma^n V(s_{t+n}) - V(s_t) = \sum_{l<n}\gamma^l\delta_{t+l}$
  (the $V$'s telescope).
* **GAE** (Schulman et al., 2016): the exponentially weighted average of all of them,

$$\hat A^{GAE(\gamma,\lambda)}_t = (1-\lambda)\sum_{n\ge1}\lambda^{n-1}\hat A^{(n)}_t = \sum_{l\ge0}(\gamma\lambda)^l\,\delta_{t+l},$$

because the weight of $\gamma^l\delta_{t+l}$ is $(1-\lambda)\sum_{n>l}\lambda^{n-1} = \lambda^l$. $\lambda = 0$
is TD(0), $\lambda = 1$ is Monte Carlo (the notes: "$\lambda = 1$, more future information, higher variance;
$\lambda = 0$, lower variance but higher bias"). Backwards in time it is one line:
$\hat A_t = \delta_t + \gamma\lambda(1-d_t)\hat A_{t+1}$, with $d_t = 1$ where the episode ended.
The critic is trained on the **returns** $\hat R_t = \hat A_t + V(s_t)$.

### 3.5 Importance sampling and the surrogate objective

PPO reuses one batch of samples for several gradient steps, so after the first step the samples come from an
older policy $\pi_{old}$. **Importance sampling** corrects for that:
$\mathbb E_{a\sim\pi}[f(a)] = \sum_a \pi_{old}(a)\frac{\pi(a)}{\pi_{old}(a)}f(a) = \mathbb E_{a\sim\pi_{old}}\big[\rho(a) f(a)\big]$
with the ratio $\rho = \pi/\pi_{old}$.

The notes then write $\arg\max_\pi J(\pi) = \arg\max_\pi \mathbb E_{s\sim\rho_0, a\sim\pi}[A^\pi(s,a)] + \mathbb E_{s\sim\rho_0}[V^\pi(s)]$
and drop the last term as "constant, gradients are 0". **That step is not right**: $V^\pi$ depends on $\pi$
(and $\mathbb E_{a\sim\pi}[A^\pi] = 0$, so the first term is always 0). The correct statement is the
**performance difference lemma** (Kakade & Langford, 2002): for any two policies,

$$J(\pi) - J(\pi_{old}) = \sum_s d^{\pi}(s) \sum_a \pi(a|s)\, A^{\pi_{old}}(s,a)
= \mathbb E_{s\sim d^{\pi}}\,\mathbb E_{a\sim\pi_{old}}\Big[\frac{\pi(a|s)}{\pi_{old}(a|s)}A^{\pi_{old}}(s,a)\Big].$$

(Proof: write $A^{\pi_{old}}(s_t,a_t) = \mathbb E[r_t + \gamma V^{\pi_{old}}(s_{t+1})] - V^{\pi_{old}}(s_t)$ and sum
along trajectories of $\pi$: the $V^{\pi_{old}}$ terms telescope to $-V^{\pi_{old}}(s_0)$.) The advantage is that
of the **old** policy, as the notes' next slide says, and the states come from the **new** one. Replacing
$d^{\pi}$ by $d^{\pi_{old}}$ (the samples we have) gives the surrogate

$$L_{\pi_{old}}(\pi) = \mathbb E_{s, a\sim\pi_{old}}\Big[\frac{\pi_\theta(a|s)}{\pi_{old}(a|s)}A^{\pi_{old}}(s,a)\Big],$$

which matches $J(\pi) - J(\pi_{old})$ to first order: at $\theta = \theta_{old}$, $\nabla_\theta\rho = \rho\,\nabla_\theta\log\pi_\theta = \nabla_\theta\log\pi_\theta$,
so its gradient **is** the policy gradient. Far from $\pi_{old}$ it can be badly wrong (section 5 measures it), so
the step must stay small. (The slide also calls $Q^\pi$ the "state-value function" and writes
$r_\theta = \pi_\theta(s,a)/\pi_{\theta_{old}}(s,a)$; it is the state-action value and $\pi_\theta(a|s)/\pi_{\theta_{old}}(a|s)$.)

### 3.6 Keeping the step small: KL-PPO and clip-PPO

**KL penalty** (the notes' KL-PPO, from TRPO's constraint $\mathbb E_s[\mathrm{KL}(\pi_{old}\|\pi_\theta)]\le\delta$):

$$L^{KL}(\theta) = \mathbb E_{(s,a)\sim\pi_{old}}\big[\rho_\theta(s,a)\,A(s,a) - \beta\,\mathrm{KL}(\pi_{old}(\cdot|s)\,\|\,\pi_\theta(\cdot|s))\big].$$

**Clipping** (Schulman et al., 2017): per sample, the pessimistic minimum of the unclipped and a clipped term,

$$L^{clip}(\theta) = \mathbb E\Big[\min\big(\rho_t A_t,\ \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\,A_t\big)\Big].$$

For $A>0$ the objective stops growing once $\rho > 1+\epsilon$; for $A<0$ once $\rho < 1-\epsilon$; there the
gradient is 0 and the sample stops pushing. A ratio that moved the *wrong* way is never clipped (the min keeps
the unclipped, worse term). The notes' example: "unlimited" had probability 0.1 and now 0.3, so
$\rho = 3$; with $\epsilon = 0.2$ the clipped ratio is 1.2 and the objective is $1.2\,A$ **if $A > 0$**. The slide
states only this case: for $A < 0$ it is $\min(3A, 1.2A) = 3A$, the full penalty.

### 3.7 The critic's loss, the entropy bonus, the full PPO loss

The critic regresses on the returns: $L_V = \frac12\,\mathbb E_t[(V(s_t) - \hat R_t)^2]$, $\hat R_t$ held fixed
(stop-gradient). The notes write the target as $\mathrm{sg}(P_\phi(s_t))$, "the reward model output"; the target
is the **return** $\hat R_t$ (which contains the reward model's score, paid at the end), not the reward model
applied to a partial state. PPO2 (OpenAI baselines) also clips the value update around the value at rollout
time, $\frac12\max\big((V-\hat R)^2, (V_{old} + \mathrm{clip}(V - V_{old}, -c, c) - \hat R)^2\big)$.

The **entropy** bonus $H(\theta) = -\mathbb E_{a\sim\pi}[\log\pi_\theta(a|s)] = -\sum_a \pi\log\pi$ keeps exploring;
the **KL** term $\mathrm{KL}(\theta) = \mathbb E_{s}[\mathrm{KL}(\pi_{orig}(\cdot|s)\|\pi_\theta(\cdot|s))]$ keeps the
policy near the original model. The notes' full objective, to **maximise**:

$$\mathcal L_{PPO}(\theta,\gamma) = \mathcal L_{clip}(\theta) + w_1 H(\theta) - w_2\,\mathrm{KL}(\theta) - w_3\,\mathcal L_V(\gamma).$$

The library minimises its negative. (InstructGPT puts the KL to the reference, in the other direction
$\mathrm{KL}(\pi_\theta\|\pi_{ref})$, into the *reward* instead: section 9.)

### 3.8 The token-level MDP

For a language model: the **state** $s_t$ is the prompt plus the tokens generated so far, the **action**
$a_t$ is the next token, the **transition** is deterministic (append the token), the episode ends at the end
token. The reward model scores only the complete text, so (Ziegler et al., 2019; InstructGPT)

$$r_t = -\beta\,\big(\log\pi_\theta(a_t|s_t) - \log\pi_{ref}(a_t|s_t)\big) + [t = T]\; r_\phi(x, y),$$

whose sum over the tokens is the notes' KL-regularised objective $r_\phi(x,y) - \beta\log\frac{\pi_\theta(y|x)}{\pi_{ref}(y|x)}$.
GAE with $\gamma = 1$ spreads the final score back over the tokens. (The notes' "Protocol 4" writes the loss as
$-[r + \beta\log\pi - \beta\log\pi_{ref}]$: with that sign, minimising it *rewards* drifting from the reference.
It must be $-[r - \beta(\log\pi - \log\pi_{ref})]$; section 10 shows what the flip does. Its
$\mathrm{Clip}(\delta, 1+\epsilon, 1-\epsilon)$ also has the bounds swapped.)
""")

# ================================================================================================
md(r"""
## 4. The NumPy reference

Every formula above is one function of `rlhf_edu.numpy` (the losses are to *minimise*). REINFORCE:
""")

code(r"""
print(inspect.getsource(rn.reinforce_loss))
""")

md(r"""
GAE (returns $\hat A$ and $\hat R = \hat A + V$); the backward recursion is one linear filter when there are no
episode ends, a loop over time otherwise (`_discounted_cumsum`):
""")

code(r"""
print(inspect.getsource(rn.gae))
print(inspect.getsource(rn.advantages._discounted_cumsum))
""")

md(r"""
PPO's clipped objective, the loss built on it (ratio in log space, with the clip fraction and the approximate
KL as statistics), and the value loss:
""")

code(r"""
print(inspect.getsource(rn.ppo_clip_objective))
print(inspect.getsource(rn.ppo_clip_loss))
print(inspect.getsource(rn.value_loss))
""")

md(r"""
The token-level rewards of section 3.8:
""")

code(r"""
print(inspect.getsource(rn.kl_penalized_rewards))
""")

# ================================================================================================
md(r"""
## 5. Worked examples with numbers

### 5.1 The notes' advantage example
""")

code(r"""
actions, q_ls, pi_ls = figs.learn_sleep_bandit()
v_ls = pi_ls @ q_ls
adv_ls = q_ls - v_ls
print(f"pi(learn) = {pi_ls[0]:.4f} (4/7), V = sum_a pi(a) Q(a) = {v_ls:.2f}")
print("A(learn), A(sleep) =", adv_ls.round(2), "   E_pi[A] =", round(float(pi_ls @ adv_ls), 12))
assert abs(pi_ls[0] - 4 / 7) < 1e-12 and abs(v_ls - 0.6) < 1e-12
assert np.allclose(adv_ls, [0.3, -0.4]) and abs(pi_ls @ adv_ls) < 1e-12
""")

md(r"""
### 5.2 REINFORCE on it, with and without a baseline

A softmax policy over the two actions, logits $\theta$. The exact gradient of $J = \sum_a \pi_\theta(a) Q(a)$ is
$\partial J/\partial\theta_a = \pi(a)(Q(a) - V) = \pi(a)A(a)$: $(\frac47\cdot0.3, \frac37\cdot(-0.4)) = (0.1714, -0.1714)$.
REINFORCE estimates it from 4000 sampled actions by differentiating the library's `reinforce_loss` with autograd
(the loss is minus the surrogate whose gradient is the estimator):
""")

code(r"""
logits = torch.tensor(np.log(pi_ls), requires_grad=True)
J = (torch.softmax(logits, dim=-1) * torch.tensor(q_ls)).sum()
exact_grad = torch.autograd.grad(J, logits)[0].numpy()

rng = np.random.default_rng(0)
a = torch.as_tensor(rng.choice(2, size=4000, p=pi_ls))
logp = torch.log_softmax(logits, dim=-1)[a]
estimates = {}
for name, b in (("no baseline (b = 0)", 0.0), ("baseline b = V = 0.6", v_ls)):
    loss = rt.reinforce_loss(logp, torch.tensor(q_ls)[a] - b)   # advantages = reward - baseline
    estimates[name] = -torch.autograd.grad(loss, logits, retain_graph=True)[0].numpy()
print("exact gradient      :", exact_grad)
for name, g in estimates.items():
    mean, var = figs.reinforce_gradient_moments(pi_ls, q_ls, 0.0 if "no" in name else v_ls)
    print(f"{name:20s}: {g}   (one-sample std {np.sqrt(var):.3f}, so +-{np.sqrt(var / 4000):.4f} here)")
    assert np.allclose(mean, exact_grad) and np.allclose(g, exact_grad, atol=4 * np.sqrt(var / 4000))
assert np.allclose(exact_grad, [0.3 * 4 / 7, -0.4 * 3 / 7])
""")

md(r"""
Both estimates are right on average; the baseline cuts the spread of a single sample from 0.35 to 0.07 (the
figure in section 7 shows it for every $b$).

### 5.3 GAE by hand

Three steps with rewards $(0, 0, 1)$, critic values $(0.5, 0.5, 0.5)$, $\gamma = 1$. TD residuals:
$\delta = (0 + 0.5 - 0.5,\ 0 + 0.5 - 0.5,\ 1 + 0 - 0.5) = (0, 0, 0.5)$. With $\lambda = 0$ the advantages are
$\delta$; with $\lambda = 1$ they are $G_t - V = (0.5, 0.5, 0.5)$.
""")

code(r"""
r3, v3 = np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5])
for lam, want in ((0.0, [0.0, 0.0, 0.5]), (1.0, [0.5, 0.5, 0.5]), (0.5, [0.125, 0.25, 0.5])):
    adv, ret = rn.gae(r3, v3, gamma=1.0, lam=lam)
    print(f"lambda = {lam}: advantages {adv}, returns {ret}")
    assert np.allclose(adv, want) and np.allclose(ret, adv + v3)
""")

md(r"""
And the identity of section 3.4 on random numbers: GAE equals the $(1-\lambda)\lambda^{n-1}$-weighted average of the
$n$-step advantages (the last one, which reaches the end of the row and its bootstrap value, takes the remaining
weight $\lambda^{K-1}$).
""")

code(r"""
rng = np.random.default_rng(1)
K, gamma, lam = 6, 0.9, 0.8
r, v, v_last = rng.normal(size=K), rng.normal(size=K), 0.7
v_next = np.append(v[1:], v_last)
delta = r + gamma * v_next - v
n_step = [sum(gamma**l * delta[l] for l in range(n)) for n in range(1, K + 1)]   # A^(n)_0, n = 1..K
mixture = (1 - lam) * sum(lam ** (n - 1) * n_step[n - 1] for n in range(1, K)) + lam ** (K - 1) * n_step[-1]
gae0 = rn.gae(r, v, gamma, lam, last_value=v_last)[0][0]
print(f"weighted n-step average: {mixture:.10f}   GAE: {gae0:.10f}")
assert abs(mixture - gae0) < 1e-12
""")

md(r"""
### 5.4 The performance difference lemma and the surrogate, measured

On the $2\times2$ world of chapter 3 (start $s_0$, $\gamma = 1$): $\pi_{old}$ is the random policy, $\pi$ the optimal one.
The lemma gives $J(\pi) - J(\pi_{old})$ exactly with the visits of the **new** policy; the surrogate uses the visits of
the **old** one. Along the mixture $\pi_t = (1-t)\pi_{old} + t\pi$ the two agree for small $t$ and part ways for large
$t$: the surrogate is only to be trusted near $\pi_{old}$.
""")

code(r"""
world, _ = rn.two_by_two_world()
live = ~world.terminal


def visits(mdp, policy, s0=0):
    # d(s) = sum_t gamma^t P(s_t = s | s_0): a row of (I - gamma P_pi)^-1 over the non-terminal states
    P_pi = np.einsum("sa,sat->st", policy, mdp.transitions)
    d = np.zeros(mdp.n_states)
    d[live] = np.linalg.inv(np.eye(live.sum()) - mdp.gamma * P_pi[np.ix_(live, live)])[s0]
    return d


pi_old = np.full((4, 4), 0.25)
v_old = rn.policy_evaluation(world, pi_old)
A_old = rn.action_values(world, v_old) - v_old[:, None]
_, pi_best = rn.value_iteration(world)
print("  t    J(pi_t) - J(pi_old)   lemma (new visits)   surrogate (old visits)")
for t in (0.01, 0.1, 0.5, 1.0):
    pi_t = (1 - t) * pi_old + t * pi_best
    true_gain = rn.policy_evaluation(world, pi_t)[0] - v_old[0]
    lemma = visits(world, pi_t) @ (pi_t * A_old).sum(axis=1)
    surrogate = visits(world, pi_old) @ (pi_t * A_old).sum(axis=1)
    print(f"{t:5.2f}   {true_gain:12.4f}   {lemma:18.4f}   {surrogate:20.4f}")
    assert abs(true_gain - lemma) < 1e-9
assert abs(true_gain - 6.0) < 1e-9 and abs(surrogate - 24.0) < 1e-9
""")

md(r"""
At $t = 1$ the surrogate promises a gain of 24 moves where the true gain is 6: it assumes the agent still wanders
the old way (4 visits to $s_0$), while the better policy leaves $s_0$ at once. Hence the trust region.

### 5.5 Importance sampling, and the gradient of the surrogate at $\theta_{old}$

Estimating $\mathbb E_{a\sim\pi}[Q(a)]$ for $\pi = (0.8, 0.2)$ from samples of $\pi_{old} = (\frac47,\frac37)$ with the
weights $\rho = \pi/\pi_{old}$; then the gradient of PPO's loss at $\pi_\theta = \pi_{old}$ (ratio 1, nothing clipped)
equals the REINFORCE gradient, sample by sample.
""")

code(r"""
pi_new = np.array([0.8, 0.2])
a_old = rng.choice(2, size=20000, p=pi_ls)
is_estimate = np.mean(pi_new[a_old] / pi_ls[a_old] * q_ls[a_old])
print(f"E_pi[Q] exact {pi_new @ q_ls:.4f}, importance-sampled from pi_old {is_estimate:.4f}")
assert abs(is_estimate - pi_new @ q_ls) < 0.01

logp = torch.log_softmax(logits, dim=-1)[a]
adv = torch.tensor(q_ls)[a] - v_ls
g_reinforce = torch.autograd.grad(rt.reinforce_loss(logp, adv), logits, retain_graph=True)[0]
g_ppo = torch.autograd.grad(rt.ppo_clip_loss(logp, logp.detach(), adv), logits)[0]
print("gradient of the REINFORCE loss:", g_reinforce.numpy(), "  of the PPO loss at ratio 1:", g_ppo.numpy())
assert torch.allclose(g_reinforce, g_ppo)
""")

md(r"""
### 5.6 The notes' clipping example, the KL-penalised variant, the value loss

"unlimited": $0.1 \to 0.3$, $\rho = 3$, $\epsilon = 0.2$. The objective is $1.2A$ for $A = 1$ and $3A$ for
$A = -1$; the gradient with respect to the ratio is 0 in the first case (clipped) and $A$ in the second:
""")

code(r"""
ratio = np.array([0.3 / 0.1, 0.3 / 0.1])
A_pm = np.array([1.0, -1.0])
obj = rn.ppo_clip_objective(ratio, A_pm, clip_eps=0.2)
grad = rn.ppo_clip_objective_grad(ratio, A_pm, clip_eps=0.2)["ratio"]
loss = rn.ppo_clip_loss(np.log([0.3]), np.log([0.1]), np.array([1.0]), clip_eps=0.2)
print("objective:", obj, " d objective / d ratio:", grad, f" PPO loss (A = 1): {float(loss):.4f}")
assert np.allclose(obj, [1.2, -3.0]) and np.allclose(grad, [0.0, -1.0]) and abs(loss + 1.2) < 1e-12
""")

md(r"""
The KL-penalised objective on the same token, with the whole next-token distribution: before
$\pi_{old} = (0.1, 0.5, 0.4)$ over ("unlimited", "limited", "endless"), after $\pi = (0.3, 0.4, 0.3)$, $A = 1$,
$\beta = 1$: $\rho A - \beta\,\mathrm{KL}(\pi_{old}\|\pi) = 3 - 0.1168$. Unlike the clip, the penalty keeps a
gradient, and its size depends on $\beta$ (PPO's adaptive version raises $\beta$ when the measured KL overshoots
a target). The clipped value loss with $V_{old} = 0$, $V = 0.5$, target $\hat R = 1$, $c = 0.2$:
$\frac12\max(0.5^2, (0 + 0.2 - 1)^2) = 0.32$, larger than the plain $0.125$: moving $V$ by more than $c$ earns
nothing. And the entropy of $\pi_{old}$: $-(0.1\log0.1 + 0.5\log0.5 + 0.4\log0.4) = 0.9433$ nats.
""")

code(r"""
p_old, p_new = np.array([0.1, 0.5, 0.4]), np.array([0.3, 0.4, 0.3])
kl = rn.kl_divergence(p_old, p_new)
print(f"KL(pi_old || pi) = {kl:.4f};  L_KL = 3 * 1 - 1 * KL = {3 - kl:.4f}  (clip gives 1.2)")
v_plain = rn.value_loss(np.array([0.5]), np.array([1.0]))
v_clip = rn.value_loss(np.array([0.5]), np.array([1.0]), old_values=np.array([0.0]), clip=0.2)
print(f"value loss: plain {v_plain:.4f}, clipped {v_clip:.4f};  entropy of pi_old {rn.entropy(p_old):.4f} nats")
assert abs(kl - 0.1168) < 1e-4 and abs(v_plain - 0.125) < 1e-12 and abs(v_clip - 0.32) < 1e-12
assert abs(rn.entropy(p_old) - 0.9433) < 1e-4
# the notes' sample form H = -E[log pi(a)]: the mean of -log pi over samples estimates the entropy
samples = rng.choice(3, size=20000, p=p_old)
assert abs(np.mean(-np.log(p_old[samples])) - rn.entropy(p_old)) < 0.02
""")

md(r"""
### 5.7 The notes' full PPO loss on a tiny batch

Two states, three actions, four sampled steps; the policy moved a little since the rollout. Each term comes from
the library; the loss is minus the notes' objective $\mathcal L_{clip} + w_1H - w_2\mathrm{KL} - w_3\mathcal L_V$:
""")

code(r"""
theta = torch.tensor([[0.2, 0.0, -0.2], [0.0, 0.5, 0.0]], dtype=torch.float64, requires_grad=True)
theta_old = torch.zeros(2, 3, dtype=torch.float64)                  # the rollout policy (and pi_orig)
values = torch.tensor([0.3, -0.1], dtype=torch.float64, requires_grad=True)
s = torch.tensor([0, 0, 1, 1])
a = torch.tensor([0, 2, 1, 0])
A = torch.tensor([1.0, -0.5, 0.8, -1.2], dtype=torch.float64)
R = torch.tensor([1.0, 0.2, 0.5, -0.8], dtype=torch.float64)
w1, w2, w3 = 0.01, 0.1, 0.5

logp_all = torch.log_softmax(theta[s], dim=-1)
logp = logp_all[torch.arange(4), a]
logp_old = torch.log_softmax(theta_old[s], dim=-1)[torch.arange(4), a]
L_clip = -rt.ppo_clip_loss(logp, logp_old, A, clip_eps=0.2)
H = rt.entropy(logp_all.exp()).mean()
KL = rt.kl_divergence_from_logits(theta_old[s], theta[s]).mean()    # KL(pi_orig || pi_theta), the notes' direction
L_V = rt.value_loss(values[s], R, old_values=values[s].detach(), clip=0.2)
objective = L_clip + w1 * H - w2 * KL - w3 * L_V
(-objective).backward()
print(f"L_clip {L_clip.item():.4f}  H {H.item():.4f}  KL {KL.item():.5f}  L_V {L_V.item():.4f}  ->  objective {objective.item():.4f}")
print("gradient of the loss w.r.t. the logits:\n", theta.grad.numpy())
assert abs(objective.item() - (L_clip + w1 * H - w2 * KL - w3 * L_V).item()) < 1e-12
""")

# ================================================================================================
md(r"""
## 6. The PyTorch twin

The twins in `rlhf_edu.torch` compute the same numbers on tensors (any device, any float dtype), and autograd
agrees with the analytic gradients the NumPy reference writes out: $\partial L/\partial\log\pi_t = -m_tA_t/N$ for
REINFORCE, $\partial/\partial\rho = A$ or 0 for the clipped objective.
""")

code(r"""
rng = np.random.default_rng(2)
ratio_np, adv_np = np.exp(rng.normal(scale=0.5, size=12)), rng.normal(size=12)
ratio_t = torch.tensor(ratio_np, requires_grad=True)
rt.ppo_clip_objective(ratio_t, torch.tensor(adv_np)).sum().backward()
assert np.allclose(ratio_t.grad.numpy(), rn.ppo_clip_objective_grad(ratio_np, adv_np)["ratio"])

logp_np, mask_np = np.log(rng.uniform(0.1, 1, size=(3, 5))), (rng.random((3, 5)) < 0.8).astype(float)
mask_np[:, 0] = 1
logp_t = torch.tensor(logp_np, requires_grad=True)
rt.reinforce_loss(logp_t, torch.tensor(adv_np[:3]), torch.tensor(mask_np)).backward()   # one advantage per row
assert np.allclose(logp_t.grad.numpy(), rn.reinforce_loss_grad(logp_np, adv_np[:3], mask_np)["logp"])

rewards_np, values_np = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
dones_np = np.zeros((3, 5)); dones_np[0, 2] = 1
for dtype in (torch.float32, torch.float64):
    adv_t, ret_t = rt.gae(torch.tensor(rewards_np, dtype=dtype), torch.tensor(values_np, dtype=dtype), 0.99, 0.95,
                          dones=torch.tensor(dones_np), last_value=torch.tensor([0.5, 0.0, 1.0], dtype=dtype))
    adv_n, _ = rn.gae(rewards_np, values_np, 0.99, 0.95, dones=dones_np, last_value=np.array([0.5, 0.0, 1.0]))
    assert adv_t.dtype == dtype and np.allclose(adv_t.numpy(), adv_n, atol=1e-5)
print("autograd = analytic gradients; torch GAE = NumPy GAE in float32 and float64")
""")

md(r"""
The loss stays finite for absurd ratios: the log-ratio is bounded (`max_log_ratio=20`) before `exp`, so a policy
that collapsed on a token (log-probability $-10^4$) gives a finite loss and gradient in float32:
""")

code(r"""
logp_far = torch.tensor([-1e-4, -1e4, -0.5], dtype=torch.float32, requires_grad=True)
loss = rt.ppo_clip_loss(logp_far, torch.tensor([-1e4, -1e-4, -0.5]), torch.tensor([1.0, -1.0, 1.0]))
loss.backward()
print(f"loss {loss.item():.4g}, gradient {logp_far.grad.numpy()}")
assert torch.isfinite(loss) and torch.isfinite(logp_far.grad).all()
""")

# ================================================================================================
md(r"""
## 7. See it

**Baselines.** The mean and one standard deviation of a one-sample REINFORCE estimate (the logit of "learn") for
every baseline $b$: the mean never moves; the spread is smallest near $b = V$. (Here it vanishes at $b = 0.5$:
with two actions, one $b$ makes both samples give the same number.)
""")

code(r"""
fig = figs.baseline_variance_figure()
plt.show()
""")

md(r"""
**Bias and variance of GAE, measured.** Chapter 3's $4\times4$ world with slippery moves (slip 0.1), the policy
"optimal with probability 0.5, random otherwise", and a deliberately imperfect critic $\hat V = V^\pi + 3z$
($z \sim N(0,1)$ per state). For 3000 sampled episodes, each step's GAE advantage is compared with the exact
target $Q^\pi(s,a) - \hat V(s)$ from chapter 3's `action_values` and `policy_evaluation` (the critic's own error
at $s$ is only a baseline, see section 3.4). The measurement:
""")

code(r"""
print(inspect.getsource(figs.gae_bias_variance))
""")

code(r"""
fig = figs.gae_bias_variance_figure()
plt.show()
bv_mdp, bv_policy, bv_critic = figs.bias_variance_world()
bv = figs.gae_bias_variance(bv_mdp, bv_policy, bv_critic, [0.0, 0.5, 0.95, 1.0], n_episodes=3000)
for lam, b2, var in zip(bv["lam"], bv["bias2"], bv["variance"]):
    print(f"lambda = {lam:4.2f}: bias^2 {b2:.3f}   variance {var:.3f}   mse {b2 + var:.3f}")
assert bv["bias2"][0] > 10 * bv["bias2"][-1]          # TD(0) is biased by the critic, Monte Carlo is not
assert bv["variance"][-1] > 3 * bv["variance"][0]     # Monte Carlo pays in variance
assert bv["mse"][1] < min(bv["mse"][0], bv["mse"][-1])  # a middle lambda beats both ends
""")

md(r"""
**PPO's clipped objective** against the ratio, for a good ($A>0$) and a bad ($A<0$) sample, with the notes' point
at ratio 3:
""")

code(r"""
fig = figs.clip_objective_figure(clip_eps=0.2)
plt.show()
""")

md(r"""
**The clipped value loss**: beyond $V_{old} + c$ in the direction of the target the loss is flat, so one batch
cannot move the critic far:
""")

code(r"""
fig = figs.value_clip_figure()
plt.show()
""")

# ================================================================================================
md(r"""
## 8. Play with it

**$\lambda$.** Slide $\lambda$ from TD(0) to Monte Carlo: on the right, the GAE advantages of every visit of one
state-action pair (cell (1, 2), action *up*) against the exact target (red line); on the left, where that $\lambda$
sits on the bias-variance curve. (Drawn once at $\lambda = 0.5$ for readers without a live kernel.)
""")

code(r"""
lam_grid = np.round(np.linspace(0.0, 1.0, 11), 2)
bv_pair = (6, 0)   # state 6 = cell (1, 2) of the 4x4 world, action 0 = up
bv_all = figs.gae_bias_variance(bv_mdp, bv_policy, bv_critic, lam_grid, n_episodes=8000, return_samples=bv_pair)


def show_lambda(lam=0.5):
    i = int(np.argmin(np.abs(lam_grid - lam)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    ax1.plot(lam_grid, bv_all["bias2"], "o-", label="bias$^2$")
    ax1.plot(lam_grid, bv_all["variance"], "s-", label="variance")
    ax1.plot(lam_grid, bv_all["mse"], "k^-", label="mse")
    ax1.axvline(lam_grid[i], color="C3")
    ax1.set_xlabel("$\\lambda$")
    ax1.set_ylabel("error (squared return units)")
    ax1.legend(fontsize=8)
    ax2.hist(bv_all["samples"][i], bins=np.linspace(-12, 12, 97), color="C0", alpha=0.7)
    ax2.axvline(bv_all["target"], color="C3", lw=2, label="exact target $Q^\\pi - \\hat V$")
    ax2.axvline(np.mean(bv_all["samples"][i]), color="k", ls="--", label="mean of the estimates")
    ax2.set_xlabel(f"GAE advantage of (cell (1, 2), up) at $\\lambda$ = {lam_grid[i]:g}")
    ax2.set_ylabel("number of visits")
    ax2.set_xlim(-12, 12)
    ax2.legend(fontsize=8)
    plt.show()


show_lambda(0.5)
display(widgets.interactive(show_lambda, lam=widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1,
                                                                 description="lambda")))
""", tags=IGNORE)

md(r"""
**$\epsilon$.** The clip range: small $\epsilon$ means cautious steps (and more clipped samples), large $\epsilon$
approaches the unclipped surrogate.
""")

code(r"""
def show_clip(clip_eps=0.2):
    figs.clip_objective_figure(clip_eps=clip_eps)
    plt.show()


show_clip(0.2)
display(widgets.interactive(show_clip, clip_eps=widgets.FloatSlider(value=0.2, min=0.05, max=0.95, step=0.05,
                                                                    description="epsilon")))
""", tags=IGNORE)

md(r"""
**Samples per estimate.** Averaging $n$ samples shrinks the spread of the REINFORCE estimate by $\sqrt n$, for every
baseline:
""")

code(r"""
def show_baseline(n_samples=1):
    figs.baseline_variance_figure(n_samples=n_samples)
    plt.show()


show_baseline(1)
display(widgets.interactive(show_baseline, n_samples=widgets.IntSlider(value=1, min=1, max=64, description="samples")))
""", tags=IGNORE)

# ================================================================================================
md(r"""
## 9. Small-model runs

### 9.1 PPO with GAE on the grid

The loop is `rlhf_edu.train.tabular_ppo.tabular_ppo`: a softmax policy table and a value table, trained from sampled
episodes with the library's `gae`, `whiten`, `ppo_clip_loss`, `value_loss`, `entropy` and
`kl_divergence_from_logits`; the exact value of the current policy (chapter 3) is logged at every iteration. The
sampler first, then the loop:
""")

code(r"""
print(inspect.getsource(sample_episodes))
""")

code(r"""
print(inspect.getsource(tabular_ppo_module._tabular_ppo))
""")

md(r"""
On the classic grid of chapter 3 ($\gamma = 0.9$, no terminal state: every episode is cut after 30 steps and
bootstrapped with the critic), starting from the uniform policy, 40 iterations of 32 episodes. **Expected runtime:
about 3 to 8 seconds.**
""")

code(r"""
grid, grid_layout = rn.classic_grid_world()
t_start = time.perf_counter()
ppo_policy, ppo_critic, grid_hist = tabular_ppo(grid, return_critic=True)
print(f"tabular PPO: {len(grid_hist) - 1} iterations in {time.perf_counter() - t_start:.1f} s")
""", tags=IGNORE)

code(r"""
v_ppo = rn.policy_evaluation(grid, ppo_policy)
v_opt, _ = rn.value_iteration(grid)
q_opt = rn.action_values(grid, v_opt)
greedy_ok = np.isclose(q_opt[np.arange(25), ppo_policy.argmax(axis=1)], q_opt.max(axis=1))
print(f"mean value: random start {grid_hist.first('objective'):.3f} -> PPO {grid_hist.last('objective'):.3f}"
      f"  (optimum {grid_hist.last('optimum'):.3f})")
print(f"PPO's greedy action is optimal in {greedy_ok.sum()} of 25 states; V(A) = {v_ppo[1]:.2f} (V*(A) = {v_opt[1]:.2f})")
print(f"critic error max_s |V_w - V^pi|: first {grid_hist['critic_error'][0]:.2f}, last {grid_hist['critic_error'][-2]:.2f}")
assert grid_hist.last("gap") < 0.05 * grid_hist.first("gap")
assert greedy_ok.sum() >= 23
""")

code(r"""
fig = figs.tabular_ppo_figure(grid_hist)
plt.show()
fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.4), layout="constrained")
plot_grid_values(grid_layout, v_ppo, rn.greedy_policy(ppo_policy, ties="uniform"), ax=axes[0],
                 title="PPO: $V^\\pi$ and its most likely actions")
plot_grid_values(grid_layout, v_opt, rn.greedy_policy(q_opt, ties="uniform"), ax=axes[1], title="chapter 3: $V^*$ and $\\pi^*$")
plt.show()
""")

md(r"""
PPO found the optimal behaviour from samples alone, and its critic converged to the true $V^\pi$.

### 9.2 The token-level MDP

Now the states are texts. First a tiny language model (GPT-2 architecture, 2 layers, width 64) learns to write
reviews by supervised fine-tuning on the sentiment task's mixed reviews (`rlhf_edu.train.recipes`, a short run);
it is the starting policy and the frozen reference. The reward is the task's documented gold reward (in $[0, 1]$;
positive words up, negative words and defects down). **Expected runtime: about 20 to 50 seconds** (120 steps of 64
reviews; more on a busy machine).
""")

code(r"""
from rlhf_edu.tasks import gold_reward
from rlhf_edu.train.ppo import ppo
from rlhf_edu.train.recipes import sentiment_sft_policy
from rlhf_edu.train.rollouts import collect_rollouts, frozen_copy

t_start = time.perf_counter()
policy, tok, task, sft_hist = sentiment_sft_policy(steps=120, d_model=64, device="cpu", progress=False)
print(f"SFT: {len(sft_hist)} steps in {time.perf_counter() - t_start:.1f} s")
""", tags=IGNORE)

code(r"""
print(f"SFT loss: first {sft_hist.first('loss'):.3f}, last {sft_hist.last('loss'):.3f} nats per token")
sft_model = frozen_copy(policy)   # the reference, kept for comparisons
for seed in range(50):   # the first draw that the gold reward likes (most SFT samples still misspell)
    batch = collect_rollouts(policy, tok, ["review: the film was"], gold_reward, ref_model=sft_model,
                             max_new_tokens=24, generator=torch.Generator().manual_seed(seed))
    if batch.rewards[0].item() > 0.3:
        break
P = batch.rollout.prompt_length
ids = batch.rollout.input_ids[0, P:][batch.rollout.completion_mask[0, P:] > 0].tolist()
completion = batch.rollout.completions[0]
print(f"prompt: {batch.rollout.prompts[0]!r}   completion: {completion!r}   score: {batch.rewards[0].item():.4f}")
print(" t  state s_t (prompt + prefix)                      action a_t   log pi(a_t|s_t)")
for t in range(6):
    state = batch.rollout.prompts[0] + tok.decode(ids[:t])
    print(f"{t:2d}  {state!r:50s} {tok.decode(ids[t:t + 1])!r:10s}   {batch.logp_old[0, P + t].item():8.4f}")
""")

md(r"""
The per-token rewards of section 3.8 for this completion: the score at the last (end) token, $-\beta$ times the
log-ratio to the reference everywhere. Before any RL the policy *is* the reference, so every KL term is 0; GAE with
$\gamma = 1$ and a critic that knows nothing (all zeros), $\lambda = 1$, hands the final score back to every token:
""")

code(r"""
mask = batch.rollout.completion_mask[:, P:].double()
token_rewards = rt.kl_penalized_rewards(batch.rewards.double(), batch.logp_old[:, P:].double(),
                                        batch.logp_ref[:, P:].double(), mask, beta=0.05)
adv_tok, _ = rt.gae(token_rewards, torch.zeros_like(token_rewards), gamma=1.0, lam=1.0)
n_tok = int(mask.sum())
print("rewards   :", token_rewards[0, :n_tok].numpy().round(4))
print("advantages:", adv_tok[0, :n_tok].numpy().round(4))
assert abs(token_rewards[0, :n_tok].sum().item() - batch.rewards[0].item()) < 1e-6
assert torch.allclose(adv_tok[0, :n_tok], batch.rewards[0].double())
""")

md(r"""
### 9.3 PPO on the tiny language model

`rlhf_edu.train.ppo.ppo` is the InstructGPT loop: rollout, score at the end token, per-token KL penalty, GAE with the
critic frozen for the batch, whitening, then epochs of minibatch updates of the clipped policy loss and the clipped
value loss. One iteration of it, from its source (the shared loop `rlhf_edu.train.loop.run_steps` calls it once per
step, evaluates on schedule and logs the returned row):
""")

code(r"""
source = inspect.getsource(ppo)
start, end = source.index("    def train_step(step):"), source.index("    run_steps(")
print(source[start:end])
""")

md(r"""
The implementation details of the notes' "PPO implementation tricks" slide are explicit options of `ppo`
(defaults in brackets):

| The notes' trick | `ppo` option |
|---|---|
| Predict the reward only on the end-of-text token | always: `kl_penalized_rewards` pays the score at the last token; `missing_eos_penalty` (None) for completions cut before their end token |
| Token-level reinforcement learning | always: per-token rewards, values and GAE over the completion tokens |
| KL divergence term | `kl_coef` (0.05), `kl_estimator` ("k1"), `kl_in="reward"` (InstructGPT) or `"loss"`, `adaptive_kl` (False) |
| Reward normalisation | `reward_normalization` ("running"; also "batch", None) |
| Advantage normalisation | `whiten_advantages` (True) |
| Critic initialised from the reward model | `critic_init` ("reward_model" when the reward is a `RewardModel`, else "policy") |
| Lower learning rate for the actor than the critic | `lr` (1e-4) < `critic_lr` (1e-3) |
| Freeze the actor while the critic warms up | `critic_warmup_steps` (0) |
| GAE | `gamma` (1.0), `lam` (0.95) |
| Pre-training loss term, warmup-cosine schedule | not in the book's trainer |

The reward here is the gold reward itself (a function, so the critic starts from the policy's backbone; with a
learned `RewardModel`, `critic_init="reward_model"` copies it). 20 PPO iterations of 64 completions, evaluated on
64 held-out prompts before and after. **Expected runtime: about 15 to 40 seconds.**
""")

code(r"""
t_start = time.perf_counter()
policy, lm_hist = ppo(policy, tok, task.prompts(256), gold_reward, ref_model=sft_model, steps=20, batch_size=64,
                      minibatch_size=32, max_new_tokens=24, kl_coef=0.05, lr=1e-4, critic_lr=1e-3,
                      whiten_advantages=True, reward_normalization="running", critic_warmup_steps=0,
                      gold_reward_fn=gold_reward, eval_prompts=task.prompts(64, split="test"), eval_every=20,
                      seed=0, device="cpu", progress=False)
print(f"PPO: {lm_hist.config['steps']} iterations in {time.perf_counter() - t_start:.1f} s")
sft_gold, final_gold = lm_hist.first("eval_gold_reward"), lm_hist.last("eval_gold_reward")
assert final_gold > sft_gold + 0.2, (sft_gold, final_gold)
""", tags=IGNORE)

code(r"""
print(f"held-out gold reward: SFT {lm_hist.first('eval_gold_reward'):.3f} -> PPO {lm_hist.last('eval_gold_reward'):.3f}")
print(f"exact KL to the SFT model on held-out prompts: {lm_hist.last('eval_kl'):.3f} nats per completion")
print(f"last iteration: clip fraction {lm_hist['clip_fraction'][-2]:.3f}, value error {lm_hist['value_error'][-2]:.3f}, "
      f"entropy {lm_hist['entropy'][-2]:.3f} nats/token, length {lm_hist['length'][-2]:.1f} tokens")
fig = plot_history(lm_hist, keys=("reward", "kl", "clip_fraction", "value_error", "entropy", "length"))
plt.show()
""")

md(r"""
Reward up, KL to the reference growing (the price), clip fraction small (the clip acts on a few tokens), the
critic's error coming down as it learns the new policy's returns, entropy and length falling. What the model writes,
before and after (the same random draws for both):
""")

code(r"""
from rlhf_edu.train.evaluation import evaluate_policy

demo_prompts = task.prompts(4, split="test", seed=3)
for name, model in (("SFT", sft_model), ("PPO", policy)):
    out = evaluate_policy(model, tok, demo_prompts, gold_reward_fn=gold_reward, max_new_tokens=24, seed=7, n_examples=4)
    print(f"{name}: mean gold reward {out['gold_reward']:.3f}")
    for prompt, completion in out["examples"]:
        print(f"   {prompt}{completion!r}")
""")

md(r"""
The SFT model misspells; the PPO model writes short, positive, correctly spelled reviews, and many of them are the
same few words: with $\beta = 0.05$ the policy has moved far from the SFT model (several nats) towards what the gold
reward likes most. A larger `kl_coef` keeps it closer (try 0.2); chapter 2's KL-regularised optimum says where it
should end up. After PPO the per-token rewards carry the KL price: tokens the policy now prefers more than the
reference pay $-\beta\log\frac{\pi}{\pi_{ref}} < 0$.
""")

code(r"""
batch = collect_rollouts(policy, tok, ["review: the film was"], gold_reward, ref_model=sft_model, max_new_tokens=24,
                         generator=torch.Generator().manual_seed(0))
P = batch.rollout.prompt_length
mask = batch.rollout.completion_mask[:, P:].double()
token_rewards = rt.kl_penalized_rewards(batch.rewards.double(), batch.logp_old[:, P:].double(),
                                        batch.logp_ref[:, P:].double(), mask, beta=0.05)
n_tok = int(mask.sum())
print(f"completion {batch.rollout.completions[0]!r}, score {batch.rewards[0].item():.4f}")
print("per-token rewards:", token_rewards[0, :n_tok].numpy().round(4))
print(f"sum = score - beta * log-ratio of the sequence: {token_rewards[0].sum().item():.4f}")
""")

# ================================================================================================
md(r"""
## 10. Common bugs

### Bug 1: bootstrapping across an episode end (termination vs truncation)

Two episodes in one row: the first ends (terminates) after step 1, the second is cut by the rollout length after
step 3 and goes on. Without `dones`, GAE lets the second episode's rewards leak into the first; with `dones` but
no bootstrap value, the cut episode is treated as if it had ended. The fix passes both:
""")

code(r"""
rewards_row, values_row = np.array([1.0, 1.0, 1.0, 1.0]), np.array([2.0, 1.0, 2.0, 2.0])
v_next_state = 2.0   # the critic's value of the state after the cut
bug_leak = rn.gae(rewards_row, values_row, 0.9, 1.0)[0]
bug_trunc = rn.gae(rewards_row, values_row, 0.9, 1.0, dones=np.array([0, 1, 0, 0]))[0]
fixed = rn.gae(rewards_row, values_row, 0.9, 1.0, dones=np.array([0, 1, 0, 0]), last_value=v_next_state)[0]
print("no dones (leaks)          :", bug_leak)
print("dones, no bootstrap       :", bug_trunc)
print("dones + bootstrap (right) :", fixed)
assert np.allclose(fixed[:2], [1.0 + 0.9 * 1.0 - 2.0, 1.0 - 1.0]) and not np.allclose(bug_leak[:2], fixed[:2])
assert np.allclose(fixed[2:], [1 + 0.9 + 0.81 * 2.0 - 2.0, 1 + 0.9 * 2.0 - 2.0]) and not np.allclose(bug_trunc[2:], fixed[2:])
""")

md(r"""
On the classic grid, whose episodes never end, treating every cut as an end teaches the critic the value of the
next few steps instead of the discounted future. With rollouts of 5 steps (about 4 seconds):
""")

code(r"""
_, _, h_right = tabular_ppo(grid, max_steps=5, iterations=25, return_critic=True)
_, _, h_wrong = tabular_ppo(grid, max_steps=5, iterations=25, return_critic=True, bootstrap_truncated=False)
print(f"critic error with the bootstrap {h_right['critic_error'][-2]:.2f}, "
      f"treating truncation as termination {h_wrong['critic_error'][-2]:.2f} (return units)")
assert h_wrong["critic_error"][-2] > 3 * h_right["critic_error"][-2]
""")

md(r"""
### Bug 2: advantages computed with the updated critic

PPO computes the advantages **once per batch**, with the critic as it was at rollout time (the PPO loop above says
so in a comment). Updating the critic on the batch first and then computing $\hat A = G - V_{new}$ lets each sample
explain itself: the critic has already absorbed the sample's own return. On the learn/sleep example, a critic fitted
to a batch of $N$ returns predicts their mean, so $\hat A_i = r_i - \bar r$, and the gradient estimate shrinks by a
factor $(N-1)/N$ on average; with one episode per batch it is exactly 0 and nothing is learned.
""")

code(r"""
def mean_gradient(n, critic, batches=20000, seed=0):
    # average over many batches of the REINFORCE estimate (logit of "learn") with the given critic
    rng = np.random.default_rng(seed)
    a = rng.choice(2, size=(batches, n), p=pi_ls)
    r = q_ls[a]
    baseline = r.mean(axis=1, keepdims=True) if critic == "updated on the batch" else v_ls
    grad_learn = ((r - baseline) * ((a == 0) - pi_ls[0])).mean(axis=1)
    return grad_learn.mean()


print(f"exact gradient (logit of learn): {exact_grad[0]:.4f}")
for n in (1, 2, 4):
    right, wrong = mean_gradient(n, "frozen"), mean_gradient(n, "updated on the batch")
    print(f"N = {n}: critic frozen at rollout {right:.4f}   critic updated on the batch {wrong:.4f}"
          f"  (expected {(n - 1) / n:.2f} x exact)")
    assert abs(right - exact_grad[0]) < 0.01 and abs(wrong - (n - 1) / n * exact_grad[0]) < 0.01
""")

md(r"""
### Bug 3: the KL penalty with the wrong sign, or in the wrong direction

The KL-regularised objective $\mathbb E_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_{ref})$ has the closed-form optimum
$\pi^* \propto \pi_{ref}\,e^{r/\beta}$ (chapter 2, `rn.kl_regularized_optimum`). Exact gradient ascent on a
three-answer problem reaches it. With the sign flipped (as in the notes' Protocol 4) the "penalty" pays for
drifting and the policy runs away from the reference; with the direction flipped, $\mathrm{KL}(\pi_{ref}\|\pi)$, it
converges somewhere else.
""")

code(r"""
r3 = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
ref3 = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
beta = 0.5
target = rn.kl_regularized_optimum(ref3.numpy(), r3.numpy(), beta)


def ascend(penalty, steps=400, lr=0.5):
    theta = torch.log(ref3).clone().requires_grad_(True)
    for _ in range(steps):
        pi = torch.softmax(theta, dim=-1)
        objective = (pi * r3).sum() - beta * penalty(pi)
        grad, = torch.autograd.grad(objective, theta)
        theta = (theta + lr * grad).detach().requires_grad_(True)
    return torch.softmax(theta, dim=-1).detach()


runs = {
    "right: - beta KL(pi || ref)": lambda pi: rt.kl_divergence(pi, ref3),
    "sign flipped: + beta KL": lambda pi: -rt.kl_divergence(pi, ref3),
    "direction flipped: KL(ref || pi)": lambda pi: rt.kl_divergence(ref3, pi),
}
print("closed-form optimum:", target.round(4))
for name, penalty in runs.items():
    pi = ascend(penalty)
    print(f"{name:34s} -> pi = {pi.numpy().round(4)}, KL(pi || ref) = {rt.kl_divergence(pi, ref3).item():.3f}")
    if name.startswith("right"):
        assert np.allclose(pi.numpy(), target, atol=1e-4)
    else:
        assert not np.allclose(pi.numpy(), target, atol=1e-2)
""")

# ================================================================================================
md(r"""
## 11. Exercises

Each exercise is a function you write; the checker compares it with the library on edge cases (the notes' examples
among them) and random inputs, and prints **PASS** or the first input where it differs. The stubs are deliberately
wrong: **replace each body until the check prints PASS**.

**Exercise 1: the REINFORCE loss.** `logp` (B, T) log-probabilities of the sampled tokens, `advantages` (B, T),
`mask` (B, T) 1 on real tokens. Return $-\frac{1}{\sum m}\sum_t m_t A_t \log\pi_t$ (a scalar).
""")

code(r"""
def my_reinforce_loss(logp, advantages, mask):
    # YOUR CODE HERE
    return np.sum(advantages * logp)          # wrong sign, padding counted, a sum instead of a mean


result = check_reinforce_loss(my_reinforce_loss)
""")

md(r"""
**Exercise 2: GAE.** `rewards`, `values`, `dones` of shape (..., T), time on the last axis; `gamma`, `lam`;
`last_value` the critic's value after the last step (a scalar or one per row). Return the advantages (..., T):
$\delta_t = r_t + \gamma V_{t+1}(1-d_t) - V_t$ with $V_T$ = `last_value`, $\hat A_t = \delta_t + \gamma\lambda(1-d_t)\hat A_{t+1}$.
""")

code(r"""
def my_gae(rewards, values, gamma, lam, dones, last_value):
    # YOUR CODE HERE
    rewards, values = np.asarray(rewards, dtype=float), np.asarray(values, dtype=float)
    return rewards - values                   # only the immediate reward: not yet GAE


result = check_gae(my_gae)
""")

md(r"""
**Exercise 3: PPO's clipped objective.** `ratio`, `advantages` (same shape), `clip_eps`. Return
$\min(\rho A, \mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon)A)$ per element.
""")

code(r"""
def my_clipped_objective(ratio, advantages, clip_eps):
    # YOUR CODE HERE
    return np.asarray(ratio) * np.asarray(advantages)   # the unclipped surrogate


result = check_clipped_objective(my_clipped_objective)
""")

md(r"""
**Exercise 4: value-loss clipping.** `values` (the critic now), `returns` (targets), `old_values` (the critic at
rollout), `clip`. Return $\frac12\,\mathrm{mean}\max\big((V-R)^2, (V_{old} + \mathrm{clip}(V - V_{old}, -c, c) - R)^2\big)$.
""")

code(r"""
def my_clipped_value_loss(values, returns, old_values, clip):
    # YOUR CODE HERE
    return np.mean((np.asarray(values) - np.asarray(returns)) ** 2)   # no clipping, no 1/2


result = check_value_loss_clipping(my_clipped_value_loss)
""")

# ================================================================================================
md(r"""
## 12. Summary and further reading

- Policy gradient: $\nabla_\theta J = \mathbb E[\nabla_\theta\log\pi_\theta(a|s)\,A(s,a)]$ from
  $\nabla\pi = \pi\nabla\log\pi$; the dynamics drop out; a sequence's log-probability is the sum over its tokens.
- A baseline $b(s)$ keeps the estimate unbiased and can cut its variance; with $b = V$ the weight is the advantage
  $A = Q - V$, which averages to 0 under the policy.
- GAE($\lambda$) $= \sum_l(\gamma\lambda)^l\delta_{t+l}$ slides from TD(0) (biased by the critic, low variance) to
  Monte Carlo (unbiased, high variance); the best $\lambda$ is in between, as measured against the exact advantage.
- The surrogate $\mathbb E_{\pi_{old}}[\rho A^{\pi_{old}}]$ comes from the performance difference lemma and is only
  trustworthy near $\pi_{old}$: PPO clips the ratio to $[1-\epsilon, 1+\epsilon]$ (pessimistically) or penalises
  $\mathrm{KL}(\pi_{old}\|\pi)$; the full loss adds a clipped value loss, an entropy bonus and a KL term.
- For a language model the state is the prompt plus the prefix, the action the next token, the reward the score at
  the end minus $\beta$ times the per-token log-ratio to the reference.

Papers:

- R. J. Williams, *Simple statistical gradient-following algorithms for connectionist reinforcement learning*, 1992 (REINFORCE).
- R. S. Sutton, D. McAllester, S. Singh, Y. Mansour, *Policy gradient methods for reinforcement learning with function approximation*, 2000.
- S. Kakade, J. Langford, *Approximately optimal approximate reinforcement learning*, 2002 (performance difference lemma).
- J. Schulman, S. Levine, P. Moritz, M. Jordan, P. Abbeel, *Trust region policy optimization*, 2015.
- J. Schulman, P. Moritz, S. Levine, M. Jordan, P. Abbeel, *High-dimensional continuous control using generalized advantage estimation*, 2016.
- J. Schulman, F. Wolski, P. Dhariwal, A. Radford, O. Klimov, *Proximal policy optimization algorithms*, 2017.
- D. M. Ziegler et al., *Fine-tuning language models from human preferences*, 2019.
- N. Stiennon et al., *Learning to summarize from human feedback*, 2020.
- L. Ouyang et al., *Training language models to follow instructions with human feedback*, 2022 (InstructGPT).
- S. Huang et al., *The 37 implementation details of proximal policy optimization*, 2022.
- R. Zheng et al., *Secrets of RLHF in large language models part I: PPO*, 2023.
- J. Hu et al., *OpenRLHF: an easy-to-use, scalable and high-performance RLHF framework*, 2024.
""")

code(r"""
print(f"chapter 4 ran in {time.perf_counter() - T0:.1f} s")
""", tags=IGNORE)


if __name__ == "__main__":
    book.write()
