"""Build chapters/01_bradley_terry.ipynb (run from the repository root; then execute it with nbconvert).

    .venv/bin/python chapters/build/01_bradley_terry.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace chapters/01_bradley_terry.ipynb \
        --ExecutePreprocessor.timeout=600
"""

from chapter_builder import ChapterBuilder

book = ChapterBuilder("01_bradley_terry.ipynb")
md, code = book.md, book.code


# ------------------------------------------------------------------------------------------------ 1. goals
md(r"""
# Chapter 1. Rewards from preferences: the Bradley-Terry model

RLHF needs a reward $r(x, y)$ for any prompt $x$ and answer $y$, and people cannot score millions of answers.
So we ask them something easier, *"which of these two answers is better?"*, and fit a **reward model**
$r_\phi(x, y)$ that explains their choices. The bridge between choices and rewards is the Bradley-Terry model
(1952). This chapter derives it, fits it, and trains a small transformer reward model with it.

## 1. Goals

After this chapter you can

1. explain why pairwise comparisons are collected instead of ratings, and derive the logistic choice
   probability $P(a \succ b) = \sigma(r_a - r_b)$ from random utilities with extreme-value noise;
2. write the reward-model loss $-\log\sigma(r_w - r_l)$ as a binary classification, its gradient, and its
   K-wise form with the $1/\binom{K}{2}$ weight;
3. fit Bradley-Terry scores by maximum likelihood and say why they are only defined up to a constant;
4. train a reward model on a tiny language model and read its held-out accuracy and margin histogram, with
   and without label noise;
5. spot the two classic bugs: chosen and rejected swapped, probabilities fed where logits are expected.
""")

code(r"""
%matplotlib inline
%config InlineBackend.figure_formats = ["png"]
import inspect
import math
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch

from rlhf_edu import numpy as rn
from rlhf_edu import torch as rt
from rlhf_edu.exercises import check_bt_loss, check_bt_loss_grad, check_bt_prob, check_ranking_to_pairs
from rlhf_edu.figures import bradley_terry as figs
from rlhf_edu.lm import set_seed

np.random.seed(0)
torch.manual_seed(0)
set_seed(0)
torch.set_num_threads(1)  # tiny models gain nothing from a second thread, and lose a lot on a busy machine
T_START = time.perf_counter()
""")

# ------------------------------------------------------------------------------------------------ 2. idea
md(r"""
## 2. The idea in words and one picture

The lecture notes' example: three summaries of the news *"an earthquake hit San Francisco"*.

- $y_1$: *An earthquake hit San Francisco. There was minor property damage, but no injuries.*
- $y_2$: *The Bay Area has good weather but is prone to earthquakes and wildfires.*
- $y_3$: *A 4.2 magnitude earthquake hit San Francisco, resulting in massive damage.*

Ask six people to rate them from 1 to 10 and you get six different scales: a lenient rater gives 9 where a
harsh one gives 5, one spreads the marks out, another bunches them up, and all of them are a bit noisy
("4.1? 6.6? 3.2?" on the slide). Ratings are **noisy and miscalibrated**. Ask instead *which of two is
better*, and the raters agree far more: every one of them puts $y_1$ above $y_3$ above $y_2$. A comparison
throws away each rater's offset and scale and keeps what they share, the order.

So the data of RLHF are comparisons $y_w \succ y_l$ ("winner over loser") for a prompt $x$. The Bradley-Terry
model turns them back into numbers: each answer has a hidden reward, and the larger the reward gap, the more
often the better answer wins.
""")

code(r"""
fig = figs.ratings_vs_comparisons_figure()
plt.show()
""")

