"""Build chapters/03_mdp_grid_world.ipynb (run from the repository root; then execute it with nbconvert).

    .venv/bin/python chapters/build/03_mdp_grid_world.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace chapters/03_mdp_grid_world.ipynb
"""

from chapter_builder import ChapterBuilder

book = ChapterBuilder("03_mdp_grid_world.ipynb")
md, code = book.md, book.code


# ------------------------------------------------------------------------------------------------
md(r"""
# Chapter 3. The grid-world MDP: values, Bellman equations, dynamic programming

RLHF treats a language model as an **agent** that picks tokens and collects a reward. Before tokens, this
chapter builds the vocabulary of reinforcement learning on the smallest world there is: the lecture notes'
$2\times 2$ grid. Everything here is exact (no sampling, no neural network), so every number can be checked
by hand; chapter 4 then replaces exact sums by samples (policy gradients, PPO, GAE) and finally the grid by
tokens.

## 1. Goals

After this chapter you can

1. write a problem as an MDP $\langle \mathcal S, \mathcal A, P, R, \gamma\rangle$ and say what the Markov
   property buys;
2. compute a discounted return $G_t$ and explain what $\gamma$ does to it;
3. define $V^\pi$ and $Q^\pi$, derive $V^\pi(s) = \sum_a \pi(a|s) Q^\pi(s,a)$ and the Bellman expectation and
   optimality equations;
4. evaluate a policy exactly (a linear solve) and iteratively (sweeps), and find an optimal policy with value
   iteration and policy iteration;
5. read a value map and its greedy policy off a grid world.
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

from rlhf_edu import numpy as rn
from rlhf_edu import torch as rt
from rlhf_edu.exercises import check_bellman_backup, check_evaluation_sweep, check_greedy_policy
from rlhf_edu.figures import mdp as figs
from rlhf_edu.plotting import plot_grid_values

T0 = time.perf_counter()
np.random.seed(0)
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny tensors: one thread is faster than several
np.set_printoptions(precision=4, suppress=True)
""")

# ------------------------------------------------------------------------------------------------
md(r"""
## 2. The idea in words, and one picture

An **agent** sits in a **state**, picks an **action**, and the **environment** answers with a **reward** and
the next state. The agent wants as much reward as possible *in total*, not just now. In the notes' grid world
there are four cells $s_0, s_1 / s_2, s_3$; the agent starts in $s_0$ (top left) and the episode ends in
$s_3$ (bottom right). The notes' slide shows the moves and rewards only as pictures, so this book fixes them
the standard way (Sutton & Barto's example 4.1): four moves *up, down, left, right*, a move off the grid
leaves the agent where it is, and **every move costs $-1$**. Maximising the total reward then means reaching
the end in as few moves as possible.

How good is a cell? That depends on how the agent behaves there (its **policy**). Below, on the left, an agent
that moves at random: from the start it needs 8 moves on average, so the start is worth $-8$. On the right,
an agent that always heads for the exit: 2 moves, worth $-2$. The arrows are the policy. This chapter is
about computing such maps, and about turning the left map into the right one.
""")

code(r"""
fig = figs.two_by_two_figure()
plt.show()
""")

