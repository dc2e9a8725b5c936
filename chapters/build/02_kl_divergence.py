"""Build chapters/02_kl_divergence.ipynb (run from the repository root; then execute it with nbconvert).

    .venv/bin/python chapters/build/02_kl_divergence.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace chapters/02_kl_divergence.ipynb \
        --ExecutePreprocessor.timeout=600
"""

from chapter_builder import ChapterBuilder

book = ChapterBuilder("02_kl_divergence.ipynb")
md, code = book.md, book.code


# ------------------------------------------------------------------------------------------------ 1. goals
md(r"""
# Chapter 2. KL divergence and its estimators

Every RLHF method in this book keeps the policy $\pi_\theta$ close to a reference model $\pi_{ref}$ (the SFT
model) by paying $\beta\,\mathrm{KL}(\pi_\theta \| \pi_{ref})$. This chapter is about that one quantity: what
it measures, why it is never negative, why its two directions behave so differently, and how PPO and GRPO
estimate it from a handful of sampled tokens.

## 1. Goals

After this chapter you can

1. compute $\mathrm{KL}(P\|Q)$ of two categorical distributions by hand and in code (zeros included), and
   prove that it is $\ge 0$;
2. say which direction the RLHF penalty uses and what "mode seeking" versus "mode covering" means for a
   policy;
3. write the three sample estimators k1, k2, k3, state which are unbiased, and measure their bias and
   spread by Monte Carlo;
4. explain why PPO puts k1 in the *reward* while GRPO puts k3 in the *loss*, and what a per-token KL
   summed over a sequence estimates;
5. see on a toy how $\beta$ in $\max_\pi \mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_{ref})$ trades reward
   against drift.
""")

code(r"""
%matplotlib inline
%config InlineBackend.figure_formats = ["png"]
import inspect
import itertools
import math
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch

from rlhf_edu import numpy as rn
from rlhf_edu import torch as rt
from rlhf_edu.exercises import check_kl_divergence, check_kl_estimate, check_monte_carlo_bias
from rlhf_edu.figures import kl_divergence as figs

np.random.seed(0)
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models gain nothing from a second thread, and lose a lot on a busy machine
T_START = time.perf_counter()
""")

# ------------------------------------------------------------------------------------------------ 2. idea
md(r"""
## 2. The idea in words and one picture

Two language models read *"the cat sat on the ..."*. Model 1 (the lecture notes' $P$) says *mat* 0.7, *floor*
0.2, *chair* 0.1; model 2 ($Q$) says 0.5, 0.3, 0.2. How different are they?

The KL divergence answers from $P$'s point of view: draw a word from $P$, and ask how much more likely $P$
found it than $Q$ did, on a log scale, $\log\frac{P(i)}{Q(i)}$. Average that over $P$'s draws. Words that
$P$ likes more than $Q$ add to the sum, words that $P$ likes less subtract from it, each weighted by how often
$P$ says it. The average is never negative, and it is 0 only when the two models agree on every word.

In RLHF, $P$ is the policy being trained and $Q$ the frozen reference model: the KL says how far training has
moved the policy, measured on the answers the policy actually gives.
""")

code(r"""
fig = figs.kl_terms_figure()
plt.show()
""")