# ------------------------------------------------------------------------------------------------ 3. derivation
md(r"""
## 3. Derivation

### 3.1 A choice model: random utilities with extreme-value noise

The notes borrow from econometrics (McFadden's choice models). A person choosing between options $a$ and
$b$ gets *utilities* $U_a = r_a + \epsilon_a$ and $U_b = r_b + \epsilon_b$: a systematic part $r$ (the reward
we want) plus unobserved factors $\epsilon$, and picks the larger. With $\epsilon_a, \epsilon_b$ independent
**standard Gumbel** (extreme value type I) variables, with CDF $F(e) = \exp(-e^{-e})$ and density
$f(e) = e^{-e}\exp(-e^{-e})$, and $d = r_a - r_b$:

$$P(a \text{ chosen}) = P(\epsilon_b < d + \epsilon_a) = \int_{-\infty}^{\infty} f(e)\,F(d + e)\,de
= \int_{-\infty}^{\infty} e^{-e}\exp\big(-e^{-e}\big)\exp\big(-e^{-d}e^{-e}\big)\,de
= \int_{-\infty}^{\infty} e^{-e}\exp\big(-e^{-e}(1 + e^{-d})\big)\,de .$$

Substitute $t = e^{-e}$, $dt = -e^{-e}\,de$ (as $e$ runs from $-\infty$ to $\infty$, $t$ runs from $\infty$
to 0):

$$P(a \text{ chosen}) = \int_0^\infty \exp\big(-t\,(1 + e^{-d})\big)\,dt = \frac{1}{1 + e^{-d}} = \sigma(r_a - r_b).$$

So the difference of two independent Gumbel variables is **logistic**, which is why the notes can write the
one-utility version ($U_n = \beta s_n + \epsilon_n$, choose when $U_n > 0$, $\epsilon$ logistic, so
$P = \frac{1}{1 + \exp(-\beta s_n)}$) and the two-utility version (two extreme-value noises) with the same
answer. With Gaussian noise instead (Thurstone, 1927) the curve would be a probit, close to but not exactly
the sigmoid. The scale of $r$ is fixed by the scale of the noise: rewards are measured in **log-odds**.

### 3.2 The Bradley-Terry form, step by step (the notes' slide)

$$P(y_1 \succ y_2 \mid x) = \frac{\exp(r(x, y_1))}{\exp(r(x, y_1)) + \exp(r(x, y_2))}.$$

Divide numerator and denominator by $\exp(r(x, y_1))$:

$$= \frac{1}{1 + \frac{\exp(r(x, y_2))}{\exp(r(x, y_1))}} = \frac{1}{1 + \exp\big(r(x, y_2) - r(x, y_1)\big)}
= \frac{1}{1 + \exp\big(-(r(x, y_1) - r(x, y_2))\big)} = \sigma\big(r(x, y_1) - r(x, y_2)\big),$$

with $\sigma(z) = \frac{1}{1 + e^{-z}}$. Only the **difference** of rewards matters.

### 3.3 The log-odds form

With $p_{ij} = \sigma(r_i - r_j)$ we have $1 - p_{ij} = \frac{e^{-(r_i - r_j)}}{1 + e^{-(r_i - r_j)}}
= \sigma(r_j - r_i)$, so $\frac{p_{ij}}{1 - p_{ij}} = e^{r_i - r_j}$ and

$$\log\frac{p_{ij}}{1 - p_{ij}} = r(x, y_i) - r(x, y_j):$$

the reward gap *is* the log-odds of the preference (the notes' RM-objective slide). A gap of 1 means odds
of $e : 1 \approx 2.7 : 1$; a gap of 3, about $20 : 1$.

### 3.4 Maximum likelihood is binary classification

Given comparisons $D = \{(x^{(i)}, y_w^{(i)}, y_l^{(i)})\}_{i=1}^N$ drawn from the true preferences, the
likelihood of the labels is $\prod_i \sigma(r_\phi(x^{(i)}, y_w^{(i)}) - r_\phi(x^{(i)}, y_l^{(i)}))$, and its
negative log, averaged, is the reward-model loss of the notes:

$$\mathcal L_R(\phi) = -\mathbb E_{(x, y_w, y_l)\sim D}\Big[\log\sigma\big(r_\phi(x, y_w) - r_\phi(x, y_l)\big)\Big]
= \mathbb E\Big[\log\big(1 + e^{-d}\big)\Big], \qquad d = r_\phi(x, y_w) - r_\phi(x, y_l).$$

This is logistic regression: the "logit" is the margin $d$ and the label is always "the first one won"
(cross-entropy with target 1). Its gradient, from $\sigma'(d) = \sigma(d)(1 - \sigma(d))$:

$$\frac{\partial}{\partial d}\big(-\log\sigma(d)\big) = -\frac{\sigma(d)(1 - \sigma(d))}{\sigma(d)} = -(1 - \sigma(d)) = -\sigma(-d),
\qquad \frac{\partial\mathcal L}{\partial r_w} = -\sigma(-d), \quad \frac{\partial\mathcal L}{\partial r_l} = +\sigma(-d).$$

A pair already ranked right by a wide margin ($d \gg 0$) barely moves the rewards; a badly misranked pair
($d \ll 0$) pushes each reward with strength close to 1, never more. In code, $-\log\sigma(d) = \log(1 +
e^{-d})$ is `np.logaddexp(0, -d)` (or `-F.logsigmoid(d)` in torch), finite for $d = \pm 10^4$.

**Identifiability.** Adding a constant $c$ to every reward (of one prompt) changes no difference, hence no
probability and no loss: the rewards are defined **up to a constant per prompt**. A fit has to pin it (the
library centres the scores to mean 0); a reward model leaves it to its initialisation, and its reward scale
can drift (section 9 uses it only through differences). Finite maximum-likelihood scores exist only if the
comparison graph is strongly connected (Zermelo, 1929; Ford, 1957): an item that never lost could have its
score pushed to $+\infty$.

### 3.5 K-wise rankings: every pair, each weighted $1/\binom{K}{2}$

InstructGPT's labellers rank $K = 4$ to $9$ answers of one prompt at once. A ranking $y_{(1)} \succ y_{(2)}
\succ \dots \succ y_{(K)}$ implies $\binom{K}{2}$ pairs $y_{(i)} \succ y_{(j)}$, $i < j$. The loss (the notes'
$L_{RM}$, InstructGPT eq. 1) averages them within the ranking,

$$\mathcal L_{RM}(\phi) = -\,\mathbb E_{(x, \text{ranking})}\Bigg[\frac{1}{\binom{K}{2}}\sum_{i<j}\log\sigma\big(r_\phi(x, y_{(i)}) - r_\phi(x, y_{(j)})\big)\Bigg],$$

so each prompt counts once whatever its $K$. The $K$ answers of a prompt are scored in one forward pass and
all their pairs go into the same batch: treating the pairs as independent examples would show each answer
$K - 1$ times per epoch (InstructGPT found that this overfits) and cost $2\binom{K}{2}$ forward passes instead
of $K$.

### Where the lecture notes slip

1. $L_{RM}(r_\phi) = -\frac{1}{C_K^2}\mathbb E_{(x, y_w, y_l)\sim D}[\ldots]$: written as an expectation over
   single pairs, the factor $\frac{1}{\binom{K}{2}}$ only rescales the loss. What is meant (and what
   InstructGPT does) is a *sum over the $\binom{K}{2}$ pairs of one ranking*, divided by $\binom{K}{2}$, then an
   expectation over prompts (3.5).
2. The choice-model slide's "main assumption: the utility ... is a function of the frequency of choosing A
   over B" describes how utilities are *estimated*; the model itself goes the other way: the choice
   frequency is a function of the utilities, $P(A \succ B) = \sigma(r_A - r_B)$, and maximum likelihood then
   recovers the utilities from observed frequencies (5.3).
3. The notes use logistic noise on one slide and extreme-value noise on the next without saying why both give
   the sigmoid: the difference of two independent Gumbel noises is logistic (3.1).
4. The reward-model objective is written $J_{RM}(\phi) = -\mathbb E[\log\sigma(\cdot)]$ on one slide, a *loss*
   to minimise, and $\max_\phi \sum \log p_{ij}$ on another: the same optimum, opposite signs.
""")