# ------------------------------------------------------------------------------------------------
md(r"""
## 3. Derivation

### 3.1 The MDP and the Markov property

The notes model the problem as a **Markov decision process**

$$\langle \mathcal S, \mathcal A, P, R, \gamma \rangle,$$

with states $\mathcal S$, actions $\mathcal A$, transition probabilities $P(s'|s,a)$, expected rewards
$r(s,a) = \mathbb E[r_t \mid s_t = s, a_t = a]$ and a discount $\gamma \in [0,1]$. The **Markov property**:

$$P(s_{t+1} \mid s_t, a_t, s_{t-1}, a_{t-1}, \dots, s_0) = P(s_{t+1} \mid s_t, a_t).$$

*Note on the notes:* the sentence on the slide says "the next state depends only on the previous state";
the formula (correctly) conditions on the present state **and action**. The past matters only through
$s_t$. In the library an MDP is three arrays: `transitions[s, a, s2]` $= P(s_2|s,a)$, `rewards[s, a]`
$= r(s,a)$ and `gamma`; a terminal state is absorbing with reward 0.

### 3.2 Returns and discounting

The agent maximises the **return**, the discounted sum of future rewards (the notes' convention: $r_t$ is
the reward for the action taken at time $t$):

$$G_t = r_t + \gamma r_{t+1} + \gamma^2 r_{t+2} + \dots = \sum_{k \ge 0} \gamma^k r_{t+k}.$$

(On the slide the brace labelled "Return" covers only $\gamma r_{t+1} + \dots$; the return is the whole
sum, $r_t$ included.) Splitting off the first term gives the recursion that everything below rests on:

$$G_t = r_t + \gamma \left(r_{t+1} + \gamma r_{t+2} + \dots\right) = r_t + \gamma G_{t+1}.$$

A reward $k$ steps ahead is worth $\gamma^k$ of an immediate one. With $|r| \le r_{\max}$ and $\gamma<1$,
$|G_t| \le r_{\max}/(1-\gamma)$: $1/(1-\gamma)$ is the **effective horizon**. With $\gamma = 1$ (as in the
$2\times2$ world) the sum is finite only because the episode ends.

### 3.3 Policies, $V^\pi$ and $Q^\pi$

A policy maps states to a distribution over actions, $a_t \sim \pi(a_t|s_t)$. The notes define

$$V^\pi(s) = \mathbb E_\pi[G_t \mid s_t = s], \qquad Q^\pi(s,a) = \mathbb E_\pi[G_t \mid s_t = s, a_t = a].$$

**$V$ from $Q$.** Condition on the first action (law of total expectation), $a_t \sim \pi(\cdot|s)$:

$$V^\pi(s) = \sum_a P(a_t = a \mid s_t = s)\, \mathbb E_\pi[G_t \mid s_t = s, a_t = a] = \sum_{a} \pi(a|s)\, Q^\pi(s,a).$$

**$Q$ from $V$.** Use $G_t = r_t + \gamma G_{t+1}$, then condition on the next state $s'$:

$$Q^\pi(s,a) = r(s,a) + \gamma \sum_{s'} P(s'|s,a)\, \mathbb E_\pi[G_{t+1} \mid s_t=s, a_t=a, s_{t+1}=s'] = r(s,a) + \gamma \sum_{s'} P(s'|s,a)\, V^\pi(s').$$

The last step is the Markov property: once $s_{t+1} = s'$ is known, the future does not depend on how we got
there, so the inner expectation is $V^\pi(s')$.

### 3.4 The Bellman expectation equation

Put the two together:

$$V^\pi(s) = \sum_a \pi(a|s)\Big[r(s,a) + \gamma \sum_{s'} P(s'|s,a) V^\pi(s')\Big].$$

With $r_\pi(s) = \sum_a \pi(a|s) r(s,a)$ and $P_\pi(s,s') = \sum_a \pi(a|s) P(s'|s,a)$ this is a *linear*
system, $V^\pi = r_\pi + \gamma P_\pi V^\pi$, so

$$V^\pi = (I - \gamma P_\pi)^{-1} r_\pi$$

over the non-terminal states (terminal states have value 0). That is `policy_evaluation(..., method="exact")`.

### 3.5 Iterative policy evaluation, and why it converges

Instead of solving, repeat the backup $V_{k+1} = r_\pi + \gamma P_\pi V_k$ from $V_0 = 0$ (one **sweep**
updates every state). Subtract the fixed point $V^\pi = r_\pi + \gamma P_\pi V^\pi$:

$$V_{k+1} - V^\pi = \gamma P_\pi (V_k - V^\pi) \quad\Rightarrow\quad \|V_{k+1} - V^\pi\|_\infty \le \gamma \|V_k - V^\pi\|_\infty,$$

because each row of $P_\pi$ is a probability distribution (an average cannot exceed the maximum). The error
shrinks like $\gamma^k$: the backup is a **$\gamma$-contraction**. (With $\gamma = 1$ the argument needs the
episode to end: the probability of still running after $n$ steps must go to 0.) Updating the states one at a
time, each using the newest values ("in place", Gauss-Seidel), converges to the same $V^\pi$, usually faster.

### 3.6 Optimality: the Bellman optimality equation

An optimal policy has the largest value in every state, $V^*(s) = \max_\pi V^\pi(s)$. In an optimal policy
the first action must also be the best one, so

$$V^*(s) = \max_a \Big[r(s,a) + \gamma \sum_{s'} P(s'|s,a) V^*(s')\Big], \qquad
Q^*(s,a) = r(s,a) + \gamma \sum_{s'} P(s'|s,a) \max_{a'} Q^*(s',a').$$

The $\max$ makes it nonlinear (no linear solve), but it is still a $\gamma$-contraction
($|\max_a x_a - \max_a y_a| \le \max_a |x_a - y_a|$), so **value iteration**,
$V_{k+1}(s) = \max_a [r(s,a) + \gamma \sum_{s'} P(s'|s,a) V_k(s')]$, converges to $V^*$; an optimal policy
is then greedy: $\pi^*(s) = \arg\max_a Q^*(s,a)$.

### 3.7 Policy improvement and policy iteration

**Policy improvement theorem.** Let $\pi'$ be greedy with respect to $Q^\pi$, so
$Q^\pi(s, \pi'(s)) = \max_a Q^\pi(s,a) \ge \sum_a \pi(a|s)Q^\pi(s,a) = V^\pi(s)$ for all $s$. Then, unrolling
one step at a time under $\pi'$,

$$V^\pi(s) \le Q^\pi(s,\pi'(s)) = \mathbb E_{\pi'}[r_t + \gamma V^\pi(s_{t+1}) \mid s_t = s]
\le \mathbb E_{\pi'}[r_t + \gamma r_{t+1} + \gamma^2 V^\pi(s_{t+2}) \mid s_t = s] \le \dots \le V^{\pi'}(s).$$

So the greedy policy is at least as good everywhere. **Policy iteration** alternates exact evaluation and
greedy improvement; a finite MDP has finitely many deterministic policies and each step does not get worse,
so it stops, at a policy whose values satisfy the optimality equation: $V^*$. It usually needs very few
improvements (you will see 3 on the classic grid), each one a full evaluation.
""")

