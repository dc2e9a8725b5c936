"""Sliders that redraw a chapter's figure: the one widget pattern every chapter uses.

A chapter cell first draws the figure at the default values itself (so a reader without a kernel, the HTML
book and nbval all see a static figure), then calls :func:`redraw_on_change` to put the controls under it.
"""

from __future__ import annotations

from typing import Callable


def redraw_on_change(draw: Callable[..., object], **controls) -> None:
    """Show ``controls`` with an output area under them where ``draw(**values)`` redraws, once per change.

    The same as ``ipywidgets.interactive_output`` except that nothing is drawn into the widget before the first
    change: the calling cell has drawn the default figure already, so a headless run (nbval, the book build)
    sends no widget output at all and the stored notebook keeps one static figure.

    Args:
        draw: called as ``draw(name=control.value, ...)`` with one keyword per control; it draws and shows a
            figure (e.g. ends with ``plt.show()``).
        **controls: ipywidgets value widgets (sliders, dropdowns, checkboxes), by the keyword ``draw`` takes.

    Raises:
        ValueError: no control given.
        TypeError: ``draw`` is not callable, or a control has no ``value`` to observe.

    Example (in a notebook)::

        def show(beta=0.1):
            plot_something(beta); plt.show()
        show()
        redraw_on_change(show, beta=widgets.FloatSlider(value=0.1, min=0.01, max=1.0))
    """
    import ipywidgets as widgets
    from IPython.display import display

    if not callable(draw):
        raise TypeError(f"draw must be callable, got {type(draw).__name__}")
    if not controls:
        raise ValueError("controls: give at least one widget, e.g. beta=widgets.FloatSlider(...)")
    for name, control in controls.items():
        if not (hasattr(control, "value") and hasattr(control, "observe")):
            raise TypeError(f"controls[{name!r}] must be an ipywidgets value widget, got {type(control).__name__}")
    out = widgets.Output()

    def update(_change):
        with out:
            out.clear_output(wait=True)
            draw(**{name: control.value for name, control in controls.items()})

    for control in controls.values():
        control.observe(update, names="value")
    display(widgets.VBox([*controls.values(), out]))