# ------------------------------------------------------------------------------------------------ 4. numpy reference
md(r"""
## 4. The NumPy reference

The probability and the loss, in log space (`_sigmoid(x)` is `exp(-logaddexp(0, -x))`):
""")

code(r"""
print(inspect.getsource(rn.bradley_terry_prob))
print(inspect.getsource(rn.bradley_terry_loss))
""")

md(r"""
The analytic gradient of 3.4 and the K-wise pairs of 3.5:
""")

code(r"""
print(inspect.getsource(rn.bradley_terry_loss_grad))
print(inspect.getsource(rn.ranking_to_pairs))
""")

md(r"""
`rn.fit_bradley_terry(winners, losers, n_items)` fits item scores by maximum likelihood: it minimises the summed
loss with L-BFGS, feeding it this objective and gradient (the gradient of each comparison is added to its two
items with `np.bincount`), after checking Zermelo's connectivity condition:
""")

code(r"""
source = inspect.getsource(rn.fit_bradley_terry)
print(source[source.index("    def objective"):source.index("    result = minimize")])
""")

# ------------------------------------------------------------------------------------------------ 5. worked example
md(r"""
## 5. Worked examples with numbers

### 5.1 The earthquake answers

Give the three answers rewards $r(y_1) = 1.2$ (the slide's number), $r(y_2) = -0.3$, $r(y_3) = 0.4$.
Then $P(y_1 \succ y_3) = \frac{e^{1.2}}{e^{1.2} + e^{0.4}} = \sigma(0.8) = 0.6900$, the log-odds are
$0.8$, the loss of the comparison "$y_1$ won" is $\log(1 + e^{-0.8}) = 0.3711$, and the gradient pushes
$r(y_1)$ up and $r(y_3)$ down with strength $\sigma(-0.8) = 0.3100$.
""")

code(r"""
r = dict(zip(("y1", "y2", "y3"), figs.EARTHQUAKE_REWARDS))
p13 = rn.bradley_terry_prob(r["y1"], r["y3"])
by_exp = math.exp(r["y1"]) / (math.exp(r["y1"]) + math.exp(r["y3"]))
log_odds = math.log(p13 / (1 - p13))
loss13 = rn.bradley_terry_loss(r["y1"], r["y3"])
grad13 = rn.bradley_terry_loss_grad(r["y1"], r["y3"])
print(f"P(y1 > y3) = sigma(0.8) = {p13:.4f}   (exp form: {by_exp:.4f}, log-odds {log_odds:.4f})")
print(f"loss -log sigma(0.8) = {loss13:.4f}; d loss/d r(y1) = {grad13['r_chosen']:+.4f}, d loss/d r(y3) = {grad13['r_rejected']:+.4f}")
assert abs(p13 - 0.6900) < 5e-5 and abs(p13 - by_exp) < 1e-12 and abs(log_odds - 0.8) < 1e-12
assert abs(loss13 - 0.3711) < 5e-5 and abs(grad13["r_chosen"] + 0.3100) < 5e-5

# the slide's ranking y1 > y3 > y2, as item ids 0 > 2 > 1: three pairs, each weighted 1/C(3,2) = 1/3
winners, losers, weights = rn.ranking_to_pairs([0, 2, 1])
scores = np.array(figs.EARTHQUAKE_REWARDS)
pair_losses = rn.bradley_terry_loss(scores[winners], scores[losers])
for w, l, wt, pl in zip(winners, losers, weights, pair_losses):
    print(f"  y{w + 1} > y{l + 1}: margin {scores[w] - scores[l]:+.1f}, loss {pl:.4f}, weight {wt:.4f}")
ranking_loss = np.sum(weights * pair_losses)
print(f"ranking loss = {ranking_loss:.4f}")
assert abs(ranking_loss - (0.371101 + 0.201413 + 0.403186) / 3) < 1e-5
""")