# ------------------------------------------------------------------------------------------------
md(r"""
## 4. The NumPy reference

The library's code is the math above, line for line. The MDP container and the Bellman backup
$Q = r + \gamma P V$ (for $V^\pi$ it gives $Q^\pi$, for $V^*$ it gives $Q^*$):
""")

code(r"""
print(inspect.getsource(rn.action_values))
""")

md(r"""
Policy evaluation: the exact solve of $(I - \gamma P_\pi)V = r_\pi$ over the non-terminal states, or sweeps
of the backup (the sweep itself is the private helper `_evaluation_sweep`, printed after it):
""")

code(r"""
print(inspect.getsource(rn.policy_evaluation))
print(inspect.getsource(rn.mdp._evaluation_sweep))
""")

md(r"""
The greedy policy, value iteration and policy iteration:
""")

code(r"""
print(inspect.getsource(rn.greedy_policy))
print(inspect.getsource(rn.value_iteration))
print(inspect.getsource(rn.policy_iteration))
""")

# ------------------------------------------------------------------------------------------------
md(r"""
## 5. A worked example with numbers: the $2\times2$ world

The MDP as arrays: 4 states, 4 actions (up, down, left, right), `transitions` of shape (4, 4, 4).
""")

code(r"""
mdp, layout = rn.two_by_two_world()
print("states:", mdp.state_names, " actions:", mdp.action_names, " gamma:", mdp.gamma)
print("terminal:", mdp.terminal)
print("rewards r(s, a):\n", mdp.rewards)
print("P(. | s0, a) for each action a (rows: up, down, left, right):\n", mdp.transitions[0])
""")

md(r"""
**A return.** The path $s_0 \xrightarrow{\text{right}} s_1 \xrightarrow{\text{down}} s_3$ collects
$(-1, -1)$. With $\gamma = 1$, $G_0 = -2$; with $\gamma = 0.9$, $G_0 = -1 + 0.9\cdot(-1) = -1.9$, and
$G_1 = -1$. The recursion $G_t = r_t + \gamma G_{t+1}$ is what `discounted_returns` (chapter 4's
`advantages` module) computes backwards:
""")

code(r"""
G = rn.discounted_returns(np.array([-1.0, -1.0]), 0.9)
print("G =", G)
assert np.allclose(G, [-1.9, -1.0])
assert np.allclose(rn.discounted_returns(np.array([-1.0, -1.0]), 1.0), [-2.0, -1.0])
""")