# ------------------------------------------------------------------------------------------------ 3. derivation
md(r"""
## 3. Derivation

### 3.1 Definition and the notes' worked example

For two distributions $P$ and $Q$ on the same finite set,

$$\mathrm{KL}(P\|Q) \;=\; \sum_i P(i)\,\log\frac{P(i)}{Q(i)} \qquad\text{(in nats with the natural log; divide by }\log 2\text{ for bits)}$$

with two conventions that follow from limits: a term with $P(i) = 0$ is $0$ (since $p\log p \to 0$), and a
term with $P(i) > 0 = Q(i)$ is $+\infty$ ($Q$ calls impossible something that $P$ does).

The notes substitute their example:

$$\mathrm{KL}(P\|Q) = 0.7\log\frac{0.7}{0.5} + 0.2\log\frac{0.2}{0.3} + 0.1\log\frac{0.1}{0.2}
= 0.7(0.3365) + 0.2(-0.4055) + 0.1(-0.6931)$$
$$= 0.2355 - 0.0811 - 0.0693 = 0.0851 \text{ nats} \;(= 0.1228 \text{ bits}).$$

*The notes stop after the substitution; the number is 0.0851 nats.* Two of the three terms are negative:
only the sum has a sign.

### 3.2 KL is never negative (Gibbs' inequality)

Use $\log x \le x - 1$ for $x > 0$, with equality only at $x = 1$ (the tangent of the concave $\log$ at 1).
Sum over the support $S = \{i : P(i) > 0\}$:

$$-\mathrm{KL}(P\|Q) = \sum_{i\in S} P(i)\log\frac{Q(i)}{P(i)} \;\le\; \sum_{i\in S} P(i)\Big(\frac{Q(i)}{P(i)} - 1\Big)
= \sum_{i\in S} Q(i) - 1 \;\le\; 0 .$$

So $\mathrm{KL}(P\|Q) \ge 0$, with equality only if $Q(i) = P(i)$ on $S$ and $Q$ puts no mass outside $S$,
that is $Q = P$.

### 3.3 KL is not symmetric

Swap the roles: $\mathrm{KL}(Q\|P) = 0.5\log\frac{0.5}{0.7} + 0.3\log\frac{0.3}{0.2} + 0.2\log\frac{0.2}{0.1}
= -0.1682 + 0.1216 + 0.1386 = 0.0920 \ne 0.0851$. KL is not a distance, and the direction matters most
when one distribution has (almost) zeros:

- **forward** $\mathrm{KL}(p\|q)$, minimised over $q$: the terms are weighted by $p$, and $\log\frac{p}{q}$
  explodes where $p > 0$ and $q \to 0$. So $q$ must put mass *everywhere* $p$ does: **mode covering**
  ("zero avoiding"). Maximum-likelihood training (SFT) minimises this direction, $\mathrm{KL}(\text{data}\|
  \text{model})$.
- **reverse** $\mathrm{KL}(q\|p)$, minimised over $q$: the terms are weighted by $q$, and explode where $q > 0$
  and $p \to 0$. So $q$ must stay *inside* $p$'s support but may ignore whole modes: **mode seeking**
  ("zero forcing").

The RLHF penalty $\mathrm{KL}(\pi_\theta\|\pi_{ref})$ is the reverse one for the policy: the policy may
concentrate on a few of the reference model's answers (less diversity), but it pays a lot for any answer the
reference model finds (nearly) impossible, such as gibberish.

### 3.4 KL is an expectation, which is what the RLHF objective uses

$$\mathrm{KL}(P\|Q) = \sum_i P(i)\big(\log P(i) - \log Q(i)\big) = \mathbb{E}_{x\sim P}\Big[\log\frac{P(x)}{Q(x)}\Big].$$

Put the policy for $P$ and the reference for $Q$, and the KL-regularised objective of the notes becomes one
expectation over the policy's own answers:

$$\max_{\pi_\theta}\; \mathbb{E}_{x\sim D,\,y\sim\pi_\theta(\cdot|x)}\big[r(x,y)\big] - \beta\,\mathrm{KL}\big(\pi_\theta(\cdot|x)\,\|\,\pi_{ref}(\cdot|x)\big)
\;=\; \max_{\pi_\theta}\; \mathbb{E}_{x\sim D,\,y\sim\pi_\theta(\cdot|x)}\Big[r(x,y) - \beta\log\frac{\pi_\theta(y|x)}{\pi_{ref}(y|x)}\Big].$$

This is the notes' "add a penalty for drifting": a per-sample term $-\beta\log\frac{\pi_\theta(y|x)}{\pi_{ref}(y|x)}$
added to the reward. One sample "pays a price when $p_\theta(y|x) > p_{PT}(y|x)$" and *earns* a bonus when
$p_\theta(y|x) < p_{PT}(y|x)$; only the expectation is the KL, and only the expectation is $\ge 0$.

### 3.5 Estimating KL from samples: k1, k2, k3

A language model's answers $y$ range over every string: the sum over $y$ cannot be computed. What we have is
samples $x \sim p$ (the policy's answers) and the two log-probabilities of each. Write
$\ell = \log p(x) - \log p_{ref}(x)$ and $r = \frac{p_{ref}(x)}{p(x)} = e^{-\ell}$. Schulman's note
("Approximating KL divergence", 2020) compares three per-sample estimates:

| | formula | $\mathbb{E}_{x\sim p}[\,\cdot\,]$ | sign |
|---|---|---|---|
| k1 | $\ell = -\log r$ | $\mathrm{KL}(p\|p_{ref})$: **unbiased** | often negative |
| k2 | $\tfrac12 \ell^2$ | $\ne \mathrm{KL}$ in general: **biased** | $\ge 0$ |
| k3 | $(r - 1) - \log r = (e^{-\ell} - 1) + \ell$ | $\mathrm{KL}(p\|p_{ref})$: **unbiased** | $\ge 0$ |

- k1 is unbiased by 3.4. But when $p \approx p_{ref}$ its values are $\pm$ a lot around a tiny mean: high
  relative variance.
- k2 is $\tfrac12(\log r)^2$. Its expectation is the $f$-divergence with $f(r) = \tfrac12(\log r)^2$, whose
  second-order expansion around $r = 1$ is the same as KL's, so its bias is small only while $p \approx p_{ref}$.
- k3 adds to k1 the term $r - 1$, whose expectation is 0:
  $\mathbb{E}_{x\sim p}[r] = \sum_x p(x)\frac{p_{ref}(x)}{p(x)} = \sum_x p_{ref}(x) = 1$ (when $p_{ref}$ has no
  mass outside $p$'s support). So k3 is unbiased, and by $\log r \le r - 1$ (3.2) **every** sample is $\ge 0$:
  a control variate that removes k1's sign problem. This is GRPO's eq. (2),
  $\frac{\pi_{ref}}{\pi_\theta} - \log\frac{\pi_{ref}}{\pi_\theta} - 1$.

**Worked case: two Gaussians.** Let $p = \mathcal N(\mu, 1)$, $p_{ref} = \mathcal N(0,1)$. Then
$\ell = -\frac{(x-\mu)^2}{2} + \frac{x^2}{2} = \mu x - \frac{\mu^2}{2}$, and with $x = \mu + z$, $z\sim\mathcal N(0,1)$:
$\ell = \mu z + \frac{\mu^2}{2}$. Hence

- $\mathrm{KL} = \mathbb{E}[\ell] = \mu^2/2$ (0.005 for $\mu = 0.1$, 0.5 for $\mu = 1$: Schulman's two cases);
- $\mathrm{std}(k1) = \mu$, so $\mathrm{std}(k1)/\mathrm{KL} = 2/\mu$: **20** for $\mu = 0.1$;
- $\mathbb{E}[k2] = \tfrac12\mathbb{E}[\ell^2] = \tfrac12\big(\mu^2 + \tfrac{\mu^4}{4}\big) = \mathrm{KL} + \tfrac{\mu^4}{8}$,
  a relative bias of $\mu^2/4$: **0.0025** for $\mu = 0.1$, **0.25** for $\mu = 1$;
- $\mathrm{Var}(k2) = \tfrac14\mathrm{Var}(\ell^2) = \tfrac14(4m^2s^2 + 2s^4)$ with mean $m = \mu^2/2$ and
  variance $s^2 = \mu^2$ of $\ell$, so $\mathrm{std}(k2)/\mathrm{KL} = \sqrt{2 + \mu^2}$: **1.42** for $\mu = 0.1$.

Section 5 checks all three by Monte Carlo.

### 3.6 Which estimator goes where: k1 in PPO's reward, k3 in GRPO's loss

**PPO for language models** (Ziegler et al. 2019, InstructGPT 2022) puts $-\beta\,\ell_t$ (k1 of each token)
into the reward. A reward is never differentiated; the policy-gradient (score-function) estimator
differentiates its expectation instead:

$$\nabla_\theta\,\mathbb{E}_{y\sim\pi_\theta}[\ell(y)] = \mathbb{E}\big[\ell(y)\,\nabla_\theta\log\pi_\theta(y)\big]
+ \underbrace{\mathbb{E}\big[\nabla_\theta\log\pi_\theta(y)\big]}_{=\,\sum_y \nabla_\theta\pi_\theta(y)\,=\,\nabla_\theta 1\,=\,0}
= \nabla_\theta\,\mathrm{KL}(\pi_\theta\|\pi_{ref}).$$

So k1 in the reward gives exactly the gradient of the KL. It is also *additive*: the per-token k1 summed
along an answer is the log-ratio of the whole answer (3.7), an unbiased estimate of the sequence KL. Its
variance is handled by the critic and the advantages, like the rest of the reward.

**GRPO** (Shao et al. 2024) instead adds $\beta\,k3$ to the *loss* and lets autograd differentiate it with the
sampled tokens held fixed (no score-function term). In expectation over $y\sim\pi_\theta$:

- k1 in the loss: $\mathbb{E}[\nabla_\theta \ell(y)] = \mathbb{E}[\nabla_\theta\log\pi_\theta(y)] = 0$. **No gradient at all.**
- k3 in the loss: $\nabla_\theta k3 = (1 - r)\,\nabla_\theta\log\pi_\theta$, so
  $\mathbb{E}[\nabla_\theta k3] = \mathbb{E}[\nabla_\theta\log\pi_\theta] - \sum_y \pi_{ref}(y)\nabla_\theta\log\pi_\theta(y)
  = \nabla_\theta\big(-\sum_y \pi_{ref}(y)\log\pi_\theta(y)\big) = \nabla_\theta\,\mathrm{KL}(\pi_{ref}\|\pi_\theta)$.

The k3 loss term therefore pulls the policy along the gradient of the *other* direction of KL. Near
$\pi_\theta = \pi_{ref}$ both directions agree to second order, so in practice it works as a leash, and its
value is never negative and has low variance (Tang and Munos, 2025, discuss these pitfalls). Section 6 checks
all three gradients exactly with autograd. (GRPO samples from $\pi_{\theta_{old}}$, equal to $\pi_\theta$ at
the first step of each inner loop.)

### 3.7 Per-token KL over a sequence

An answer $y = (y_1, \dots, y_T)$ has $\pi(y) = \prod_t \pi(y_t | y_{<t})$, so its log-ratio is the sum of the
per-token log-ratios, $\log\frac{\pi(y)}{\pi_{ref}(y)} = \sum_t \ell_t$ with
$\ell_t = \log\pi(y_t|y_{<t}) - \log\pi_{ref}(y_t|y_{<t})$. Taking the expectation token by token (the tower
rule: first over $y_t$ given the prefix, then over the prefix) gives the **chain rule of KL**:

$$\mathrm{KL}(\pi\|\pi_{ref}) = \mathbb{E}_{y\sim\pi}\Big[\sum_t \ell_t\Big]
= \sum_t \mathbb{E}_{y_{<t}\sim\pi}\Big[\mathrm{KL}\big(\pi(\cdot|y_{<t})\,\|\,\pi_{ref}(\cdot|y_{<t})\big)\Big].$$

A "per-token KL" is the KL of the two next-token distributions at one prefix, the prefix drawn from the
*policy*. Summed over the tokens of an answer, it gives the sequence KL; k1 summed along a sampled answer
estimates it without bias, and the exact per-token KL over the whole vocabulary (computable from the two
models' logits at each position) estimates it with less noise. Averaging over tokens instead of summing
(GRPO's $\frac{1}{|o_i|}$, or the notes' "average over sequence and batch") gives a per-token average, which
weighs short and long answers differently.

### 3.8 A first look at $\max_\pi \mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_{ref})$

For one prompt with finitely many answers, let $\pi^*(y) = \pi_{ref}(y)\,e^{r(y)/\beta}/Z$ with
$Z = \sum_y \pi_{ref}(y)\,e^{r(y)/\beta}$. Then $\log\pi^*(y) = \log\pi_{ref}(y) + r(y)/\beta - \log Z$ and

$$\mathrm{KL}(\pi\|\pi^*) = \mathbb{E}_\pi\big[\log\pi - \log\pi_{ref} - r/\beta + \log Z\big]
= \mathrm{KL}(\pi\|\pi_{ref}) - \mathbb{E}_\pi[r]/\beta + \log Z,$$

so $J(\pi) = \mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_{ref}) = \beta\log Z - \beta\,\mathrm{KL}(\pi\|\pi^*)$.
By Gibbs (3.2) the maximum is at $\pi = \pi^*$ and is worth $\beta\log Z$. Small $\beta$: $\pi^*$ piles onto
the best answers (high reward, high KL); large $\beta$: $\pi^* \to \pi_{ref}$. Chapter 6 (DPO) derives this
properly and builds on it.

### Where the lecture notes slip

1. The worked KL example stops at the substitution: the value is **0.0851 nats** (3.1).
2. "Pay a price when $p^{RL}_\theta(\hat y|x) > p^{RL}_{PT}(\hat y|x)$": the reference model is $p_{PT}$ (no
   "RL"), and the per-sample term is a *bonus* in the other case; only its expectation is the KL (3.4).
3. The PPO cost-function slide writes the penalty as $\mathbb{E}_{s_t}[\mathrm{KL}(\pi_{\theta_{orig}}(\cdot|s_t)
   \,\|\,\pi_\theta(\cdot|s_t))]$, the reverse of the $\mathrm{KL}(\pi_\theta\|\pi_{ref})$ of the RLHF
   objective on the other slides. The two agree only to second order near $\pi_\theta = \pi_{orig}$; the
   objective's direction is $\mathrm{KL}(\pi_\theta\|\pi_{ref})$ (the PPO paper's own penalty,
   $\mathrm{KL}(\pi_{\theta_{old}}\|\pi_\theta)$ in eq. 5, is a trust region around the *old* policy, a different KL).
4. The GRPO slides write "$\mathbb{D}_{KL}(\pi_\theta\|\pi_{ref}) = \frac{\pi_{ref}}{\pi_\theta} -
   \log\frac{\pi_{ref}}{\pi_\theta} - 1$": the right-hand side is not the KL but k3, a per-sample *estimate* whose
   expectation over $o\sim\pi_\theta$ is the KL (3.5).
""")

# ------------------------------------------------------------------------------------------------ 4. numpy reference
md(r"""
## 4. The NumPy reference

The library computes exact KL on the last axis, with the two conventions of 3.1 in a helper:
""")

code(r"""
print(inspect.getsource(rn.divergences._kl_terms))
print(inspect.getsource(rn.kl_divergence))
""")

md(r"""
and the three estimators of 3.5 from two arrays of log-probabilities (k3 written as `expm1(-l) + l`; section
10 shows why):
""")

code(r"""
print(inspect.getsource(rn.kl_estimate))
""")

# ------------------------------------------------------------------------------------------------ 5. worked examples
md(r"""
## 5. Worked examples with numbers

### 5.1 The notes' example, term by term
""")

code(r"""
P, Q = np.array(figs.NOTES_P), np.array(figs.NOTES_Q)
terms = rn.kl_divergence(P, Q, reduction="none")
for word, p, q, t in zip(figs.NOTES_WORDS, P, Q, terms):
    print(f"{word:>6}: {p:.1f} * log({p:.1f} / {q:.1f}) = {p:.1f} * {math.log(p / q):+.4f} = {t:+.4f}")
kl_pq = rn.kl_divergence(P, Q)
print(f"KL(P || Q) = {kl_pq:.4f} nats = {kl_pq / math.log(2):.4f} bits")

by_hand = 0.7 * math.log(0.7 / 0.5) + 0.2 * math.log(0.2 / 0.3) + 0.1 * math.log(0.1 / 0.2)
assert abs(kl_pq - by_hand) < 1e-12
assert abs(kl_pq - 0.0851) < 5e-5
assert np.allclose(terms, [0.2355, -0.0811, -0.0693], atol=5e-5)
""")

