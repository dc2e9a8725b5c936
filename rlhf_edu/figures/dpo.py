r"""Slide figures of chapter 6 (the DPO derivation), and the toy they are drawn on.

The toy: one prompt, ``"review: the film was"``, and five answers of the sentiment task, scored by the
task's gold reward on the scale of its simulated annotator (``rlhf_edu.tasks.bradley_terry_choice`` draws
"a over b" with probability :math:`\sigma(10\,(g_a - g_b))`, so :math:`r = 10\,g` is the Bradley-Terry
reward of those labels). A reference model that likes the short, lukewarm answers:

=========================  ======  ====================  =======================
answer                     ref     reward r = 10 g         length (tokens)
=========================  ======  ====================  =======================
" great fun."              0.10    8.81                   12
" good."                   0.25    7.31                   7
" quiet."                  0.30    5.00                   8
" dull."                   0.20    2.69                   7
" dull and boring."        0.15    1.19                   18
=========================  ======  ====================  =======================

(lengths in tokens of the book's character tokenizer: one per character plus the end token).

Figure functions take only keyword arguments with defaults (the chapter's widget changes ``beta``) and return
a matplotlib ``Figure``:

- :func:`tilted_reference_figure` (``ch06_tilted_reference``): :math:`\pi^*` is :math:`\pi_{ref}` reweighted by
  :math:`e^{r/\beta}` and renormalised by :math:`Z(x)`;
- :func:`beta_path_figure` (``ch06_beta_path``): :math:`\beta` moves :math:`\pi^*` from the argmax of the
  reward (:math:`\beta\to 0`) to :math:`\pi_{ref}` (:math:`\beta\to\infty`);
- :func:`dpo_weight_figure` (``ch06_dpo_weight``): DPO's loss and its gradient weight
  :math:`\sigma(\hat r_l - \hat r_w)` against the implicit reward margin;
- :func:`toy_dpo_figure` (``ch06_toy_dpo``): DPO trained on the toy's exact preference probabilities reaches
  :math:`\pi^*`; with per-token mean log-probs or a reference that follows the policy it does not;
- :func:`implied_reward_figure` (``ch06_implied_reward``): the reward implied by the trained policy is the
  true reward shifted by :math:`-\beta\log Z(x)`.

The measurement :func:`fit_dpo_on_toy` is public: the chapter prints its source and its numbers.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from rlhf_edu.figures import slide_figure
from rlhf_edu.numpy.direct import dpo_loss, dpo_loss_grad
from rlhf_edu.numpy.divergences import kl_divergence
from rlhf_edu.numpy.optimal import implied_reward, kl_regularized_optimum, log_partition
from rlhf_edu.numpy.preferences import bradley_terry_prob
from rlhf_edu.tasks.sentiment import gold_reward
from rlhf_edu.validation import as_float_array, check_choice, check_integer, check_positive, check_probabilities

__all__ = [
    "TOY_PROMPT",
    "TOY_RESPONSES",
    "TOY_REF_PROBS",
    "TOY_BETA",
    "ANNOTATOR_SCALE",
    "review_toy",
    "fit_dpo_on_toy",
    "tilted_reference_figure",
    "beta_path_figure",
    "dpo_weight_figure",
    "toy_dpo_figure",
    "implied_reward_figure",
]

TOY_PROMPT = "review: the film was"
#: Five answers of the sentiment task, best first by the gold reward.
TOY_RESPONSES = (" great fun.", " good.", " quiet.", " dull.", " dull and boring.")
#: The reference model's probabilities: it likes the short, lukewarm answers (an SFT model, not yet aligned).
TOY_REF_PROBS = (0.10, 0.25, 0.30, 0.20, 0.15)
#: The chapter's default KL coefficient for the toy (in units of the reward r = 10 g).
TOY_BETA = 2.0
#: The sentiment task's annotator rationality: P(a > b) = sigma(10 (g_a - g_b)), so r = 10 g.
ANNOTATOR_SCALE = 10.0

_SHORT = ("great fun", "good", "quiet", "dull", "dull+boring")  # axis labels
FIT_REFERENCES = ("frozen", "live")
FIT_REDUCTIONS = ("sum", "mean")


def review_toy():
    """The chapter's toy as a dict: ``prompt``, ``responses``, ``ref_probs``, ``rewards`` (r = 10 g),
    ``lengths`` (tokens: characters plus the end token) and ``beta``.

    >>> toy = review_toy()
    >>> toy["rewards"].round(2).tolist(), toy["lengths"].tolist()
    ([8.81, 7.31, 5.0, 2.69, 1.19], [12.0, 7.0, 8.0, 7.0, 18.0])
    """
    return {
        "prompt": TOY_PROMPT,
        "responses": TOY_RESPONSES,
        "ref_probs": np.array(TOY_REF_PROBS),
        "rewards": ANNOTATOR_SCALE * gold_reward(list(TOY_RESPONSES)),
        "lengths": np.array([len(text) + 1.0 for text in TOY_RESPONSES]),
        "beta": TOY_BETA,
    }


def fit_dpo_on_toy(ref_probs, rewards, beta, *, steps=400, lr=3.0, reduction="sum", lengths=None,
                   reference="frozen"):
    r"""DPO by gradient descent on a one-prompt toy, trained on its EXACT preference probabilities.

    The policy is a softmax over the K answers, logits :math:`\theta` started at :math:`\log\pi_{ref}`. Every
    unordered pair :math:`\{i, j\}` is seen equally often and labelled :math:`i \succ j` with the
    Bradley-Terry probability :math:`p_{ij} = \sigma(r_i - r_j)`, so the loss is DPO's expected loss

    .. math:: L(\theta) = \operatorname{mean}_{i<j}\big[p_{ij}\,\ell(i, j) + p_{ji}\,\ell(j, i)\big],
              \qquad \ell(w, l) = \texttt{dpo\_loss}(\log\pi_w, \log\pi_l, \log\pi_{ref,w}, \log\pi_{ref,l}, \beta),

    and its gradient comes from ``dpo_loss_grad`` (:math:`\partial\ell/\partial\log\pi`) and the log-softmax
    (:math:`\partial\log\pi_k/\partial\theta = e_k - \pi`). Its minimum, the mean binary entropy of the
    labels, is reached exactly where :math:`\beta\log\frac{\pi_i}{\pi_{ref,i}} = r_i + c`: at :math:`\pi^*`.

    ``reduction="mean"`` divides every log-probability (policy and reference) by the answer's ``lengths``
    (what ``train_dpo(logp_reduction="mean")`` does); ``reference="live"`` takes the reference log-probs
    from the current policy (detached) at every step, a reference that is not frozen. Both are the
    chapter's common bugs. Returns ``{"policy": (K,), "policies": (steps + 1, K), "losses": (steps,)}``.
    Chapter 6.

    >>> toy = review_toy()
    >>> fit = fit_dpo_on_toy(toy["ref_probs"], toy["rewards"], 2.0)
    >>> bool(np.allclose(fit["policy"], kl_regularized_optimum(toy["ref_probs"], toy["rewards"], 2.0)))
    True
    """
    ref_probs = as_float_array("ref_probs", ref_probs)
    check_probabilities("ref_probs", ref_probs)
    rewards = as_float_array("rewards", rewards)
    if ref_probs.ndim != 1 or rewards.shape != ref_probs.shape or ref_probs.size < 2:
        raise ValueError(f"ref_probs and rewards must be two vectors of one length >= 2, got {ref_probs.shape} "
                         f"and {rewards.shape}")
    beta = check_positive("beta", beta)
    steps = check_integer("steps", steps, minimum=1)
    lr = check_positive("lr", lr)
    check_choice("reduction", reduction, FIT_REDUCTIONS)
    check_choice("reference", reference, FIT_REFERENCES)
    k = ref_probs.size
    if reduction == "mean":
        if lengths is None:
            raise ValueError("reduction='mean' needs the answers' lengths (tokens)")
        lengths = as_float_array("lengths", lengths)
        if lengths.shape != ref_probs.shape or np.any(lengths <= 0):
            raise ValueError(f"lengths must be {k} positive token counts, got {lengths}")
        scale = 1.0 / lengths
    else:
        scale = np.ones(k)
    i, j = np.triu_indices(k, 1)
    p = bradley_terry_prob(rewards[i], rewards[j])  # P(y_i > y_j)
    log_ref = np.log(ref_probs)
    theta = log_ref.copy()
    policies, losses = [np.exp(log_ref)], []
    for _ in range(steps):
        logp = theta - np.logaddexp.reduce(theta)
        ref_logp = log_ref if reference == "frozen" else logp  # "live": the policy itself, no gradient
        a, b = logp * scale, ref_logp * scale
        i_wins = dpo_loss_grad(a[i], a[j], b[i], b[j], beta)  # the label says y_i > y_j
        j_wins = dpo_loss_grad(a[j], a[i], b[j], b[i], beta)
        losses.append(float(np.mean(p * dpo_loss(a[i], a[j], b[i], b[j], beta)
                                     + (1 - p) * dpo_loss(a[j], a[i], b[j], b[i], beta))))
        g = np.zeros(k)  # d L / d log pi_k
        np.add.at(g, i, p * i_wins["policy_chosen_logps"] + (1 - p) * j_wins["policy_rejected_logps"])
        np.add.at(g, j, p * i_wins["policy_rejected_logps"] + (1 - p) * j_wins["policy_chosen_logps"])
        g *= scale / i.size
        theta = theta - lr * (g - np.exp(logp) * g.sum())  # through log-softmax
        policies.append(np.exp(theta - np.logaddexp.reduce(theta)))
    return {"policy": policies[-1], "policies": np.array(policies), "losses": np.array(losses)}


def _bars(ax, values, color, title, ylabel="probability"):
    ax.bar(range(len(values)), values, color=color)
    ax.set_xticks(range(len(values)), _SHORT, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)


@slide_figure("ch06_tilted_reference")
def tilted_reference_figure(beta=TOY_BETA):
    r"""The idea in one picture: :math:`\pi^* = \pi_{ref}\,e^{r/\beta} / Z(x)` on the review toy."""
    toy = review_toy()
    ref, r = toy["ref_probs"], toy["rewards"]
    weights = np.exp(r / beta)
    pi_star = kl_regularized_optimum(ref, r, beta)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    _bars(axes[0], ref, "0.55", r"reference $\pi_{ref}(y|x)$")
    _bars(axes[1], weights, "tab:orange", rf"weight $e^{{r(x,y)/\beta}}$, $\beta$ = {beta:g}", "weight (no unit)")
    z = np.exp(log_partition(ref, r, beta))
    _bars(axes[2], pi_star, "tab:blue", rf"$\pi^*(y|x)$ = product / Z(x), Z = {z:.1f}")
    for ax in axes:
        ax.set_xlabel(f"answer to '{TOY_PROMPT}'", fontsize=8)
    fig.suptitle(r"the optimum of E[r] - $\beta$ KL reweights the reference by $e^{r/\beta}$ and renormalises",
                 fontsize=11)
    fig.tight_layout()
    return fig


@slide_figure("ch06_beta_path")
def beta_path_figure(beta=TOY_BETA):
    r"""Left: :math:`\pi_{ref}`, :math:`\pi^*_\beta` and the argmax of the reward at one ``beta``. Right: every
    :math:`\pi^*_\beta(y)` as :math:`\beta` varies, with ``beta`` marked."""
    toy = review_toy()
    ref, r = toy["ref_probs"], toy["rewards"]
    pi_star = kl_regularized_optimum(ref, r, beta)
    argmax = np.eye(ref.size)[np.argmax(r)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.2]})
    x = np.arange(ref.size)
    ax1.bar(x - 0.27, ref, 0.27, color="0.55", label=r"$\pi_{ref}$")
    ax1.bar(x, pi_star, 0.27, color="tab:blue", label=rf"$\pi^*_\beta$, $\beta$ = {beta:.3g}")
    ax1.bar(x + 0.27, argmax, 0.27, color="none", edgecolor="tab:red", hatch="//", label="argmax of r")
    ax1.set_xticks(x, _SHORT, rotation=30, ha="right", fontsize=8)
    ax1.set_ylabel("probability")
    ax1.set_ylim(0, 1.05)
    ax1.legend(fontsize=8, frameon=False)
    ax1.set_title(rf"E[r] = {pi_star @ r:.2f} (ref {ref @ r:.2f}, max {r.max():.2f}),"
                  rf" KL = {kl_divergence(pi_star, ref):.2f} nats", fontsize=9)
    betas = np.geomspace(0.05, 100, 300)
    path = np.stack([kl_regularized_optimum(ref, r, float(b)) for b in betas])
    for k in range(ref.size):
        ax2.plot(betas, path[:, k], lw=2, label=_SHORT[k])
    ax2.axvline(beta, color="k", ls="--", lw=1)
    ax2.set_xscale("log")
    ax2.set_xlabel(r"$\beta$ (log scale, reward units)")
    ax2.set_ylabel(r"$\pi^*_\beta(y|x)$")
    ax2.legend(fontsize=8, frameon=False, loc="center right")
    ax2.set_title(r"small $\beta$: the argmax; large $\beta$: $\pi_{ref}$", fontsize=10)
    fig.tight_layout()
    return fig


@slide_figure("ch06_dpo_weight")
def dpo_weight_figure(beta=1.0):
    r"""DPO's per-pair loss :math:`-\log\sigma(m)` and its gradient weight
    :math:`\sigma(-m) = \sigma(\hat r_l - \hat r_w)` against the implicit reward margin
    :math:`m = \hat r_w - \hat r_l`, from ``dpo_loss`` and ``dpo_loss_grad``."""
    margins = np.linspace(-6, 6, 241)
    half = margins / (2 * beta)
    base = -1.0 - np.abs(half).max()  # any log-probs with beta h = margin will do
    pc, pr, ref = base + half, base - half, np.full_like(margins, base)
    loss = dpo_loss(pc, pr, ref, ref, beta)
    weight = -dpo_loss_grad(pc, pr, ref, ref, beta)["policy_chosen_logps"] / beta
    fig, ax1 = plt.subplots(figsize=(6.8, 3.8))
    ax1.plot(margins, loss, color="tab:blue", lw=2, label=r"loss $-\log\sigma(m)$")
    ax1.set_xlabel(r"implicit reward margin $m = \hat r_\theta(x,y_w) - \hat r_\theta(x,y_l)$ (reward units)")
    ax1.set_ylabel("loss per pair (nats)", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(margins, weight, color="tab:red", lw=2, label=r"weight $\sigma(\hat r_l - \hat r_w)$")
    ax2.set_ylabel("gradient weight (0 to 1)", color="tab:red")
    ax2.set_ylim(0, 1.02)
    ax1.axvline(0, color="0.6", lw=1, ls=":")
    lines = ax1.get_lines()[:1] + ax2.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], frameon=False, loc="upper center")
    ax1.set_title("pairs the implicit reward orders wrongly (m < 0) get the largest steps", fontsize=10)
    fig.tight_layout()
    return fig


def _toy_runs(steps):
    toy = review_toy()
    ref, r, beta = toy["ref_probs"], toy["rewards"], toy["beta"]
    runs = {
        "sum of log-probs, frozen reference (DPO)": fit_dpo_on_toy(ref, r, beta, steps=steps),
        "per-token mean log-probs (bug 1; 10x the step)": fit_dpo_on_toy(
            ref, r, beta, steps=steps, lr=30.0, reduction="mean", lengths=toy["lengths"]),
        "reference = the live policy (bug 2)": fit_dpo_on_toy(ref, r, beta, steps=steps, reference="live"),
    }
    return toy, kl_regularized_optimum(ref, r, beta), runs


@slide_figure("ch06_toy_dpo")
def toy_dpo_figure(steps=600):
    r"""Distance to :math:`\pi^*` and loss of DPO on the toy's exact preferences, against the gradient step."""
    toy, pi_star, runs = _toy_runs(steps)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for (name, fit), color in zip(runs.items(), ("tab:blue", "tab:orange", "tab:red")):
        tv = 0.5 * np.abs(fit["policies"] - pi_star).sum(axis=1)
        ax1.plot(np.arange(steps + 1), np.maximum(tv, 1e-17), color=color, lw=2, label=name)
        ax2.plot(np.arange(1, steps + 1), fit["losses"], color=color, lw=2, label=name)
    ax1.set_yscale("log")
    ax1.set_xlabel("gradient step")
    ax1.set_ylabel(r"total variation to $\pi^*$ (0 to 1)")
    ax1.set_title(r"only the right loss reaches $\pi^*$", fontsize=10)
    ax1.legend(fontsize=8, frameon=False)
    ax2.set_xlabel("gradient step")
    ax2.set_ylabel("expected DPO loss (nats per pair)")
    ax2.set_title("mean run: the same minimum loss; live reference: stuck at log 2", fontsize=10)
    fig.tight_layout()
    return fig


