"""The record of a training run: one row of metrics per optimisation step.

Every trainer in ``rlhf_edu.train`` returns ``(model, history)``; ``rlhf_edu.plotting.plot_history`` draws
it. Rows may carry different keys (e.g. an evaluation every k steps); a column is NaN where a row lacks it.

Columns that mean the same in every trainer's history (each trainer's docstring lists its own extras):

- ``step``, ``seconds`` (since the start of training), ``loss`` (the minimised objective);
- ``reward``: the training signal (the reward of the sampled batch for the online methods, the implicit
  reward margin for the offline preference methods), ``gold_reward`` (the task's gold reward of the
  training samples, never trained on unless it is the reward);
- ``kl``: KL(sampling policy || reference) per completion on the training batch, k3 summed over its
  tokens (``rlhf_edu.train.rollouts.sampled_kl``; ReST: exact per token);
- ``eval_*``: ``rlhf_edu.train.evaluation.log_evaluation`` of held-out prompts, measured before the step's
  update and once after the last step (``eval_kl`` is exact per token, summed over the completion).

>>> h = History("demo")
>>> h.log(step=0, loss=0.69, kl=0.0)
>>> h.log(step=1, loss=0.52, kl=0.01)
>>> h["loss"]
array([0.69, 0.52])
>>> h.last("kl")
0.01
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["History"]


class History:
    """Per-step metrics (``log``), read back as NumPy columns (``history["loss"]``)."""

    def __init__(self, name: str = "run", config: dict | None = None):
        self.name = name
        self.config = dict(config or {})
        self.rows: list[dict] = []

    def log(self, **metrics) -> None:
        """Append one row; values are converted to Python floats (tensors included)."""
        row = {}
        for k, v in metrics.items():
            if hasattr(v, "item"):
                v = v.item()
            row[k] = float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v
        self.rows.append(row)

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.keys():
            raise KeyError(f"{key!r} was never logged; logged: {self.keys()}")
        return np.array([row.get(key, math.nan) for row in self.rows], dtype=float)

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __len__(self) -> int:
        return len(self.rows)

    def last(self, key: str) -> float:
        """The last logged (non-NaN) value of ``key``."""
        col = self[key]
        col = col[~np.isnan(col)]
        if col.size == 0:
            raise KeyError(f"{key!r} has no values")
        return float(col[-1])

    def first(self, key: str) -> float:
        """The first logged (non-NaN) value of ``key``."""
        col = self[key]
        col = col[~np.isnan(col)]
        if col.size == 0:
            raise KeyError(f"{key!r} has no values")
        return float(col[0])

    def to_dict(self) -> dict:
        return {"name": self.name, "config": self.config, "rows": self.rows}

    def save_json(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str))
        return path

    @classmethod
    def load_json(cls, path) -> "History":
        data = json.loads(Path(path).read_text())
        h = cls(data["name"], data.get("config"))
        h.rows = data["rows"]
        return h

    def __repr__(self) -> str:
        keys = ", ".join(self.keys())
        return f"History({self.name!r}, {len(self)} steps: {keys})"