md(r"""
### 5.2 Gibbs' inequality on 100,000 random pairs, and the direction
""")

code(r"""
rng = np.random.default_rng(0)
p_rand = rng.dirichlet(np.ones(5), size=100_000)
q_rand = rng.dirichlet(np.ones(5), size=100_000)
kls = rn.kl_divergence(p_rand, q_rand)
print(f"smallest KL over 100,000 random pairs: {kls.min():.2e}; KL(p || p) = {rn.kl_divergence(p_rand, p_rand).max():.1f}")
assert kls.min() >= 0 and rn.kl_divergence(p_rand, p_rand).max() == 0.0

kl_qp = rn.kl_divergence(Q, P)
print(f"KL(P || Q) = {kl_pq:.4f}   KL(Q || P) = {kl_qp:.4f}")
assert abs(kl_qp - 0.0920) < 5e-5

# with a zero, one direction is finite and the other infinite
policy, ref = np.array([0.9, 0.1, 0.0]), np.array([0.5, 0.3, 0.2])
print(f"policy dropped 'chair': KL(policy || ref) = {rn.kl_divergence(policy, ref):.4f}, "
      f"KL(ref || policy) = {rn.kl_divergence(ref, policy)}")
assert np.isfinite(rn.kl_divergence(policy, ref)) and np.isinf(rn.kl_divergence(ref, policy))
""")

md(r"""
### 5.3 Mode covering and mode seeking on a two-mode target

Fit one Gaussian $q$ (on a grid) to a two-bump $p$ by brute-force search over its mean and width, once for
each direction. Over Gaussians, the forward KL is minimised by matching $p$'s mean and variance (here on a
grid cut at $\pm 6$, so the fitted $\sigma$ is a little wider than $\sqrt{2.5^2 + 0.6^2} = 2.57$ to make up for
the cut tails); the reverse KL by sitting on one bump.
""")

code(r"""
grid, p_two = figs.bimodal_target()
mu_f, s_f, kl_f, q_f = figs.fit_gaussian_on_grid(p_two, grid, "forward")
mu_r, s_r, kl_r, q_r = figs.fit_gaussian_on_grid(p_two, grid, "reverse")
print(f"argmin_q KL(p || q): mu = {mu_f:+.2f}, sigma = {s_f:.2f}, KL = {kl_f:.4f}")
print(f"argmin_q KL(q || p): mu = {mu_r:+.2f}, sigma = {s_r:.2f}, KL = {kl_r:.4f}  (about log 2 = {math.log(2):.4f})")

var_p = p_two @ grid**2 - (p_two @ grid) ** 2
var_q = q_f @ grid**2 - (q_f @ grid) ** 2
print(f"variance of p: {var_p:.3f}; of the forward fit: {var_q:.3f} (moment matching)")
assert abs(mu_f) < 1e-9 and abs(var_q - var_p) / var_p < 0.03
assert abs(abs(mu_r) - 2.5) < 1e-9 and abs(s_r - 0.6) < 0.03
assert abs(kl_r - math.log(2)) < 0.01  # q covers one of two equal bumps: p = q / 2 there
""")

md(r"""
### 5.4 The estimators on Schulman's two Gaussians

One million samples of $p = \mathcal N(\mu, 1)$, reference $\mathcal N(0, 1)$. The Monte Carlo values sit
within two standard errors of the closed forms of 3.5 (bias of k1 and k3: 0; of k2: $\mu^2/4$ relative; spread
of k1: $2/\mu$ relative).
""")

code(r"""
print(f"{'true KL':>8} {'est':>4} {'bias/KL (MC)':>14} {'+- 2 se':>9} {'bias/KL exact':>14} {'std/KL (MC)':>12} {'std/KL exact':>13}")
for mu in (0.1, 1.0):
    s = figs.estimator_samples(mu_p=mu, n=1_000_000, seed=1)
    true_kl = s["true_kl"]
    assert abs(true_kl - mu**2 / 2) < 1e-12
    exact_bias = {"k1": 0.0, "k2": mu**2 / 4, "k3": 0.0}
    exact_std = {"k1": 2 / mu, "k2": math.sqrt(2 + mu**2), "k3": None}  # k3: no short closed form
    for k in ("k1", "k2", "k3"):
        bias, se = figs.monte_carlo_bias(s["logp"], s["logp_ref"], true_kl, k)
        rel_std = s[k].std() / true_kl
        exact = "-" if exact_std[k] is None else f"{exact_std[k]:.3f}"
        print(f"{true_kl:8.3f} {k:>4} {bias / true_kl:+14.4f} {2 * se / true_kl:9.4f} {exact_bias[k]:+14.4f} "
              f"{rel_std:12.3f} {exact:>13}")
        assert abs(bias / true_kl - exact_bias[k]) < 3 * se / true_kl
        if k != "k3":
            assert abs(rel_std - exact_std[k]) / exact_std[k] < 0.01
""")

md(r"""
These reproduce Schulman's table: for KL = 0.005, k1 has a relative spread of 20 while k2 and k3 have 1.42;
for KL = 0.5, k2 is 25% too high and k3 is still unbiased.

### 5.5 The chain rule on a three-token "language model"

A policy and a reference over a vocabulary of 3 tokens, 3 tokens long, each token depending on the previous
one. There are only $3^3 = 27$ sequences, so the sequence KL can be computed exactly and compared with the sum
of expected per-token KLs (prefixes drawn from the policy), then with k1 and k3 summed along sampled sequences.
""")

