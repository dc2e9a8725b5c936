"""The chapters' sliders, proven in a real browser.

For every chapter notebook ``chapters/[0-9A-Z]*_*.ipynb`` with an ipywidgets slider, voila serves it on
loopback up to and including its first slider cell (executing those cells in a kernel, as a reader's Jupyter
does; the later cells cannot change that slider), headless Chromium (Debian's
``/usr/bin/chromium``, driven by playwright) opens it, moves the first slider of the page one step with the
keyboard, and the test asserts that the figure under the slider was redrawn (its image bytes changed) and that
no error is on the page (no traceback, no voila error, no widget that failed to draw).

Controls, on tiny generated notebooks: a working slider passes the same checker, and a slider whose callback
ignores its value, or raises, fails it ("figure did not change", "errors on the page"), so a pass of the
chapters means something.

Screenshots (before, after, whole page) of every page are kept in a temporary folder whose path is printed
at the start of the run. Needs ``.ci/install-browser`` (Chromium); skipped with that reason without it.
Run alone with ``pytest -m browser``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from browser_support import (CHROMIUM, VoilaServer, check_first_slider, first_slider_prefix, launch_chromium,
                             slider_notebooks)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = slider_notebooks(ROOT)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (run .ci/install-browser as root)"),
]


def _say(config, line: str) -> None:
    """Print ``line`` on the terminal even while pytest captures the output (the screenshots' folder)."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capman = config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capman is None:
        print(line)
        return
    with capman.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory, request):
    path = tmp_path_factory.mktemp("widget-screenshots")
    _say(request.config, f"\nwidget screenshots: {path}")
    return path


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = launch_chromium(p, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    try:
        yield page
    finally:
        page.close()  # voila shuts the page's kernel down when the page goes


@pytest.fixture(scope="session")
def chapter_server(tmp_path_factory):
    """voila serving each chapter up to its first slider cell (``first_slider_prefix``): the cells after it
    cannot change the slider under test, and executing them (the chapters' training runs) took most of the time."""
    folder = tmp_path_factory.mktemp("voila-chapters")
    for notebook in CHAPTERS:
        first_slider_prefix(notebook, folder)
    with VoilaServer(folder, folder / "voila.log") as server:
        yield server


# ---- tiny generated notebooks for the controls ----

_CONTROL_CELL = """\
import matplotlib.pyplot as plt
import ipywidgets as widgets
from IPython.display import display


def show(a=1.0):
    {body}
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot([0, 1], [0, {y}], lw=3)
    ax.set_ylim(-2.5, 2.5)
    ax.set_title("{title}")
    plt.show()


display(widgets.interactive(show, a=widgets.FloatSlider(value=1.0, min=-2, max=2, step=0.1, description="a",
                                                        continuous_update=False)))
"""

CONTROLS = {
    # the checker's positive control: the figure follows the slider
    "control_works": dict(body="pass", y="a", title="line to (1, a)"),
    # the negative controls: the callback ignores the value, or fails once the slider moves
    "control_noop": dict(body="a = 1.0  # ignores the slider", y="a", title="always the same"),
    "control_raises": dict(body='if a != 1.0:\n        raise ValueError("broken slider callback")', y="a",
                           title="fails when moved"),
}


def _write_notebook(path: Path, source: str) -> None:
    nb = {
        "cells": [
            {"cell_type": "markdown", "id": "title", "metadata": {}, "source": f"# {path.stem}"},
            {"cell_type": "code", "id": "slider", "execution_count": None, "metadata": {}, "outputs": [],
             "source": source},
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")


@pytest.fixture(scope="session")
def control_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("widget-controls")
    for name, parts in CONTROLS.items():
        _write_notebook(folder / f"{name}.ipynb", _CONTROL_CELL.format(**parts))
    with VoilaServer(folder, folder / "voila.log") as server:
        yield server


def _check(request, server, notebook: Path, screenshot_dir: Path, **kw):
    check = check_first_slider(request.getfixturevalue("page"), server.url(notebook),
                               screenshot_dir / notebook.stem, **kw)
    _say(request.config, "\n" + check.report())
    if any("did not load" in p or "no slider" in p for p in check.problems):
        _say(request.config, f"voila log ({server.log_path}):\n{server.log_tail()}")
    return check


# ---- the controls: the checker tells a working slider from a broken one ----

def test_checker_passes_a_working_slider(request, control_server, screenshot_dir):
    check = _check(request, control_server, control_server.directory / "control_works.ipynb", screenshot_dir,
                   load_timeout=120.0)
    assert check.ok, check.report()
    assert check.figure_changed and check.value_before != check.value_after


def test_checker_fails_a_slider_that_does_nothing(request, control_server, screenshot_dir):
    check = _check(request, control_server, control_server.directory / "control_noop.ipynb", screenshot_dir,
                   load_timeout=120.0, redraw_timeout=8.0)
    assert not check.ok
    assert check.value_before != check.value_after, "the slider itself must have moved"
    assert not check.figure_changed
    assert any("figure did not change" in p for p in check.problems), check.report()


def test_checker_fails_a_slider_whose_callback_raises(request, control_server, screenshot_dir):
    check = _check(request, control_server, control_server.directory / "control_raises.ipynb", screenshot_dir,
                   load_timeout=120.0, redraw_timeout=8.0)
    assert not check.ok
    assert any("broken slider callback" in e for e in check.errors_on_page), check.report()
    assert any(p.startswith("errors on the page") for p in check.problems), check.report()


# ---- the chapters ----

def test_some_chapter_has_a_slider():
    assert CHAPTERS, "no chapter notebook with an ipywidgets slider was found: the browser test checks nothing"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_slider_redraws_its_figure(request, chapter_server, screenshot_dir, notebook):
    check = _check(request, chapter_server, chapter_server.directory / notebook.name, screenshot_dir)
    assert check.ok, f"{notebook.name}:\n{check.report()}\nvoila log:\n{chapter_server.log_tail()}"