@slide_figure("ch06_implied_reward")
def implied_reward_figure(steps=400):
    r"""The reward implied by the DPO-trained toy policy, :math:`\beta\log\frac{\pi}{\pi_{ref}}`, against the true
    reward: the line :math:`r - \beta\log Z(x)`, slope 1."""
    toy = review_toy()
    ref, r, beta = toy["ref_probs"], toy["rewards"], toy["beta"]
    fit = fit_dpo_on_toy(ref, r, beta, steps=steps)
    implied = implied_reward(fit["policy"], ref, beta)
    shift = beta * log_partition(ref, r, beta)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    grid = np.linspace(0, 10, 2)
    ax.plot(grid, grid - shift, color="0.5", lw=1, ls="--", label=rf"$r - \beta\log Z(x)$ = r - {shift:.2f}")
    ax.scatter(r, implied, color="tab:blue", zorder=3, label=r"$\beta\log\frac{\pi_{DPO}(y|x)}{\pi_{ref}(y|x)}$")
    for x0, y0, name in zip(r, implied, _SHORT):
        ax.annotate(name, (x0, y0), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.axhline(0, color="0.8", lw=1)
    ax.set_xlabel("true reward r(x, y) = 10 x gold (reward units)")
    ax.set_ylabel("implied reward (reward units)")
    ax.set_title(r"DPO recovers the reward up to the prompt's constant $\beta\log Z(x)$", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig
