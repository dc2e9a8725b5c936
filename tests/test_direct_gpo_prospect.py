"""GPO's derivatives (``gpo_loss_grad``) and prospect theory's value function (chapter 7)."""

import math

import numpy as np
import pytest
import torch

from rlhf_edu.numpy import direct as nd
from rlhf_edu.torch import direct as td

# |f''(0) / f'(0)|: the regularisation strength per unit beta of each GPO function (chapter 7's table)
RATIOS = {"logistic": 0.5, "hinge": 0.0, "squared": 1.0, "exponential": 1.0, "truncated_quadratic": 1.0,
          "savage": 0.5}
FIRST = {"logistic": -0.5, "hinge": -1.0, "squared": -2.0, "exponential": -1.0, "truncated_quadratic": -2.0,
         "savage": -0.25}


@pytest.mark.parametrize("f", nd.GPO_LOSSES)
def test_gpo_grad_is_the_derivative_at_0_and_away_from_kinks(f):
    assert nd.gpo_loss_grad(np.zeros(1), 1.0, f)["rho"][0] == pytest.approx(FIRST[f], abs=1e-12)
    rho = np.array([-3.0, -0.4, 0.3, 0.8, 2.5])  # beta * rho never hits the kink at 1
    for beta in (0.5, 2.0):
        eps = 1e-6
        numeric = (nd.gpo_loss(rho + eps, beta, f) - nd.gpo_loss(rho - eps, beta, f)) / (2 * eps)
        np.testing.assert_allclose(nd.gpo_loss_grad(rho, beta, f)["rho"], numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("f", nd.GPO_LOSSES)
def test_gpo_regularisation_ratio_from_autograd(f):
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad(td.gpo_loss(x, 1.0, f).sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x, allow_unused=True)
    second = 0.0 if d2 is None else d2.item()
    assert abs(second / d1.item()) == pytest.approx(RATIOS[f], abs=1e-12)


def test_gpo_grad_at_the_kink_is_the_right_derivative_like_autograd():
    for f in ("hinge", "truncated_quadratic"):
        x = torch.ones(1, dtype=torch.float64, requires_grad=True)
        td.gpo_loss(x, 1.0, f).sum().backward()
        assert nd.gpo_loss_grad(np.ones(1), 1.0, f)["rho"][0] == x.grad.item() == 0.0


def test_savage_is_not_convex_below_minus_log_2():
    x = np.array([-3.0, -1.0, -math.log(2) - 1e-3, -math.log(2) + 1e-3, 0.0, 2.0])
    eps = 1e-5
    second = (nd.gpo_loss_grad(x + eps, 1.0, "savage")["rho"] - nd.gpo_loss_grad(x - eps, 1.0, "savage")["rho"]) / (2 * eps)
    assert (second[:3] < 0).all() and (second[3:] > 0).all()


def test_gpo_grad_dtypes_and_extremes():
    for dtype in (np.float32, np.float64):
        for f in nd.GPO_LOSSES:
            g = nd.gpo_loss_grad(np.array([-50.0, 0.0, 50.0], dtype=dtype), 1.0, f)["rho"]
            assert g.dtype == dtype and np.isfinite(g).all(), (f, dtype, g)
    # DPO's weight never vanishes for a wrong margin; the squared loss pushes back past its target
    assert nd.gpo_loss_grad(np.array([-1e4]), 1.0)["rho"][0] == pytest.approx(-1.0)
    assert nd.gpo_loss_grad(np.array([3.0]), 1.0, "squared")["rho"][0] == 4.0


def test_gpo_grad_bad_input():
    with pytest.raises(ValueError, match="f"):
        nd.gpo_loss_grad(np.zeros(1), 1.0, "cubic")
    with pytest.raises(ValueError, match="beta"):
        nd.gpo_loss_grad(np.zeros(1), 0.0)
    with pytest.raises(ValueError, match="rho"):
        nd.gpo_loss_grad(np.array([np.nan]), 1.0)


# ---------------------------------------------------------------- prospect theory


@pytest.mark.parametrize("tree", ["numpy", "torch"])
def test_kahneman_tversky_value_shape_of_the_curve(tree):
    mod, conv = (nd, np.asarray) if tree == "numpy" else (td, lambda x: torch.tensor(x, dtype=torch.float64))
    out = lambda t: np.asarray(t.numpy() if hasattr(t, "numpy") else t)  # noqa: E731
    x = np.array([0.5, 1.0, 3.0])
    gains = out(mod.kahneman_tversky_value(conv(x)))
    losses = out(mod.kahneman_tversky_value(conv(-x)))
    np.testing.assert_allclose(losses, -2.25 * gains)  # loss aversion: a loss weighs lambda times a gain
    np.testing.assert_allclose(gains, x**0.88)
    # the reference point is subtracted once: v(z; z0) = v(z - z0; 0)
    np.testing.assert_allclose(out(mod.kahneman_tversky_value(conv(x + 2.0), conv(np.array(2.0)))), gains)
    # alpha = 1, lambda = 1: the identity (risk neutral)
    np.testing.assert_allclose(out(mod.kahneman_tversky_value(conv(np.array([-2.0, 3.0])), 0.0, 1.0, 1.0)), [-2.0, 3.0])


def test_kahneman_tversky_concave_gains_convex_losses():
    gains = nd.kahneman_tversky_value(np.linspace(0.1, 5, 50))
    losses = nd.kahneman_tversky_value(np.linspace(-5, -0.1, 50))
    assert (np.diff(gains, 2) < 0).all()   # concave for z > z0
    assert (np.diff(losses, 2) > 0).all()  # convex for z < z0: lam alpha (1 - alpha) (z0 - z)^(alpha - 2) > 0


def test_kahneman_tversky_grad_is_infinite_at_the_reference_point():
    g = nd.kahneman_tversky_value_grad(np.array([0.0, 1.0, -1.0]))
    assert np.isinf(g["z"][0]) and g["z"][1] == pytest.approx(0.88) and g["z"][2] == pytest.approx(0.88 * 2.25)
    assert g["z0"] == pytest.approx(-np.inf)


def test_kahneman_tversky_bad_input():
    for kwargs, name in (({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"lam": -1.0}, "lam")):
        for mod in (nd, td):
            with pytest.raises(ValueError, match=name):
                mod.kahneman_tversky_value(np.ones(2) if mod is nd else torch.ones(2), **kwargs)
    with pytest.raises(ValueError, match="z0"):
        nd.kahneman_tversky_value(np.ones(2), np.array([np.nan]))
    with pytest.raises(ValueError, match="z"):
        td.kahneman_tversky_value(torch.tensor([np.nan]))