md(r"""
### 5.2 Gumbel utilities really give the sigmoid

Check 3.1 twice: by simulating 400,000 choices with Gumbel noise, and by integrating $\int f(e)F(d+e)\,de$
numerically on a grid.
""")

code(r"""
d = r["y1"] - r["y3"]
wins = figs.gumbel_choices(r["y1"], r["y3"], n=400_000, seed=0)
se = math.sqrt(p13 * (1 - p13) / 400_000)
e = np.linspace(-10, 30, 400_001)
f = np.exp(-e - np.exp(-e))  # Gumbel density
F_shift = np.exp(-np.exp(-(d + e)))  # Gumbel CDF at d + e
integral = np.sum(f * F_shift) * (e[1] - e[0])
print(f"sigma(0.8) = {p13:.4f}; simulated win rate {wins:.4f} +- {2 * se:.4f}; numerical integral {integral:.6f}")
assert abs(wins - p13) < 4 * se and abs(integral - p13) < 1e-6
""")

md(r"""
### 5.3 Recovering scores from comparisons, up to a constant

Ten items with true scores (rewards) drawn at random, 3,000 comparisons simulated from Bradley-Terry, and the
maximum-likelihood fit. The fit is centred to mean 0, so it matches the true scores *minus their mean*: a
comparison cannot see a shared constant.
""")

code(r"""
rng = np.random.default_rng(0)
true_scores = np.sort(rng.normal(1.0, 1.2, size=10))
winners, losers = figs.simulate_comparisons(true_scores, n_comparisons=3000, seed=1)
fitted = rn.fit_bradley_terry(winners, losers, n_items=10)
centred = true_scores - true_scores.mean()
print("true     ", np.round(true_scores, 3))
print("true - mean", np.round(centred, 3))
print("fitted   ", np.round(fitted, 3))
rmse = np.sqrt(np.mean((fitted - centred) ** 2))
print(f"RMSE against the centred truth: {rmse:.3f}; mean of the truth (invisible to comparisons): {true_scores.mean():.3f}")
assert rmse < 0.15 and abs(fitted.mean()) < 1e-9

def total_loss(s):
    return rn.bradley_terry_loss(s[winners], s[losers]).sum()

# identifiability: a shift changes nothing
assert abs(total_loss(fitted + 5.0) - total_loss(fitted)) < 1e-8
# at the maximum each item's observed wins equal its expected wins (the gradient is zero)
observed = np.bincount(winners, minlength=10)
p_win = rn.bradley_terry_prob(fitted[winners], fitted[losers])
expected = np.bincount(winners, p_win, minlength=10) + np.bincount(losers, 1 - p_win, minlength=10)
print("observed wins", observed)
print("expected wins", np.round(expected, 2))
assert np.allclose(observed, expected, atol=1e-4)
""")

md(r"""
**The gradient, analytic against autograd.** The gradient of the summed loss with respect to the ten scores,
from `rn.bradley_terry_loss_grad` scattered onto the items, equals torch's autograd of `rt.bradley_terry_loss`
(evaluated at the true scores, where it is not zero):
""")

code(r"""
g = rn.bradley_terry_loss_grad(true_scores[winners], true_scores[losers])
grad_analytic = np.bincount(winners, g["r_chosen"], minlength=10) + np.bincount(losers, g["r_rejected"], minlength=10)
s_t = torch.tensor(true_scores, requires_grad=True)
rt.bradley_terry_loss(s_t[torch.as_tensor(winners)], s_t[torch.as_tensor(losers)]).sum().backward()
print("analytic:", np.round(grad_analytic, 3))
print("autograd:", np.round(s_t.grad.numpy(), 3))
assert np.allclose(grad_analytic, s_t.grad.numpy(), atol=1e-10)
assert abs(grad_analytic.sum()) < 1e-9  # a shift of all scores changes nothing: the gradient sums to 0
""")

md(r"""
### 5.4 When the maximum does not exist

If an item never lost, its score can grow forever. The library refuses with a message instead of returning
a huge number; a small L2 penalty (a Gaussian prior on the scores) makes the fit finite again.
""")

code(r"""
never_lost = [0, 0, 1, 2]  # item 0 beat everyone, and nobody beat item 0
beaten = [1, 2, 2, 1]
try:
    rn.fit_bradley_terry(never_lost, beaten, n_items=3)
except ValueError as err:
    print("ValueError:", err)
print("with l2 = 0.1:", np.round(rn.fit_bradley_terry(never_lost, beaten, n_items=3, l2=0.1), 3))
""")

# ------------------------------------------------------------------------------------------------ 6. torch twin
md(r"""
## 6. The PyTorch twin

`rt.bradley_terry_loss` is `-F.logsigmoid(r_chosen - r_rejected - margin)`, which is what a reward model is
trained with. Autograd matches the analytic gradient, and the loss and its gradient stay finite for margins of
$\pm 10^4$ in float32 and float64, where the literal $-\log(\sigma(d))$ gives $\infty$:
""")

code(r"""
for dtype in (torch.float32, torch.float64):
    r_w = torch.tensor([1.2, 1e4, -1e4, 0.0], dtype=dtype, requires_grad=True)
    r_l = torch.tensor([0.4, -1e4, 1e4, 0.0], dtype=dtype, requires_grad=True)
    loss = rt.bradley_terry_loss(r_w, r_l)
    loss.sum().backward()
    analytic = rn.bradley_terry_loss_grad(r_w.detach().double().numpy(), r_l.detach().double().numpy())
    literal = -torch.log(torch.sigmoid(r_w - r_l))  # the formula typed in as written
    print(f"{str(dtype):>14}: loss {loss.detach().numpy()}, d/d r_w {r_w.grad.numpy()}")
    print(f"{'':>14}  literal -log(sigmoid(d)): {literal.detach().numpy()}")
    assert torch.isfinite(loss).all() and torch.isfinite(r_w.grad).all() and torch.isfinite(r_l.grad).all()
    assert np.allclose(r_w.grad.double().numpy(), analytic["r_chosen"], atol=1e-6)
    assert np.allclose(r_l.grad.double().numpy(), analytic["r_rejected"], atol=1e-6)
    assert torch.isinf(literal[2])
""")

# ------------------------------------------------------------------------------------------------ 7. see it
md(r"""
## 7. See it

**Extreme-value noise gives the logistic curve** (3.1, 5.2): simulated win rates of Gumbel utilities sit on
$\sigma(r_a - r_b)$; Gaussian noise of the same variance (Thurstone) gives a slightly steeper curve.
""")

code(r"""
fig = figs.choice_model_figure()
plt.show()
""")

md(r"""
**The loss and its push** (3.4): a misranked pair costs about $|d|$ nats and pushes each reward with strength
close to 1; a well-ranked pair costs and pushes almost nothing.
""")

code(r"""
fig = figs.bt_loss_figure()
plt.show()
""")

md(r"""
**Scores recovered up to a shift** (5.3): the fitted scores fall on a line of slope 1 that misses the diagonal
by exactly the mean of the true scores.
""")

code(r"""
fig = figs.bt_recovery_figure()
plt.show()
""")

# ------------------------------------------------------------------------------------------------ 8. play
md(r"""
## 8. Play with it

Move the reward gap $d = r_a - r_b$ and the label noise $\varepsilon$ (the probability that an annotator's
choice is flipped). Left: the model's $P(a \succ b) = \sigma(d)$ and the probability that $a$ is *labelled*
preferred, $(1 - \varepsilon)\sigma(d) + \varepsilon\,\sigma(-d)$. Right: the expected loss of the pair,
$-(1-\varepsilon)\log\sigma(d) - \varepsilon\log\sigma(-d)$. With noise, the loss no longer falls forever as
$d$ grows: it is smallest at $\sigma(d^*) = 1 - \varepsilon$, i.e. $d^* = \log\frac{1-\varepsilon}{\varepsilon}$
(2.20 nats at 10% noise). Label noise caps the margins a reward model should learn; section 9 sees it happen.
The figure is drawn at the default values; with a live kernel the sliders redraw it.
""")

code(r"""
fig = figs.bt_playground_figure(gap=1.0, noise=0.1)
plt.show()

def _show(gap=1.0, noise=0.1):
    figs.bt_playground_figure(gap=gap, noise=noise)
    plt.show()

slider = dict(continuous_update=False)
display(widgets.interactive(
    _show,
    gap=widgets.FloatSlider(value=1.0, min=-5, max=5, step=0.1, description="gap d", **slider),
    noise=widgets.FloatSlider(value=0.1, min=0.0, max=0.5, step=0.02, description="noise", **slider),
))
""", tags=["nbval-ignore-output"])

# ------------------------------------------------------------------------------------------------ 9. small model
md(r"""
## 9. A reward model on a tiny language model

The sentiment task of `rlhf_edu.tasks` (prompts like *"review: the film was"*, answers like *" great but the
plot was dull."*) comes with a known **gold reward** (mostly: distinct positive words minus negative ones,
through a sigmoid) and a simulated annotator who labels pairs by a Bradley-Terry draw on the gold reward,
$P(a \succ b) = \sigma(10\,(g_a - g_b))$, then flips the label with probability `noise`. Ties in gold get a
coin flip, so even a perfect reward model agrees with these labels only about 83% of the time.

The reward model is `rlhf_edu.lm.RewardModel`: a transformer with a linear head read at the last token,
trained by `rlhf_edu.train.reward_model` with the loss of 3.4 (`rt.bradley_terry_loss`), chosen and rejected
of a batch in one forward pass. InstructGPT starts the reward model from the SFT model; to keep this run short
we start from a fresh one-layer transformer of width 64, which is enough for this task.

We train three reward models on 2,048 pairs each (one epoch, batches of 64, 32 AdamW steps), with 0%, 20% and
40% of the training labels flipped, and test them on 512 pairs of *held-out prompts*: against the annotator's
labels, and against the gold ranking (on pairs whose gold rewards differ). **Expected runtime: about 30 s on
two free CPU cores** (more on a busy machine).
""")

code(r"""
from rlhf_edu.lm import RewardModel, char_tokenizer, tiny_causal_lm
from rlhf_edu.tasks import SentimentTask
from rlhf_edu.train.reward_model import pairwise_accuracy, reward_margins, reward_model

task = SentimentTask(seed=0)
tok = char_tokenizer()
test_pairs = task.preference_pairs(512, split="test", seed=1)  # prompts never seen in training
gold_test = np.array([[p["gold_chosen"], p["gold_rejected"]] for p in test_pairs])
gold_order = np.sign(gold_test[:, 0] - gold_test[:, 1])  # +1: the label agrees with gold, -1: it does not
decided = gold_order != 0
example = next(p for p in task.preference_pairs(8, seed=0) if p["gold_chosen"] != p["gold_rejected"])
print(f"a training pair: {example['prompt']!r}\n  chosen   {example['chosen']!r} (gold {example['gold_chosen']:.3f})"
      f"\n  rejected {example['rejected']!r} (gold {example['gold_rejected']:.3f})")
print(f"test pairs: {len(test_pairs)}, of which {decided.mean():.0%} have different gold rewards")
""")

code(r"""
NOISE_LEVELS = (0.0, 0.2, 0.4)
runs = {}
t0 = time.perf_counter()
for noise in NOISE_LEVELS:
    train_pairs = task.preference_pairs(2048, noise=noise, seed=0)
    rm = RewardModel(tiny_causal_lm(tok, d_model=64, n_layer=1, seed=0), seed=0)
    rm, history = reward_model(rm, tok, train_pairs, epochs=1, batch_size=64, lr=3e-3, eval_pairs=test_pairs[:256],
                               eval_every=8, seed=0, device="cpu", progress=False)
    margins = reward_margins(rm, tok, test_pairs)
    runs[noise] = dict(rm=rm, history=history, margins=margins,
                       acc_label=pairwise_accuracy(rm, tok, test_pairs),
                       acc_gold=float(np.mean(np.sign(margins[decided]) == gold_order[decided])))
    print(f"noise {noise:.0%}: trained in {time.perf_counter() - t0:.1f} s (cumulative)")
print(f"three reward models in {time.perf_counter() - t0:.1f} s")
assert runs[0.0]["acc_gold"] > 0.75 and runs[0.0]["acc_label"] > 0.65
assert runs[0.0]["acc_gold"] > runs[0.4]["acc_gold"] + 0.1
""", tags=["nbval-ignore-output"])

code(r"""
print(f"{'label noise':>11} {'final train loss':>17} {'test acc (labels)':>18} {'test acc (gold)':>16} {'mean |margin|':>14}")
for noise, run in runs.items():
    h = run["history"]
    final_loss = h["bt_loss"][:-1][-4:].mean()  # last 4 training steps (the last row is the final evaluation)
    print(f"{noise:11.0%} {final_loss:17.3f} {run['acc_label']:18.3f} {run['acc_gold']:16.3f} "
          f"{np.abs(run['margins']).mean():14.3f}")

h = runs[0.0]["history"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.plot(h["step"][:-1], h["bt_loss"][:-1], color="tab:blue", lw=1.5, label="train batch loss")
ax1.axhline(math.log(2), color="0.5", ls=":", lw=1, label="log 2 (a constant reward)")
ax1.set_xlabel("optimiser step")
ax1.set_ylabel("Bradley-Terry loss (nats)")
ax1.legend(frameon=False)
ax1.set_title("reward model, clean labels: training loss")
for noise, run in runs.items():
    hn = run["history"]
    ev = ~np.isnan(hn["eval_accuracy"])
    ax2.plot(hn["step"][ev], hn["eval_accuracy"][ev], "o-", ms=4, label=f"{noise:.0%} labels flipped")
ax2.axhline(0.5, color="0.5", ls=":", lw=1)
ax2.set_xlabel("optimiser step")
ax2.set_ylabel("held-out accuracy vs labels")
ax2.set_title("held-out pairwise accuracy")
ax2.legend(frameon=False, fontsize=8.5)
fig.tight_layout()
plt.show()
""")

md(r"""
The held-out accuracy is still rising after 32 steps: this is a deliberately short run (try `epochs=3`).
Against the gold ranking, the clean-label model is right on about 83% of the pairs; every 20% of flipped
training labels costs several points.

**The margin histogram.** For each held-out pair, $r_\phi(x, y_w) - r_\phi(x, y_l)$: positive where the reward
model agrees with the label. With clean labels the bulk sits to the right of 0 and spreads out; the more
labels were flipped during training, the closer to 0 the margins stay (as the widget of section 8 predicts:
noise caps the margin) and the more pairs land on the wrong side.
""")

code(r"""
fig, ax = plt.subplots(figsize=(7, 3.8))
bins = np.linspace(-3, 3, 49)
for noise, run in runs.items():
    ax.hist(run["margins"], bins=bins, histtype="step", lw=2, label=f"{noise:.0%} labels flipped")
ax.axvline(0, color="k", lw=0.8)
ax.set_xlabel(r"reward margin $r_\phi(x, y_w) - r_\phi(x, y_l)$ on held-out pairs (log-odds)")
ax.set_ylabel("number of pairs")
ax.set_title("label noise shrinks the margins and blurs the ranking")
ax.legend(frameon=False)
plt.show()
""")

# ------------------------------------------------------------------------------------------------ 10. bugs
md(r"""
## 10. Common bugs

### Bug 1: chosen and rejected swapped

The loss is asymmetric: `bradley_terry_loss(r_chosen, r_rejected)`. Pass the rejected answer first (or read
the wrong column of a data set) and training works perfectly, toward the *opposite* reward. Nothing crashes;
the tell is a held-out accuracy far *below* 0.5. On the comparisons of 5.3:
""")

code(r"""
fitted_swapped = rn.fit_bradley_terry(losers, winners, n_items=10)  # BUG: losers passed as winners
corr_right = np.corrcoef(fitted, true_scores)[0, 1]
corr_swapped = np.corrcoef(fitted_swapped, true_scores)[0, 1]

def acc(s):
    return np.mean(s[winners] > s[losers])

print(f"correlation with the true scores: right order {corr_right:+.3f}, swapped {corr_swapped:+.3f}")
print(f"accuracy on the comparisons:      right order {acc(fitted):.3f}, swapped {acc(fitted_swapped):.3f}")
assert corr_right > 0.99 and corr_swapped < -0.99
assert np.allclose(fitted_swapped, -fitted, atol=1e-6)  # exactly the negated reward
""")

md(r"""
### Bug 2: probabilities where logits are expected

The loss wants *rewards* (logits, any real number). A common slip is to squash the reward model's output
first, e.g. a head that ends in a sigmoid "so that rewards are probabilities", and then feed those into the
Bradley-Terry loss (or call `binary_cross_entropy_with_logits` on something already passed through a
sigmoid). The margin is then stuck in $(-1, 1)$: a pair can never cost less than $\log(1 + e^{-1}) = 0.3133$,
and a badly misranked pair, where the learning should happen, gets almost no gradient because the sigmoid is
flat there:
""")

code(r"""
r_w = torch.tensor([5.0, -5.0], requires_grad=True)  # pair 1 ranked right, pair 2 badly wrong
r_l = torch.tensor([-5.0, 5.0], requires_grad=True)
right = rt.bradley_terry_loss(r_w, r_l)
right.sum().backward()
grad_right = r_w.grad.clone()
r_w.grad = None
buggy = rt.bradley_terry_loss(torch.sigmoid(r_w), torch.sigmoid(r_l))  # BUG: probabilities in, not rewards
buggy.sum().backward()
grad_buggy = r_w.grad.clone()
print(f"loss        right {right.detach().numpy().round(4)}   buggy {buggy.detach().numpy().round(4)}")
print(f"d/d r_w     right {grad_right.numpy().round(4)}   buggy {grad_buggy.numpy().round(4)}")
assert buggy[0] > 0.3133 - 1e-4  # a perfectly ranked pair still costs 0.31 nats
assert abs(grad_buggy[1]) < abs(grad_right[1]) / 100  # the misranked pair is barely pushed
""")

# ------------------------------------------------------------------------------------------------ 11. exercises
md(r"""
## 11. Exercises

Each exercise is a function you write; the checker compares it with the library's reference on edge cases
and random inputs and prints the first input where they disagree. Replace the body until the check prints
PASS.

**Exercise 1: the Bradley-Terry probability.** `my_bt_prob(r_a, r_b)` returns $P(a \succ b)$ elementwise
(arrays broadcast: `my_bt_prob(r[:, None], r[None, :])` is the matrix of all pairwise win probabilities), and
must give exactly 1 and 0 for gaps of $\pm 10^4$, not NaN.
""")

code(r"""
def my_bt_prob(r_a, r_b):
    r_a, r_b = np.asarray(r_a, dtype=float), np.asarray(r_b, dtype=float)
    # YOUR CODE HERE
    return np.full(np.broadcast(r_a, r_b).shape, 0.5)

result = check_bt_prob(my_bt_prob)
""")

md(r"""
**Exercise 2: the pairwise loss.** `my_bt_loss(r_chosen, r_rejected)` returns $-\log\sigma(r_{chosen} -
r_{rejected})$ per pair, finite for margins of $\pm 10^4$.
""")

code(r"""
def my_bt_loss(r_chosen, r_rejected):
    r_chosen, r_rejected = np.asarray(r_chosen, dtype=float), np.asarray(r_rejected, dtype=float)
    # YOUR CODE HERE
    return np.full(np.broadcast(r_chosen, r_rejected).shape, math.log(2.0))

result = check_bt_loss(my_bt_loss)
""")

md(r"""
**Exercise 3: its gradient.** `my_bt_loss_grad(r_chosen, r_rejected)` returns a dict
`{"r_chosen": ..., "r_rejected": ...}` with the gradient of the summed loss with respect to each reward
(same shapes as the inputs).
""")

code(r"""
def my_bt_loss_grad(r_chosen, r_rejected):
    r_chosen, r_rejected = np.asarray(r_chosen, dtype=float), np.asarray(r_rejected, dtype=float)
    # YOUR CODE HERE
    return {"r_chosen": np.zeros_like(r_chosen), "r_rejected": np.zeros_like(r_rejected)}

result = check_bt_loss_grad(my_bt_loss_grad)
""")

md(r"""
**Exercise 4: K-wise ranking to pairs.** `my_ranking_to_pairs(ranking)` takes a best-first ranking of K
distinct item ids and returns `(winners, losers, weights)`: for every pair of positions $i < j$, in the order
$(0,1), (0,2), \dots, (0,K-1), (1,2), \dots$, `ranking[i]` beat `ranking[j]`, with weight $1/\binom{K}{2}$ each;
a repeated id raises `ValueError`.
""")

code(r"""
def my_ranking_to_pairs(ranking):
    ranking = np.asarray(ranking)
    # YOUR CODE HERE
    return ranking[:-1], ranking[1:], np.ones(len(ranking) - 1)

result = check_ranking_to_pairs(my_ranking_to_pairs)
""")

# ------------------------------------------------------------------------------------------------ 12. summary
md(r"""
## 12. Summary and further reading

- People compare more reliably than they rate; comparisons keep the order and drop each rater's scale.
- Random utilities with extreme-value noise give $P(a \succ b) = \frac{e^{r_a}}{e^{r_a} + e^{r_b}} = \sigma(r_a -
  r_b)$: the reward gap is the log-odds of the preference, and only differences of rewards are identified.
- The reward model is fitted by maximum likelihood, $\mathcal L = -\mathbb E[\log\sigma(r_w - r_l)]$, a binary
  classification of the margin, with gradient $\mp\sigma(-d)$; K-wise rankings give $\binom{K}{2}$ pairs,
  each weighted $1/\binom{K}{2}$.
- Scores are recovered up to a constant; label noise limits both the accuracy and the margins a reward model
  should reach.
- Keep chosen first, and feed rewards (logits), never probabilities, into the loss; compute it as
  `logaddexp(0, -d)` / `-logsigmoid(d)`.

Further reading:

- R. A. Bradley and M. E. Terry, *Rank Analysis of Incomplete Block Designs: I. The Method of Paired
  Comparisons* (1952).
- E. Zermelo, *Die Berechnung der Turnier-Ergebnisse als ein Maximumproblem der Wahrscheinlichkeitsrechnung*
  (1929); L. R. Ford, *Solution of a Ranking Problem from Binary Comparisons* (1957).
- L. L. Thurstone, *A Law of Comparative Judgment* (1927); R. D. Luce, *Individual Choice Behavior* (1959);
  D. McFadden, *Conditional Logit Analysis of Qualitative Choice Behavior* (1974); R. L. Plackett, *The
  Analysis of Permutations* (1975).
- P. Christiano et al., *Deep Reinforcement Learning from Human Preferences* (2017).
- D. M. Ziegler et al., *Fine-Tuning Language Models from Human Preferences* (2019); N. Stiennon et al.,
  *Learning to Summarize from Human Feedback* (2020).
- L. Ouyang et al., *Training Language Models to Follow Instructions with Human Feedback* (InstructGPT, 2022):
  K-wise rankings and the $1/\binom{K}{2}$ loss.
- H. Touvron et al., *Llama 2: Open Foundation and Fine-Tuned Chat Models* (2023): the margin in the
  reward-model loss.
- L. Gao, J. Schulman and J. Hilton, *Scaling Laws for Reward Model Overoptimization* (2022).
""")

code(r"""
print(f"chapter 1 ran in {time.perf_counter() - T_START:.1f} s")
""", tags=["nbval-ignore-output"])


if __name__ == "__main__":
    book.write()