md(r"""
**The random policy by hand.** Let $\pi(a|s) = 1/4$. By symmetry $V(s_1) = V(s_2) = x$ and $V(s_0) = y$,
$V(s_3) = 0$. From $s_1$: up and right bump (stay in $s_1$), left goes to $s_0$, down ends the episode. From
$s_0$: up and left bump, right goes to $s_1$, down to $s_2$. The Bellman expectation equation reads

$$x = -1 + \tfrac14(x + 0 + y + x), \qquad y = -1 + \tfrac14(y + x + y + x).$$

The first gives $2x - y = -4$, the second $y = x - 2$; so $x = -6$, $y = -8$: from the start a random walker
needs 8 moves on average.
""")

code(r"""
pi_random = np.full((4, 4), 0.25)
v_exact = rn.policy_evaluation(mdp, pi_random)                       # linear solve
v_iter = rn.policy_evaluation(mdp, pi_random, method="iterative")    # sweeps until changes < 1e-10
print("V^pi (exact)     =", v_exact)
print("V^pi (iterative) =", v_iter.round(8))
assert np.allclose(v_exact, [-8.0, -6.0, -6.0, 0.0])
assert np.allclose(v_iter, v_exact, atol=1e-8)
""")

md(r"""
**$Q$ from $V$, and $V$ from $Q$.** From $s_0$: up and left bump back to $s_0$, so
$Q(s_0,\text{up}) = -1 + V(s_0) = -9$; down and right reach a cell worth $-6$, so $Q = -7$. Their average
under $\pi$ is $V(s_0) = -8$, the identity $V^\pi(s) = \sum_a\pi(a|s)Q^\pi(s,a)$:
""")

code(r"""
q_random = rn.action_values(mdp, v_exact)
print("Q^pi(s0, .) =", q_random[0])
assert np.allclose(q_random[0], [-9.0, -7.0, -9.0, -7.0])
assert np.allclose((pi_random * q_random).sum(axis=1), v_exact)   # V = sum_a pi Q, every state
""")

md(r"""
**The optimal values.** Value iteration from $V_0 = 0$: after one sweep every non-terminal cell is worth
$-1$; after the second, $s_1$ and $s_2$ see the exit ($-1 + 0$) and $s_0$ sees them ($-1 + (-1) = -2$); the
third sweep changes nothing. $V^* = (-2, -1, -1, 0)$ and the greedy policy goes down or right. Policy
iteration from the random policy gets there after one improvement.
""")

code(r"""
print("value iteration sweeps:\n", rn.value_iteration_sweeps(mdp, 3))
v_star, pi_star = rn.value_iteration(mdp)
v_pi, pi_pi = rn.policy_iteration(mdp)
q_star = rn.action_values(mdp, v_star)
print("V*          =", v_star)
print("Q*(s0, .)   =", q_star[0], " -> greedy (ties to the first):", mdp.action_names[int(pi_star[0].argmax())])
print("policy iteration agrees:", np.allclose(v_pi, v_star))
assert np.allclose(v_star, [-2.0, -1.0, -1.0, 0.0])
assert np.allclose(q_star[0], [-3.0, -2.0, -3.0, -2.0])
assert np.allclose(v_pi, v_star)
# the optimality equation holds at V*: V*(s) = max_a Q*(s, a) on the non-terminal states
assert np.allclose(q_star.max(axis=1)[~mdp.terminal], v_star[~mdp.terminal])
""")

md(r"""
**Iterative evaluation, sweep by sweep.** The first two sweeps from $V_0 = 0$: every non-terminal cell
pays $-1$, so $V_1 = (-1,-1,-1,0)$; then $V_2(s_1) = -1 + \frac14(-1 - 1 - 1 + 0) = -1.75$ and
$V_2(s_0) = -1 + \frac14(-4) = -2$. The error to $V^\pi$ shrinks at most by a factor $\gamma$ per sweep (here
$\gamma = 1$, and it shrinks anyway because every walk ends).
""")

code(r"""
history = rn.policy_evaluation_sweeps(mdp, pi_random, 60)
print("V_1 =", history[1], "  V_2 =", history[2])
assert np.allclose(history[1], [-1, -1, -1, 0]) and np.allclose(history[2], [-2, -1.75, -1.75, 0])
errors = np.abs(history - v_exact).max(axis=1)
print("max error after 0, 10, 30, 60 sweeps:", errors[[0, 10, 30, 60]].round(6))
assert np.all(np.diff(errors) <= 1e-12)   # never gets worse
""")

