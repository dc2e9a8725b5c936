import math

import numpy as np
import pytest
import torch

from rlhf_edu.train.history import History


def test_log_and_columns_with_missing_keys(tmp_path):
    h = History("t", {"lr": 1e-3})
    h.log(step=0, loss=torch.tensor(0.7))
    h.log(step=1, loss=0.5, gold=0.3)
    np.testing.assert_allclose(h["loss"], [0.7, 0.5], rtol=1e-6)
    assert math.isnan(h["gold"][0]) and h.last("gold") == 0.3 and h.first("loss") == pytest.approx(0.7)
    assert "gold" in h and len(h) == 2
    back = History.load_json(h.save_json(tmp_path / "h.json"))
    assert back.rows == h.rows and back.config == {"lr": 1e-3}


def test_unknown_key_is_named():
    h = History()
    h.log(loss=1.0)
    with pytest.raises(KeyError, match="kl"):
        h["kl"]
