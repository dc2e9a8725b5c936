"""Tests of rlhf_edu.train.tabular_ppo: the episode sampler and PPO with GAE on grid worlds (chapter 4)."""

import numpy as np
import pytest
import torch

from rlhf_edu import numpy as rn
from rlhf_edu.train.tabular_ppo import sample_episodes, train_tabular_ppo


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- sample_episodes ----


def test_episodes_follow_the_grid_and_end_at_the_terminal():
    mdp, _ = rn.two_by_two_world()
    ep = sample_episodes(mdp, np.full((4, 4), 0.25), n_episodes=200, max_steps=100, start=0, rng=0)
    assert ep.states.shape == ep.actions.shape == ep.rewards.shape == (200, 100)
    assert np.all(ep.states[:, 0] == 0)
    assert not ep.truncated.any() and np.all(ep.final_states == 3)  # 100 steps: every walk ends
    # each real step pays -1; padding pays 0 and is marked done
    assert np.all(ep.rewards[ep.mask > 0] == -1.0) and np.all(ep.rewards[ep.mask == 0] == 0.0)
    assert np.all(ep.dones[ep.mask == 0] == 1.0)
    # exactly one "done" among the real steps of each row: the last one
    last = ep.lengths - 1
    assert np.all(ep.dones[np.arange(200), last] == 1.0)
    assert np.all((ep.dones * ep.mask).sum(axis=1) == 1)
    # consecutive real states follow the (deterministic) moves of the grid
    for b in range(20):
        for t in range(ep.lengths[b] - 1):
            s, a = ep.states[b, t], ep.actions[b, t]
            assert mdp.transitions[s, a, ep.states[b, t + 1]] == 1.0
    # the mean episode length of the random walk from s0 is -V(s0) = 8 (chapter 3)
    assert abs(ep.lengths.mean() - 8.0) < 1.0


def test_truncated_rows_are_not_done_and_keep_their_state():
    mdp, _ = rn.classic_grid_world()  # no terminal state: every row is cut by max_steps
    ep = sample_episodes(mdp, np.full((25, 4), 0.25), n_episodes=5, max_steps=7, rng=1)
    assert ep.truncated.all() and np.all(ep.lengths == 7)
    assert np.all(ep.dones == 0.0) and np.all(ep.mask == 1.0)


def test_sampling_matches_the_policy_and_is_seeded():
    mdp, _ = rn.two_by_two_world()
    policy = np.tile([0.1, 0.6, 0.1, 0.2], (4, 1))
    ep = sample_episodes(mdp, policy, n_episodes=4000, max_steps=1, start=0, rng=3)
    freq = np.bincount(ep.actions[:, 0], minlength=4) / 4000
    assert np.allclose(freq, policy[0], atol=0.03)
    again = sample_episodes(mdp, policy, n_episodes=4000, max_steps=1, start=0, rng=3)
    assert np.array_equal(ep.actions, again.actions)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(policy=np.full((4, 3), 1 / 3)), "policy"),
        (dict(policy=np.full((4, 4), 0.3)), "policy"),
        (dict(n_episodes=0), "n_episodes"),
        (dict(max_steps=0), "max_steps"),
        (dict(start=3), "terminal"),
        (dict(start=9), "start"),
    ],
)
def test_sample_episodes_rejects_bad_input(kwargs, match):
    mdp, _ = rn.two_by_two_world()
    args = dict(policy=np.full((4, 4), 0.25), n_episodes=2, max_steps=3, start=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample_episodes(mdp, args.pop("policy"), **args)


# ---- tabular_ppo ----


def test_ppo_solves_the_two_by_two_world():
    mdp, _ = rn.two_by_two_world()
    policy, history = train_tabular_ppo(mdp, start=0, iterations=15)
    assert history.first("objective") == pytest.approx(-8.0)  # the random start policy (chapter 3)
    assert history.last("optimum") == -2.0
    assert history.last("objective") > -2.1
    assert policy.shape == (4, 4) and np.allclose(policy.sum(axis=1), 1.0)
    # the greedy action of s0 is an optimal one (down or right)
    assert int(policy[0].argmax()) in (1, 3)


def test_ppo_on_the_classic_grid_gets_close_to_the_optimum_and_the_critic_learns():
    mdp, _ = rn.classic_grid_world()
    policy, values, history = train_tabular_ppo(mdp, iterations=25, return_critic=True)
    v_pi = rn.policy_evaluation(mdp, policy)
    assert history.last("objective") == pytest.approx(v_pi.mean())
    assert history.last("gap") < 0.1 * history.first("gap")
    assert history["critic_error"][-2] < 0.5 * history["critic_error"][0]
    assert values.shape == (25,)
    for key in ("policy_loss", "value_loss", "entropy", "kl_ref", "clip_fraction", "approx_kl", "seconds"):
        assert key in history


def test_ppo_is_deterministic_for_a_seed():
    mdp, _ = rn.two_by_two_world()
    _, h1 = train_tabular_ppo(mdp, start=0, iterations=3, seed=5)
    _, h2 = train_tabular_ppo(mdp, start=0, iterations=3, seed=5)
    for key in ("objective", "policy_loss", "value_loss", "clip_fraction"):
        assert np.array_equal(h1[key], h2[key], equal_nan=True)


def test_ppo_leaves_torch_threads_alone():
    torch.set_num_threads(2)
    train_tabular_ppo(rn.two_by_two_world()[0], start=0, iterations=1)
    assert torch.get_num_threads() == 2


def test_entropy_bonus_keeps_the_policy_more_random():
    mdp, _ = rn.two_by_two_world()
    _, plain = train_tabular_ppo(mdp, start=0, iterations=10)
    _, bonus = train_tabular_ppo(mdp, start=0, iterations=10, entropy_coef=0.5)
    assert bonus["entropy"][-2] > plain["entropy"][-2]


def test_kl_penalty_keeps_the_policy_near_the_start():
    mdp, _ = rn.two_by_two_world()
    _, plain = train_tabular_ppo(mdp, start=0, iterations=10)
    _, tied = train_tabular_ppo(mdp, start=0, iterations=10, kl_coef=2.0)
    assert tied["kl_ref"][-2] < plain["kl_ref"][-2]


def test_treating_truncation_as_termination_breaks_the_critic():
    # the classic grid never ends: every row is truncated; without the bootstrap the critic learns the value
    # of 5 steps instead of the infinite-horizon one (the chapter's common bug)
    mdp, _ = rn.classic_grid_world()
    _, _, good = train_tabular_ppo(mdp, max_steps=5, iterations=25, return_critic=True)
    _, _, bad = train_tabular_ppo(mdp, max_steps=5, iterations=25, return_critic=True, bootstrap_truncated=False)
    assert good["critic_error"][-2] < 3.0 < 10.0 < bad["critic_error"][-2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(iterations=0), "iterations"),
        (dict(lam=1.5), "lam"),
        (dict(clip_eps=0.0), "clip_eps"),
        (dict(lr_policy=-1.0), "lr_policy"),
        (dict(entropy_coef=-0.1), "entropy_coef"),
        (dict(value_clip=0.0), "value_clip"),
        (dict(n_minibatches=100), "n_minibatches"),
    ],
)
def test_tabular_ppo_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_tabular_ppo(rn.two_by_two_world()[0], start=0, **kwargs)


def test_tabular_ppo_wants_a_numpy_mdp():
    from rlhf_edu import torch as rt

    with pytest.raises(TypeError, match="mdp"):
        train_tabular_ppo(rt.two_by_two_world()[0])
