"""The checks every slide figure's test runs (one copy, used by every tests/test_figures*.py and chapter test).

``check_figure(name, fig)``: ``fig`` is a Matplotlib Figure with axes; every plotting axes has a label (x, y or
title; colorbars excepted; both axis labels with ``both_axis_labels=True``); and every finite point of every
line drawn in data coordinates lies inside its axes' limits, so no curve silently runs off a panel (a figure
that cuts a curve on purpose is listed, with the reason, in ``CLIPPED_ON_PURPOSE``). The figure is closed.
"""

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

CLIPPED_ON_PURPOSE = {
    "ch02_estimators_vs_log_ratio": "k2 and k3 grow like l^2 and e^-l; the frame shows the region near l = 0",
    "ch07_gpo_functions": "the convex losses grow like x^2 and e^-x; the frame shows the region near the margin 0",
    "ch07_target_margin": "DPO's target margin log(p/(1-p))/beta diverges as p -> 1; the frame stops at 40",
}


def lines_outside(ax, margin=0.01):
    """(label, x, y) of the first point outside ``ax``'s limits for each data line that has one.

    A point within ``margin`` (a fraction of the frame) of the frame still shows and counts as inside.
    Lines in axes units (``axhline``, ``axvline``) are skipped.
    """
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    tol_x, tol_y = margin * (x1 - x0), margin * (y1 - y0)
    found = []
    for line in ax.get_lines():
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        if x.shape != y.shape or line.get_transform() != ax.transData:
            continue
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        out = (x < x0 - tol_x) | (x > x1 + tol_x) | (y < y0 - tol_y) | (y > y1 + tol_y)
        if out.any():
            found.append((line.get_label(), float(x[out][0]), float(y[out][0])))
    return found


def check_figure(name, fig, both_axis_labels=False):
    try:
        assert isinstance(fig, Figure), f"{name} returned {type(fig).__name__}, not a Figure"
        assert fig.axes, f"{name} has no axes"
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>":
                continue
            if both_axis_labels:
                assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: an axes lacks an x or y label"
            else:
                assert ax.get_xlabel() or ax.get_ylabel() or ax.get_title(), f"{name}: an axes has no label"
            if name not in CLIPPED_ON_PURPOSE:
                outside = lines_outside(ax)
                assert not outside, (f"{name}: points outside the axes {ax.get_xlim()} x {ax.get_ylim()}, "
                                     f"(line, x, y): {outside}")
    finally:
        plt.close(fig)