# ------------------------------------------------------------------------------------------------
md(r"""
## 6. The PyTorch twin

`rlhf_edu.torch.mdp` has the same functions on tensors (any device, any float dtype). Its exact evaluation is
a `torch.linalg.solve`, so autograd can differentiate $V^\pi$ with respect to the policy table. That gives a
first look at chapter 4: differentiate $V = r_\pi + \gamma P_\pi V$ with respect to one entry
$\pi(a|s)$ (treating the entries as free numbers):

$$\frac{\partial V}{\partial \pi(a|s)} = e_s\, r(s,a) + \gamma\, e_s\, P(\cdot|s,a)^\top V + \gamma P_\pi \frac{\partial V}{\partial \pi(a|s)}
\;\Rightarrow\;
\frac{\partial V(s_0)}{\partial \pi(a|s)} = \big[(I - \gamma P_\pi)^{-1}\big]_{s_0 s}\; Q^\pi(s,a),$$

where $e_s$ is the indicator of state $s$ and $[(I-\gamma P_\pi)^{-1}]_{s_0 s} = \sum_t \gamma^t P(s_t = s\mid s_0)$
is the discounted number of visits to $s$ starting from $s_0$ (here $4 + 2 + 2 = 8$: the 8 moves a random
walker makes on average). *How often we are in $s$, times how good $a$
is there*: the tabular **policy gradient theorem** (chapter 4). We check autograd against this formula.
""")

code(r"""
mdp_t, _ = rt.two_by_two_world()                       # float64 tensors
pi_t = torch.full((4, 4), 0.25, dtype=torch.float64, requires_grad=True)
v_t = rt.policy_evaluation(mdp_t, pi_t)
v_t[0].backward()                                      # d V(s0) / d pi
print("V^pi (torch) =", v_t.detach().numpy())
assert np.allclose(v_t.detach().numpy(), v_exact)

# analytic: discounted visit counts from s0 times Q^pi (terminal rows: no gradient)
live = ~mdp.terminal
r_pi = (pi_random * mdp.rewards).sum(axis=1)
P_pi = np.einsum("sa,sat->st", pi_random, mdp.transitions)
visits = np.linalg.inv(np.eye(live.sum()) - mdp.gamma * P_pi[np.ix_(live, live)])[0]
analytic = np.zeros((4, 4))
analytic[live] = visits[:, None] * q_random[live]
print("expected visits to s0, s1, s2 from s0:", visits)
print("dV(s0)/dpi (autograd):\n", pi_t.grad.numpy())
assert np.allclose(pi_t.grad.numpy(), analytic)
""")

md(r"""
The same on float32 gives the same numbers to float32 precision, and the torch value iteration matches the
NumPy one:
""")

code(r"""
mdp32, _ = rt.two_by_two_world(dtype=torch.float32)
v32 = rt.policy_evaluation(mdp32, torch.full((4, 4), 0.25))
v_star_t, pi_star_t = rt.value_iteration(mdp32)
print(v32.dtype, v32, v_star_t)
assert v32.dtype == torch.float32 and np.allclose(v32.numpy(), v_exact, atol=1e-5)
assert np.allclose(v_star_t.numpy(), v_star) and np.allclose(pi_star_t.numpy(), pi_star)
""")

# ------------------------------------------------------------------------------------------------
md(r"""
## 7. See it

**Discounting.** The weight of a reward $k$ steps ahead is $\gamma^k$; the dashed line is the effective
horizon $1/(1-\gamma)$.
""")

code(r"""
fig = figs.discounting_figure(gamma=0.9)
plt.show()
""")

md(r"""
**Iterative policy evaluation** on Sutton & Barto's $4\times4$ world (two exit corners, $-1$ per move,
$\gamma = 1$), the random policy, sweep by sweep (their figure 4.1). The arrows are the greedy policy of the
*current* values: after 3 sweeps it is already optimal, while the values need a hundred more sweeps to settle.
This is why policy iteration needs so few improvements.
""")

code(r"""
fig = figs.evaluation_sweeps_figure()
plt.show()
world4, _ = figs.sutton_four_by_four()
v4 = rn.policy_evaluation(world4, np.full((world4.n_states, 4), 0.25))
print("V^random on the 4x4 world, row by row:\n", v4.reshape(4, 4).round(1))
assert np.allclose(v4.reshape(4, 4)[0], [0, -14, -20, -22])   # Sutton & Barto, figure 4.1 (k = infinity)
""")