code(r"""
rng = np.random.default_rng(3)
V, T = 3, 3
pi_first, ref_first = rng.dirichlet(2 * np.ones(V)), rng.dirichlet(2 * np.ones(V))
pi_next, ref_next = rng.dirichlet(2 * np.ones(V), size=V), rng.dirichlet(2 * np.ones(V), size=V)  # [prev, next]

def seq_prob(first, nxt, seq):
    return first[seq[0]] * np.prod([nxt[a, b] for a, b in zip(seq[:-1], seq[1:])])

seqs = list(itertools.product(range(V), repeat=T))
pi_seq = np.array([seq_prob(pi_first, pi_next, s) for s in seqs])
ref_seq = np.array([seq_prob(ref_first, ref_next, s) for s in seqs])
kl_sequence = rn.kl_divergence(pi_seq, ref_seq)

# chain rule: sum over positions of the expected next-token KL, the prefix drawn from the POLICY
kl_per_state = rn.kl_divergence(pi_next, ref_next)  # KL of the next-token distributions after each token
marginal, per_token = pi_first, [rn.kl_divergence(pi_first, ref_first)]
for t in range(1, T):
    per_token.append(marginal @ kl_per_state)
    marginal = marginal @ pi_next
print("expected per-token KL at t = 1, 2, 3:", np.round(per_token, 4))
print(f"sum = {sum(per_token):.6f}   exact sequence KL = {kl_sequence:.6f}")
assert abs(sum(per_token) - kl_sequence) < 1e-12

# sampled: per-token k1 and k3 summed along 200,000 sequences drawn from the policy
n = 200_000
ys = np.zeros((n, T), dtype=int)
ys[:, 0] = (rng.random(n)[:, None] > np.cumsum(pi_first)).sum(axis=1)
for t in range(1, T):
    ys[:, t] = (rng.random(n)[:, None] > np.cumsum(pi_next[ys[:, t - 1]], axis=1)).sum(axis=1)
logp = np.concatenate([np.log(pi_first[ys[:, :1]]), np.log(pi_next[ys[:, :-1], ys[:, 1:]])], axis=1)
logp_ref = np.concatenate([np.log(ref_first[ys[:, :1]]), np.log(ref_next[ys[:, :-1], ys[:, 1:]])], axis=1)
for k in ("k1", "k3"):
    per_seq = rn.kl_estimate(logp, logp_ref, k).sum(axis=1)  # sum over tokens, one number per sequence
    se = per_seq.std(ddof=1) / math.sqrt(n)
    print(f"{k} summed over tokens: mean {per_seq.mean():.4f} +- {2 * se:.4f} (2 se), spread per sequence {per_seq.std():.3f}")
    assert abs(per_seq.mean() - kl_sequence) < 3 * se
""")

md(r"""
Both sums are unbiased for the sequence KL (each per-token k3 is unbiased given its prefix); k3's spread is
the smaller one here.

### 5.6 $\beta$ on a five-answer toy

A reference model that prefers the low-reward answers, and the optimum $\pi^*_\beta$ of 3.8 from
`rn.kl_regularized_optimum`, for four values of $\beta$:
""")

code(r"""
ref_probs, rewards = np.array(figs.TOY_REF_PROBS), np.array(figs.TOY_REWARDS)
print(f"{'beta':>6} {'pi*':>38} {'E[r]':>7} {'KL':>7} {'J(pi*)':>8} {'beta log Z':>11}")
for beta in (0.05, 0.2, 1.0, 10.0):
    pi_star = rn.kl_regularized_optimum(ref_probs, rewards, beta)
    j_star = rn.kl_regularized_objective(pi_star, ref_probs, rewards, beta)
    beta_log_z = beta * rn.log_partition(ref_probs, rewards, beta)
    print(f"{beta:6.2f} {np.array2string(pi_star, precision=3, floatmode='fixed'):>38} {pi_star @ rewards:7.4f} "
          f"{rn.kl_divergence(pi_star, ref_probs):7.4f} {j_star:8.4f} {beta_log_z:11.4f}")
    assert abs(j_star - beta_log_z) < 1e-12
    # no other policy does better, and J(pi) = beta log Z - beta KL(pi || pi*) for every pi
    others = np.random.default_rng(0).dirichlet(np.ones(5), size=2000)
    j_others = rn.kl_regularized_objective(others, ref_probs, rewards, beta)
    assert j_others.max() <= j_star
    assert np.allclose(j_others, beta_log_z - beta * rn.kl_divergence(others, pi_star))
print(f"reference: E[r] = {ref_probs @ rewards:.4f}")
""")

# ------------------------------------------------------------------------------------------------ 6. torch twin
md(r"""
## 6. The PyTorch twin

`rlhf_edu.torch` has the same functions; autograd gives the gradients, which must equal the analytic ones of
the NumPy reference: $\partial\,\mathrm{KL}/\partial p_i = \log\frac{p_i}{q_i} + 1$ and
$\partial\,\mathrm{KL}/\partial q_i = -p_i/q_i$ in the probabilities; $p_j(\log\frac{p_j}{q_j} - \mathrm{KL})$ and
$q_j - p_j$ in the logits.
""")

code(r"""
p_t = torch.tensor(P, dtype=torch.float64, requires_grad=True)
q_t = torch.tensor(Q, dtype=torch.float64, requires_grad=True)
kl_t = rt.kl_divergence(p_t, q_t)
kl_t.backward()
analytic = rn.kl_divergence_grad(P, Q)
print(f"torch KL = {kl_t.item():.4f}")
print("d KL / d p: autograd", p_t.grad.numpy().round(4), " analytic", analytic["p"].round(4))
print("d KL / d q: autograd", q_t.grad.numpy().round(4), " analytic", analytic["q"].round(4))
assert abs(kl_t.item() - kl_pq) < 1e-12
assert np.allclose(p_t.grad.numpy(), analytic["p"]) and np.allclose(q_t.grad.numpy(), analytic["q"])

a = torch.tensor(np.log(P), requires_grad=True)
b = torch.tensor(np.log(Q), requires_grad=True)
rt.kl_divergence_from_logits(a, b).backward()
analytic = rn.kl_divergence_from_logits_grad(np.log(P), np.log(Q))
print("from logits, d KL / d a:", a.grad.numpy().round(4), " d KL / d b:", b.grad.numpy().round(4))
assert np.allclose(a.grad.numpy(), analytic["logits_p"]) and np.allclose(b.grad.numpy(), analytic["logits_q"])
assert np.allclose(b.grad.numpy(), Q - P)  # "predicted minus target", as in cross-entropy
""")

