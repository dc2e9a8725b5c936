"""rlhf_edu.plotting.redraw_on_change: the slider pattern of every chapter."""

import ipywidgets as widgets
import pytest

from rlhf_edu.plotting import redraw_on_change


def test_a_change_of_any_control_redraws_once_with_all_current_values():
    calls = []
    a = widgets.FloatSlider(value=1.0, min=0.0, max=2.0)
    b = widgets.IntSlider(value=3, min=1, max=5)
    redraw_on_change(lambda a, b: calls.append((a, b)), a=a, b=b)
    assert calls == []  # nothing drawn before the first change: the cell drew the default figure itself
    a.value = 1.5
    b.value = 4
    assert calls == [(1.5, 3), (1.5, 4)]


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="draw"):
        redraw_on_change(None, a=widgets.FloatSlider())
    with pytest.raises(ValueError, match="controls"):
        redraw_on_change(print)
    with pytest.raises(TypeError, match=r"controls\['a'\]"):
        redraw_on_change(print, a=0.5)
