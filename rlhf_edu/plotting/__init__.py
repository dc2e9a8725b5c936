"""Figures of the book, one module per kind of figure.

Each function returns a matplotlib ``Figure``; a chapter shows it, ``rlhf-edu figures`` saves it as a PNG.
"""

from rlhf_edu.plotting.interactive import redraw_on_change  # noqa: F401
from rlhf_edu.plotting.grid_world import plot_evaluation_sweeps, plot_grid_values  # noqa: F401
from rlhf_edu.plotting.training import plot_history, plot_reward_vs_kl  # noqa: F401