md(r"""
### The gradients of the estimators, exactly

Section 3.6 claimed three things about $\mathbb{E}_{y\sim\pi_\theta}[\ldots]$ of gradients. On a categorical
policy $\pi_\theta = \mathrm{softmax}(\theta)$ the expectation over samples is an exact sum, $\sum_y
\pi_\theta(y)\,(\ldots)$, with the weights $\pi_\theta(y)$ *detached* (the sample is given, not differentiated):
""")

code(r"""
log_ref = torch.tensor(np.log(Q))

def expected_gradient(surrogate_of):
    theta = torch.tensor(np.log(P), requires_grad=True)  # the policy's logits: pi_theta = P
    logp = torch.log_softmax(theta, dim=-1)
    weights = logp.exp().detach()  # E_{y ~ pi}[...] as an exact sum over y, samples not differentiated
    (weights * surrogate_of(logp)).sum().backward()
    return theta.grad

k1_in_reward = expected_gradient(lambda logp: rt.kl_estimate(logp, log_ref, "k1").detach() * logp)  # score function
k1_in_loss = expected_gradient(lambda logp: rt.kl_estimate(logp, log_ref, "k1"))
k3_in_loss = expected_gradient(lambda logp: rt.kl_estimate(logp, log_ref, "k3"))

def gradient_of(kl_fn):
    theta = torch.tensor(np.log(P), requires_grad=True)
    kl_fn(theta).backward()
    return theta.grad

grad_forward = gradient_of(lambda th: rt.kl_divergence_from_logits(th, log_ref))  # d KL(pi || ref)
grad_reverse = gradient_of(lambda th: rt.kl_divergence_from_logits(log_ref, th))  # d KL(ref || pi)
for name, g in [("k1 in the reward (score fn)", k1_in_reward), ("k1 in the loss", k1_in_loss),
                ("k3 in the loss", k3_in_loss), ("grad KL(pi || ref)", grad_forward),
                ("grad KL(ref || pi)", grad_reverse)]:
    print(f"{name:>28}: {np.array2string(g.numpy(), precision=4, floatmode='fixed', suppress_small=True)}")
assert torch.allclose(k1_in_reward, grad_forward)
assert torch.allclose(k1_in_loss, torch.zeros_like(k1_in_loss), atol=1e-15)
assert torch.allclose(k3_in_loss, grad_reverse)
""")

md(r"""
k1 in the reward follows the KL of the objective exactly; k1 differentiated as a loss gives nothing; k3
differentiated as a loss follows $\mathrm{KL}(\pi_{ref}\|\pi_\theta)$, which here points the same way with a
slightly different size.
""")

# ------------------------------------------------------------------------------------------------ 7. see it
md(r"""
## 7. See it

**Mode covering versus mode seeking** (5.3): the best single Gaussian under each direction of KL.
""")

code(r"""
fig = figs.forward_reverse_figure()
plt.show()
""")

md(r"""
**The three estimators as functions of one sample's log-ratio.** k1 is a straight line (negative whenever the
policy likes the sample less than the reference does); k2 and k3 are never negative, both about $\ell^2/2$ near 0.
k3 grows fast for $\ell < 0$ (samples the reference likes much more than the policy) and slowly for $\ell > 0$.
""")

code(r"""
fig = figs.estimator_curves_figure()
plt.show()
""")

md(r"""
**Bias and spread by Monte Carlo** over a range of true KLs ($p = \mathcal N(\mu,1)$ against $\mathcal N(0,1)$,
$\mu$ from 0.05 to 2): k2's bias grows with the KL; k1's relative spread explodes as the policy approaches the
reference, which is exactly where an RLHF run starts.
""")

code(r"""
fig = figs.estimator_bias_std_figure()
plt.show()
""")

md(r"""
**$\beta$ trades reward against drift** (5.6): the expected reward and the KL of $\pi^*_\beta$ fall together as
$\beta$ grows, from the best answer (KL = $-\log\pi_{ref}(\text{best}) = \log 20 = 3.0$ nats) to the reference
model.
""")

code(r"""
fig = figs.beta_tradeoff_figure()
plt.show()
""")

# ------------------------------------------------------------------------------------------------ 8. play
md(r"""
## 8. Play with it

Move the policy $P = \mathcal N(\mu_P, \sigma_P^2)$ and the reference $Q = \mathcal N(\mu_Q, \sigma_Q^2)$. The
title gives both directions of KL in closed form; the boxes show the spread of k1, k2, k3 on 2,000 samples
of $P$ (box: middle half, whiskers: 5% to 95%, diamond: the mean). Things to try: make $P$ narrower than $Q$
(k3's mean is pulled up by rare samples far in $Q$'s tails); move the means together (k1's box straddles 0).
The figure below is drawn at the default values; with a live kernel the sliders redraw it.
""")

code(r"""
fig = figs.kl_playground_figure()
plt.show()

def _show(mu_p=1.0, sigma_p=1.0, mu_q=0.0, sigma_q=1.5):
    figs.kl_playground_figure(mu_p=mu_p, sigma_p=sigma_p, mu_q=mu_q, sigma_q=sigma_q)
    plt.show()

slider = dict(continuous_update=False)
display(widgets.interactive(
    _show,
    mu_p=widgets.FloatSlider(value=1.0, min=-3, max=3, step=0.1, description="mu_P", **slider),
    sigma_p=widgets.FloatSlider(value=1.0, min=0.3, max=3, step=0.1, description="sigma_P", **slider),
    mu_q=widgets.FloatSlider(value=0.0, min=-3, max=3, step=0.1, description="mu_Q", **slider),
    sigma_q=widgets.FloatSlider(value=1.5, min=0.3, max=3, step=0.1, description="sigma_Q", **slider),
))
""", tags=["nbval-ignore-output"])

# ------------------------------------------------------------------------------------------------ 9. tiny LM
md(r"""
## 9. On a tiny language model: the per-token KL of section 3.7

Chapter 4 will need exactly this computation. Two tiny GPT-2 models from `rlhf_edu.lm` (different random
initialisations: a "policy" and a "reference"), 256 answers of up to 24 characters sampled from the policy.
For each answer we sum, over its generated tokens, (a) k1 and (b) k3 of the sampled token, from
`token_logprobs` of both models, and (c) the exact KL of the two next-token distributions over the whole
vocabulary, from the two models' logits at each position. All three estimate the same sequence KL; they differ
in noise. Expected runtime: a few seconds (most of it importing `transformers`).
""")