md(r"""
**The classic grid world** (Sutton & Barto's example 3.5, $\gamma = 0.9$): any action from A jumps to A' for
$+10$, from B to B' for $+5$, bumping into the edge costs $-1$. Left: the random policy (figure 3.2 of the
book: $V(A) = 8.8$, less than 10 because A' is a bad place to land). Right: the optimal values and policy
(figure 3.5: $V^*(A) = 24.4$); every arrow leads, by a shortest path, to A.
""")

code(r"""
fig = figs.classic_grid_figure(gamma=0.9)
plt.show()
grid, grid_layout = rn.classic_grid_world(0.9)
v_grid_random = rn.policy_evaluation(grid, np.full((25, 4), 0.25))
v_grid_star, _ = rn.value_iteration(grid)
A, B = grid_layout.state_index[0, 1], grid_layout.state_index[0, 3]
print(f"random: V(A) = {v_grid_random[A]:.1f}, V(B) = {v_grid_random[B]:.1f};  optimal: V*(A) = {v_grid_star[A]:.1f}, V*(B) = {v_grid_star[B]:.1f}")
assert round(v_grid_random[A], 1) == 8.8 and round(v_grid_random[B], 1) == 5.3
assert round(v_grid_star[A], 1) == 24.4 and round(v_grid_star[B], 1) == 19.4
""")

md(r"""
**How fast each method gets there** (classic grid, $\gamma = 0.9$): iterative evaluation and value iteration
shrink the error by about $\gamma$ per sweep (the contraction of section 3.5; the grey line is $\gamma^k$);
in-place sweeps are a bit faster; policy iteration reaches $V^*$ after 3 improvements, each one an exact
evaluation.
""")

code(r"""
fig = figs.convergence_figure()
plt.show()
""")

md(r"""
**Stochastic moves** (the $P$ in the MDP). In this variant of Russell & Norvig's $4\times3$ world a move
slips with probability 0.2 in one of the other three directions; the top-right cell pays $+1$, the one below
it $-1$, both end the episode, and every move costs $0.04$. From the bottom-right cell the optimal policy goes
*left*, the long way round: going up past the pit risks slipping into it.
""")

code(r"""
fig = figs.slippery_world_figure(slip=0.2)
plt.show()
world43, layout43 = figs.four_by_three_world(slip=0.2)
v43, pi43 = rn.value_iteration(world43)
s = layout43.state_index[2, 3]
print("optimal action in the bottom-right cell:", world43.action_names[int(pi43[s].argmax())])
assert world43.action_names[int(pi43[s].argmax())] == "left"
""")

# ------------------------------------------------------------------------------------------------
md(r"""
## 8. Play with it

**Discount.** Move $\gamma$: the weights $\gamma^k$ and the optimal values of the classic grid change
together. With $\gamma = 0$ the agent is myopic: only A (10) and B (5) are worth anything. As $\gamma$ grows,
the best plan becomes a loop through A (+10 every 5 moves, so $V^*(A) = 10/(1-\gamma^5)$, 24.4 at
$\gamma = 0.9$) and far cells become nearly as good as near ones. (The figures are drawn once at $\gamma = 0.9$ for readers without a live kernel.)
""")

code(r"""
def show_gamma(gamma=0.9):
    figs.discounting_figure(gamma=gamma)
    plt.show()
    grid_g, layout_g = rn.classic_grid_world(gamma)
    v_g, _ = rn.value_iteration(grid_g)
    plot_grid_values(layout_g, v_g, rn.greedy_policy(rn.action_values(grid_g, v_g), ties="uniform"),
                     title=f"classic grid, optimal values and policy at gamma = {gamma:g}")
    plt.show()


show_gamma(0.9)
display(widgets.interactive(show_gamma, gamma=widgets.FloatSlider(value=0.9, min=0.0, max=0.98, step=0.02,
                                                                  description="gamma")))
""", tags=["nbval-ignore-output"])

md(r"""
**Sweeps.** Slide through the sweeps of iterative policy evaluation on the $4\times4$ world; tick *in place*
to update the states one at a time (Gauss-Seidel) and watch the same fixed point arrive sooner.
""")