code(r"""
from rlhf_edu.lm import char_tokenizer, generate, position_ids_from_mask, tiny_causal_lm, token_logprobs

t0 = time.perf_counter()
tok = char_tokenizer()
lm_ref = tiny_causal_lm(tok, d_model=32, n_layer=1, seed=0)
lm_policy = tiny_causal_lm(tok, d_model=32, n_layer=1, seed=1)
rollout = generate(lm_policy, tok, ["review: the film was"], max_new_tokens=24, num_samples=256, generator=0)
with torch.no_grad():
    ids, mask = rollout.input_ids, rollout.attention_mask
    logp_policy = token_logprobs(lm_policy, ids, mask)
    logp_ref = token_logprobs(lm_ref, ids, mask)
    positions = position_ids_from_mask(mask)
    logits_policy = lm_policy(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    logits_ref = lm_ref(input_ids=ids, attention_mask=mask, position_ids=positions).logits
gen = rollout.completion_mask.double()  # 1 on generated tokens (EOS included)
# the token at column t is predicted from the logits at column t - 1
exact = torch.zeros_like(gen)
exact[:, 1:] = rt.kl_divergence_from_logits(logits_policy[:, :-1].double(), logits_ref[:, :-1].double())
per_answer = {
    "k1 (sampled token)": (rt.kl_estimate(logp_policy, logp_ref, "k1").double() * gen).sum(dim=1),
    "k3 (sampled token)": (rt.kl_estimate(logp_policy, logp_ref, "k3").double() * gen).sum(dim=1),
    "exact per-token KL": (exact * gen).sum(dim=1),
}
print(f"{len(rollout)} answers, {gen.sum(dim=1).mean().item():.1f} generated tokens on average "
      f"({time.perf_counter() - t0:.1f} s elapsed)")
""", tags=["nbval-ignore-output"])

code(r"""
means = {}
for name, v in per_answer.items():
    se = v.std().item() / math.sqrt(len(v))
    means[name] = (v.mean().item(), se)
    print(f"{name:>20}: sequence KL {v.mean().item():.3f} +- {2 * se:.3f} (2 se); spread per answer {v.std().item():.3f}")
m_exact, se_exact = means["exact per-token KL"]
for name in ("k1 (sampled token)", "k3 (sampled token)"):
    m, se = means[name]
    assert abs(m - m_exact) < 3 * math.hypot(se, se_exact)  # same quantity, within Monte Carlo error
assert per_answer["exact per-token KL"].std() < per_answer["k3 (sampled token)"].std() < per_answer["k1 (sampled token)"].std()

fig, ax = plt.subplots(figsize=(6.5, 3.4))
bins = np.linspace(-1.6, 2.4, 61)
for name, v in per_answer.items():
    ax.hist(v.numpy(), bins=bins, histtype="step", lw=2, label=name)
ax.axvline(m_exact, color="k", ls=":", lw=1)
ax.set_xlabel("per-token KL summed over one answer (nats)")
ax.set_ylabel("number of answers")
ax.set_title("three estimates of the same sequence KL: same mean, different noise")
ax.legend(frameon=False, fontsize=8.5)
plt.show()
""")

# ------------------------------------------------------------------------------------------------ 10. bugs
md(r"""
## 10. Common bugs

### Bug 1: the KL in the wrong direction

The objective penalises $\mathrm{KL}(\pi_\theta\|\pi_{ref})$, estimated on samples **of the policy**, so the
policy's log-probability comes first: `kl_estimate(logp_policy, logp_ref)`. Swapping the arguments is easy
(and the PPO slide of the notes writes the reverse KL). On samples of $p = \mathcal N(1, 1)$ with
$p_{ref} = \mathcal N(0,1)$, true KL 0.5:
""")

code(r"""
x = 1.0 + np.random.default_rng(7).standard_normal(200_000)  # samples of the policy N(1, 1)
logp_policy_x, logp_ref_x = figs.gaussian_logpdf(x, 1.0, 1.0), figs.gaussian_logpdf(x, 0.0, 1.0)
for k in ("k1", "k3"):
    right = rn.kl_estimate(logp_policy_x, logp_ref_x, k).mean()
    swapped = rn.kl_estimate(logp_ref_x, logp_policy_x, k).mean()  # BUG: arguments swapped
    print(f"{k}: right order {right:+.3f}   swapped {swapped:+.3f}")
assert abs(rn.kl_estimate(logp_policy_x, logp_ref_x, "k1").mean() - 0.5) < 0.01
assert abs(rn.kl_estimate(logp_ref_x, logp_policy_x, "k1").mean() + 0.5) < 0.01  # a NEGATIVE "KL"
# swapped k3 estimates E_p[p/p_ref] - 1 - KL = e^{mu^2} - 1 - mu^2/2 = e - 1.5, not any KL
assert abs(rn.kl_estimate(logp_ref_x, logp_policy_x, "k3").mean() - (math.e - 1.5)) < 0.05
""")

md(r"""
Swapped k1 is minus the KL: the penalty becomes a bonus for drifting. Swapped k3 stays positive, so the bug is
silent, but it measures something else. With exact KLs, the wrong direction changes what the penalty forbids:
a policy that stops saying one word has a finite $\mathrm{KL}(\pi\|\pi_{ref})$ and an infinite
$\mathrm{KL}(\pi_{ref}\|\pi)$ (5.2).

### Bug 2: cancellation in k3, and ratios of probabilities

GRPO's eq. (2) typed in as written, `exp(logp_ref - logp) - (logp_ref - logp) - 1`, adds a number close to 1
and a tiny one and then subtracts 1: for small log-ratios the answer ($\approx \ell^2/2$) is rounded away,
badly in float32 (the dtype of most training runs). `expm1` computes $e^{-\ell} - 1$ without forming the 1,
so the library's `expm1(-l) + l` keeps three or four significant digits in float32 where the naive form keeps
none:
""")

code(r"""
ells = np.array([1e-1, 1e-2, 1e-3, 1e-4, 1e-5])
truth = rn.kl_estimate(ells, np.zeros_like(ells), "k3")  # float64, expm1 form
logp32 = torch.tensor(ells, dtype=torch.float32)
logp_ref32 = torch.zeros(5, dtype=torch.float32)
naive = (torch.exp(logp_ref32 - logp32) - (logp_ref32 - logp32) - 1).double().numpy()  # BUG
fixed = rt.kl_estimate(logp32, logp_ref32, "k3").double().numpy()  # expm1(-l) + l in float32
print(f"{'log-ratio':>10} {'true k3':>11} {'naive f32':>11} {'rel err':>8} {'expm1 f32':>11} {'rel err':>8}")
for e, t, a, b in zip(ells, truth, naive, fixed):
    print(f"{e:10.0e} {t:11.3e} {a:11.3e} {abs(a - t) / t:8.1e} {b:11.3e} {abs(b - t) / t:8.1e}")
assert naive[3] == 0.0 and naive[4] == 0.0  # the whole KL is lost
assert np.all(np.abs(fixed - truth) / truth < 0.05)
""")