code(r"""
world4, layout4 = figs.sutton_four_by_four()
random4 = np.full((world4.n_states, 4), 0.25)
histories = {flag: rn.policy_evaluation_sweeps(world4, random4, 150, in_place=flag) for flag in (False, True)}


def show_sweep(k=3, in_place=False):
    v_k = histories[in_place][k]
    plot_grid_values(layout4, v_k, rn.greedy_policy(rn.action_values(world4, v_k), ties="uniform"),
                     vmin=-22, vmax=0, title=f"after {k} sweeps ({'in place' if in_place else 'synchronous'})")
    plt.show()


show_sweep(3)
display(widgets.interactive(show_sweep, k=widgets.IntSlider(value=3, min=0, max=150, description="sweep k"),
                            in_place=widgets.Checkbox(value=False, description="in place")))
""", tags=["nbval-ignore-output"])

md(r"""
**Slip.** How much randomness in the moves makes the optimal policy give up the short way past the pit?
""")

code(r"""
def show_slip(slip=0.2):
    figs.slippery_world_figure(slip=slip)
    plt.show()


show_slip(0.2)
display(widgets.interactive(show_slip, slip=widgets.FloatSlider(value=0.2, min=0.0, max=0.7, step=0.05,
                                                                description="slip")))
""", tags=["nbval-ignore-output"])

# ------------------------------------------------------------------------------------------------
md(r"""
## 9. A run at scale?

This chapter has no training: dynamic programming needs the whole model $P, R$ and loops over every state.
Chapter 4 drops that assumption. It learns from sampled episodes only, first on these same grids (where the
values computed here serve as the exact answer to compare with), then on a tiny language model, whose states
(all prompts and prefixes) are far too many to sweep.
""")

# ------------------------------------------------------------------------------------------------
md(r"""
## 10. Common bugs

### Bug 1: the goal is not terminal (bootstrapping past the end)

A grid written "by hand" often forgets to make the goal absorbing: the agent can walk out of it again and
keeps paying $-1$ per move. With $\gamma = 1$ the values are then infinite (the library refuses to build such
an MDP); with $\gamma < 1$ they are silently wrong, and the goal cell itself gets a negative value.
""")

code(r"""
buggy, _ = rn.grid_world((2, 2), terminals=[], step_reward=-1.0, off_grid_reward=-1.0, gamma=0.9)  # no terminal
fixed, _ = rn.two_by_two_world(gamma=0.9)
v_bug = rn.policy_evaluation(buggy, np.full((4, 4), 0.25))
v_fix = rn.policy_evaluation(fixed, np.full((4, 4), 0.25))
print("goal not terminal:", v_bug.round(3))
print("goal terminal:    ", v_fix.round(3))
assert np.allclose(v_bug, -10.0)             # every cell pays -1 forever: -1 / (1 - 0.9)
assert v_fix[3] == 0.0 and v_fix[0] > -10.0
try:
    rn.grid_world((2, 2), terminals=[], step_reward=-1.0, gamma=1.0)
except ValueError as err:
    print("with gamma = 1:", err)
""")

md(r"""
### Bug 2: in-place updates when the figure assumes synchronous ones

Writing the sweep as a loop `for s in states: v[s] = ...` updates in place: later states already see the
new values of earlier ones. It converges to the same $V^\pi$, but the sweep-by-sweep numbers are not those of
the synchronous sweep that the textbooks' tables (and the exercise below) use. If your sweep 2 of the $2\times2$
world is not $(-2, -1.75, -1.75, 0)$, this is why. The fix: compute every new value from the *old* vector.
""")

code(r"""
def sweep_in_place_loop(mdp, policy, v):
    v = v.copy()
    for s in range(mdp.n_states):                       # BUG (if you wanted a synchronous sweep)
        if not mdp.terminal[s]:
            v[s] = policy[s] @ (mdp.rewards[s] + mdp.gamma * mdp.transitions[s] @ v)
    return v


def sweep_synchronous(mdp, policy, v):
    r_pi = (policy * mdp.rewards).sum(axis=1)
    P_pi = np.einsum("sa,sat->st", policy, mdp.transitions)
    return np.where(mdp.terminal, 0.0, r_pi + mdp.gamma * P_pi @ v)   # FIX: the old v on the right


v1 = np.array([-1.0, -1.0, -1.0, 0.0])
print("in-place loop :", sweep_in_place_loop(mdp, pi_random, v1))
print("synchronous   :", sweep_synchronous(mdp, pi_random, v1))
assert not np.allclose(sweep_in_place_loop(mdp, pi_random, v1), [-2, -1.75, -1.75, 0])
assert np.allclose(sweep_synchronous(mdp, pi_random, v1), rn.policy_evaluation_sweeps(mdp, pi_random, 2)[2])
assert np.allclose(sweep_in_place_loop(mdp, pi_random, v1), rn.policy_evaluation_sweeps(mdp, pi_random, 1, in_place=True, v0=v1)[1])
""")