md(r"""
A related bug: forming the ratio $\pi_{ref}(y)/\pi_\theta(y)$ of two *sequence* probabilities. Sixty tokens of
probability about 0.05 give $\pi(y) \approx 10^{-78}$, below float32's smallest number: both probabilities
underflow to 0 and the ratio is NaN. Sums of log-probabilities never underflow:
""")

code(r"""
token_logp = torch.full((60,), math.log(0.05), dtype=torch.float32)
token_logp_ref = torch.full((60,), math.log(0.04), dtype=torch.float32)
ratio_from_probs = token_logp_ref.exp().prod() / token_logp.exp().prod()  # BUG: 0 / 0
ratio_from_logs = (token_logp_ref.sum() - token_logp.sum()).exp()  # the fix
print(f"ratio from products of probabilities: {ratio_from_probs.item()}")
print(f"ratio from sums of log-probabilities: {ratio_from_logs.item():.4e} (exact: (0.8)^60 = {0.8**60:.4e})")
assert torch.isnan(ratio_from_probs)
assert abs(ratio_from_logs.item() - 0.8**60) / 0.8**60 < 1e-4
""")

# ------------------------------------------------------------------------------------------------ 11. exercises
md(r"""
## 11. Exercises

Each exercise is a function you write; the checker runs it against the library's reference on edge cases and
random inputs and prints the first input where they disagree. Replace the body until the check prints PASS.

**Exercise 1: exact KL with zeros.** `my_kl_divergence(p, q)` for distributions on the last axis (1-D or
2-D arrays), in nats: $0\log 0 = 0$, $+\infty$ where $q = 0 < p$, and a `ValueError` when p or q has a
negative entry or does not sum to 1. (`np.where` is your friend; `p * np.log(p / q)` gives NaN at $p = 0$.)
""")

code(r"""
def my_kl_divergence(p, q):
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    # YOUR CODE HERE
    return np.zeros(p.shape[:-1])

result = check_kl_divergence(my_kl_divergence)
""")

md(r"""
**Exercise 2: the three estimators.** `my_kl_estimate(logp, logp_ref, estimator)` returns k1, k2 or k3 for
each sample ($\ell$ = `logp - logp_ref`), raises `ValueError` for any other estimator name, and stays accurate
when $|\ell| \approx 10^{-7}$ (the checker compares to 6 significant digits there: see bug 2).
""")

code(r"""
def my_kl_estimate(logp, logp_ref, estimator="k1"):
    ell = np.asarray(logp, dtype=float) - np.asarray(logp_ref, dtype=float)
    # YOUR CODE HERE
    return ell

result = check_kl_estimate(my_kl_estimate)
""")

md(r"""
**Exercise 3: a Monte Carlo bias check.** `my_monte_carlo_bias(logp, logp_ref, true_kl, estimator)` gets n
samples of the policy (their log-probabilities under the policy and the reference) and the true KL. Return
`(bias, standard_error)`: the mean of the estimator minus the true KL, and the standard error of that mean,
$s/\sqrt n$ with $s$ the sample standard deviation (`ddof=1`). Then use it on
`figs.estimator_samples(mu_p=1.0, n=10_000)`-style data to see k2's bias emerge from the noise.
""")

code(r"""
def my_monte_carlo_bias(logp, logp_ref, true_kl, estimator="k1"):
    # YOUR CODE HERE
    return 0.0, 0.0

result = check_monte_carlo_bias(my_monte_carlo_bias)
""")

# ------------------------------------------------------------------------------------------------ 12. summary
md(r"""
## 12. Summary and further reading

- $\mathrm{KL}(P\|Q) = \sum_i P(i)\log\frac{P(i)}{Q(i)} = \mathbb{E}_P[\log P - \log Q] \ge 0$, zero only for
  $P = Q$; the notes' example is 0.0851 nats, and 0.0920 the other way round.
- The direction matters: forward KL covers modes (SFT, maximum likelihood), reverse KL seeks them. The RLHF
  penalty is $\mathrm{KL}(\pi_\theta\|\pi_{ref})$, estimated on the policy's samples.
- From samples: k1 $= \ell$ (unbiased, noisy, can be negative), k2 $= \ell^2/2$ (biased, $\ge 0$), k3 $=
  (e^{-\ell} - 1) + \ell$ (unbiased, $\ge 0$, low variance). PPO puts k1 into the reward (its score-function
  gradient is exactly $\nabla\mathrm{KL}$); GRPO puts k3 into the loss (its autograd gradient is
  $\nabla\mathrm{KL}(\pi_{ref}\|\pi_\theta)$ in expectation); k1 in the loss has zero expected gradient.
- Over a sequence, per-token KLs add up (chain rule) to the sequence KL, prefixes drawn from the policy.
- $\max_\pi \mathbb{E}_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_{ref})$ is solved by $\pi^* \propto \pi_{ref}e^{r/\beta}$,
  worth $\beta\log Z$; $\beta$ slides it between the reference and the best answer (chapter 6).
- Compute in log space: `expm1` for k3, sums of log-probabilities instead of products of probabilities.

Further reading:

- S. Kullback and R. A. Leibler, *On Information and Sufficiency* (1951).
- T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed. (2006), ch. 2 (Gibbs' inequality,
  chain rule).
- C. M. Bishop, *Pattern Recognition and Machine Learning* (2006), section 10.1 (forward and reverse KL);
  T. Minka, *Divergence measures and message passing* (2005).
- J. Schulman, *Approximating KL Divergence* (blog note, 2020): k1, k2, k3.
- D. M. Ziegler et al., *Fine-Tuning Language Models from Human Preferences* (2019); L. Ouyang et al.,
  *Training language models to follow instructions with human feedback* (InstructGPT, 2022): the KL penalty
  in the reward.
- Z. Shao et al., *DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models* (2024):
  GRPO and its k3 loss term.
- Y. Tang and R. Munos, *On a few pitfalls in KL divergence gradient estimation for RL* (2025).
""")

code(r"""
print(f"chapter 2 ran in {time.perf_counter() - T_START:.1f} s")
""", tags=["nbval-ignore-output"])


if __name__ == "__main__":
    book.write()