# ------------------------------------------------------------------------------------------------
md(r"""
## 11. Exercises

Each exercise is a function you write; the checker runs it against the library's solution on edge cases
and random MDPs and prints **PASS** or the first input where it differs. The stubs below are deliberately
wrong: **replace each body until the check prints PASS**.

**Exercise 1: the Bellman backup.** Given `transitions` (S, A, S), `rewards` (S, A), `gamma` and values `v`
(S,), return $Q(s,a) = r(s,a) + \gamma\sum_{s'} P(s'|s,a)\,v(s')$, shape (S, A).
""")

code(r"""
def my_bellman_backup(transitions, rewards, gamma, v):
    # YOUR CODE HERE
    return np.asarray(rewards, dtype=float)          # only the immediate reward: not yet right


result = check_bellman_backup(my_bellman_backup)
""")

md(r"""
**Exercise 2: one sweep of iterative policy evaluation.** Given also `policy` (S, A), return
$V_{new} = r_\pi + \gamma P_\pi V$ (synchronous: every state from the old `v`).
""")

code(r"""
def my_evaluation_sweep(transitions, rewards, gamma, policy, v):
    # YOUR CODE HERE
    return np.zeros_like(np.asarray(v, dtype=float))


result = check_evaluation_sweep(my_evaluation_sweep)
""")

md(r"""
**Exercise 3: the greedy policy.** Given `q` (S, A), return the deterministic greedy policy as an (S, A)
array of 0s and 1s, with ties going to the lowest action index.
""")

code(r"""
def my_greedy(q):
    # YOUR CODE HERE
    q = np.asarray(q, dtype=float)
    return np.full(q.shape, 1.0 / q.shape[1])        # the uniform policy: not greedy yet


result = check_greedy_policy(my_greedy)
""")

md(r"""
**Exercise 4 (no checker, pen and paper).** In the $2\times2$ world with the random policy and $\gamma = 0.9$,
redo the hand computation of section 5 and compare with `rn.policy_evaluation(rn.two_by_two_world(gamma=0.9)[0], pi_random)`.
""")

# ------------------------------------------------------------------------------------------------
md(r"""
## 12. Summary and further reading

- An MDP $\langle \mathcal S, \mathcal A, P, R, \gamma\rangle$; the Markov property lets the future depend on
  the past only through $(s_t, a_t)$.
- The return $G_t = r_t + \gamma G_{t+1}$; $V^\pi(s) = \sum_a \pi(a|s) Q^\pi(s,a)$ and
  $Q^\pi(s,a) = r(s,a) + \gamma \sum_{s'} P(s'|s,a) V^\pi(s')$.
- Bellman expectation: $V^\pi = r_\pi + \gamma P_\pi V^\pi$ (linear, solve it or sweep it); Bellman
  optimality: $V^* = \max_a [r + \gamma P V^*]$ (value iteration); greedy improvement never hurts (policy
  iteration). All of them are $\gamma$-contractions.
- $\partial V^\pi(s_0)/\partial \pi(a|s)$ = discounted visits to $s$ times $Q^\pi(s,a)$: the policy gradient
  theorem, the starting point of chapter 4.

Papers and books:

- R. Bellman, *Dynamic Programming*, 1957.
- R. A. Howard, *Dynamic Programming and Markov Processes*, 1960 (policy iteration).
- M. L. Puterman, *Markov Decision Processes: Discrete Stochastic Dynamic Programming*, 1994.
- R. S. Sutton and A. G. Barto, *Reinforcement Learning: An Introduction*, 2nd edition, 2018 (chapters 3
  and 4; examples 3.5 and 4.1 are the grids above).
- S. Russell and P. Norvig, *Artificial Intelligence: A Modern Approach*, 4th edition, 2020 (chapter 17, the
  $4\times3$ world).
""")

code(r"""
print(f"chapter 3 ran in {time.perf_counter() - T0:.1f} s")
""", tags=["nbval-ignore-output"])


if __name__ == "__main__":
    book.write()
