"""Helpers of ``tests/test_widgets_browser.py``: serve notebooks with voila, drive Debian's Chromium with
playwright, move a slider and tell whether the figure under it was redrawn without an error on the page.

Nothing here downloads a browser: playwright only drives ``/usr/bin/chromium`` (``.ci/install-browser``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")

# The flags of the issue. Without the background-networking ones Chromium tries to reach Google's servers,
# and this machine's closed network refuses those connections. playwright adds --headless and, through
# launch_persistent_context, a fresh --user-data-dir of ours.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# An ipywidgets slider built in a code cell: IntSlider, FloatSlider, FloatLogSlider, the range sliders,
# SelectionSlider, SelectionRangeSlider.
_SLIDER_CALL = re.compile(r"\b(?:Int|Float|FloatLog|IntRange|FloatRange|Selection|SelectionRange)Slider\s*\(")

# The first slider of the page: ipywidgets 8 draws it with noUiSlider; its handle takes the keyboard focus.
SLIDER_HANDLE = ".jupyter-widgets.widget-slider .noUi-handle"

# Text that must never be on the page: a Python traceback (error outputs, also inside an Output widget),
# voila's messages for a failed or timed-out cell, the widget manager's failures to draw a widget.
_ERROR_TEXT = re.compile(
    r"Traceback \(most recent call last\)|There was an error when executing cell|Cell execution timed out"
    r"|Error displaying widget|Error rendering|Failed to (?:load|create) (?:model|view)"
)
# An output of the stderr / error mime type (JupyterLab renders an error output with it too) is an error
# when it names one; other stderr (a progress bar) is reported but does not fail the check.
_ERROR_IN_STDERR = re.compile(r"Traceback|\b\w*(?:Error|Exception)\b")


def notebook_has_slider(path: Path) -> bool:
    """Whether a code cell of the notebook at ``path`` builds an ipywidgets slider."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        if _SLIDER_CALL.search(source):
            return True
    return False


def first_slider_prefix(notebook: Path, out_dir: Path) -> Path:
    """Write to ``out_dir`` a copy of ``notebook`` that ends with its first slider cell; returns its path.

    The browser check moves the first slider of the page only, and nothing after that cell can change what it
    draws, so voila need not execute the rest (the chapters' later training cells): the same check, in a
    fraction of the time. Cells before it run as a reader's Jupyter runs them. Raises ``ValueError`` when the
    notebook has no slider.
    """
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    for i, cell in enumerate(nb.get("cells", [])):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if cell.get("cell_type") == "code" and _SLIDER_CALL.search(source):
            nb["cells"] = nb["cells"][: i + 1]
            out = Path(out_dir) / Path(notebook).name
            out.write_text(json.dumps(nb, indent=1), encoding="utf-8")
            return out
    raise ValueError(f"{notebook} has no slider cell")


def slider_notebooks(root: Path) -> list[Path]:
    """The chapter notebooks ``chapters/[0-9A-Z]*_*.ipynb`` under ``root`` that have a slider, sorted."""
    return [p for p in sorted(Path(root, "chapters").glob("[0-9A-Z]*_*.ipynb")) if notebook_has_slider(p)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VoilaServer:
    """``voila <directory>`` on loopback, on a free port; each page it renders runs its notebook in a kernel.

    Use as a context manager. The log goes to ``log_path`` (shown in the error when the server does not
    start). Stopping sends SIGTERM to the server, which shuts down the kernels it started.
    """

    def __init__(self, directory: Path, log_path: Path, startup_timeout: float = 90.0):
        self.directory = Path(directory)
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.port = None
        self.proc = None
        self.ipc_dir = None
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, notebook: Path) -> str:
        """The URL of the page that renders ``notebook`` (a path inside the served directory)."""
        rel = Path(notebook).resolve().relative_to(self.directory.resolve()).as_posix()
        return f"{self.base_url}/voila/render/{rel}"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self) -> VoilaServer:
        self.port = free_port()
        self.ipc_dir = Path(tempfile.mkdtemp(prefix="voila-ipc-"))
        cmd = [
            sys.executable, "-m", "voila",
            "--no-browser",
            f"--port={self.port}",
            "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0",  # the port we chose or nothing: never a page of another server
            "--show_tracebacks=True",  # a failing cell shows its traceback (stripped to a one-liner otherwise)
            # The kernels talk over Unix sockets in a folder of ours, not TCP: on a machine where other
            # jobs start kernels too, a TCP port picked free can be taken before the kernel binds it, and
            # the page then waits forever for a kernel that never answers.
            "--KernelManager.transport=ipc",
            f"--KernelManager.ip={self.ipc_dir / 'kernel'}",
            str(self.directory),
        ]
        env = dict(os.environ)
        env.pop("MPLBACKEND", None)  # the kernel's inline backend, as a reader gets it
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=self.directory, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"voila exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"voila did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # voila shuts its kernels down on SIGTERM
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.ipc_dir is not None:
            shutil.rmtree(self.ipc_dir, ignore_errors=True)
            self.ipc_dir = None

    def __enter__(self) -> VoilaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def launch_chromium(playwright, user_data_dir: Path):
    """A headless Debian Chromium with a fresh profile in ``user_data_dir`` (a browser context)."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: run .ci/install-browser as root")
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 1200},
    )


@dataclass
class SliderCheck:
    """What :func:`check_first_slider` saw. ``problems`` is empty exactly when the check passed."""

    url: str
    problems: list = field(default_factory=list)
    errors_on_page: list = field(default_factory=list)
    other_stderr: list = field(default_factory=list)
    slider: str = ""
    value_before: str = ""
    value_after: str = ""
    figures_before: list = field(default_factory=list)  # sha256 of each <img> under the slider
    figures_after: list = field(default_factory=list)
    figure_changed: bool = False
    seconds_to_widget: float = 0.0
    seconds_to_redraw: float = 0.0
    screenshots: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # retries
    kernel_hang: bool = False
    console: list = field(default_factory=list)  # the browser console's errors and warnings

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        lines = [
            f"{self.url}",
            f"  slider {self.slider!r}: {self.value_before} -> {self.value_after}; "
            f"figure changed: {self.figure_changed} ({len(self.figures_before)} -> {len(self.figures_after)} images); "
            f"widget after {self.seconds_to_widget:.1f} s, redraw after {self.seconds_to_redraw:.1f} s",
        ]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        lines += [f"  error on page: {e[:2000]}" for e in self.errors_on_page]
        lines += [f"  other stderr on page: {e[:300]}" for e in self.other_stderr]
        lines += [f"  screenshot: {s}" for s in self.screenshots]
        lines += [f"  note: {n}" for n in self.notes]
        if self.problems:
            lines += [f"  console {c}" for c in self.console if "Federation Runtime" not in c
                      and "Unsatisfied version" not in c]
        return "\n".join(lines)


# In the page: the region "under" the first slider, i.e. its `interactive` box, or else the output area
# of its cell (a slider wired to an Output widget with observe), and the images in it.
_JS_BOX = """(handle) => handle.closest('.widget-interact') || handle.closest('.jp-OutputArea') || document.body"""
_JS_FIGURES = """(handle) => {
    const box = (""" + _JS_BOX + """)(handle);
    return Array.from(box.querySelectorAll('img')).map(img => img.getAttribute('src') || '');
}"""

_JS_ERRORS = """() => {
    const out = [];
    for (const el of document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')) {
        out.push(['stderr', el.innerText]);
    }
    out.push(['body', document.body.innerText]);
    return out;
}"""


def _digest(src: str) -> str:
    if src.startswith("data:") and "," in src:
        payload = src.split(",", 1)[1]
        try:
            return hashlib.sha256(base64.b64decode(payload)).hexdigest()[:16]
        except ValueError:
            pass
    return hashlib.sha256(src.encode()).hexdigest()[:16]


def _slider_value(handle) -> str:
    """The value the slider shows: its readout, else noUiSlider's aria-valuetext (aria-valuenow is rounded
    to one decimal, so 0.90 -> 0.92 would read as no move)."""
    return handle.evaluate(
        """h => { const s = h.closest('.widget-slider'); const r = s && s.querySelector('.widget-readout');
                  return (r && r.innerText.trim()) || h.getAttribute('aria-valuetext')
                         || h.getAttribute('aria-valuenow') || ''; }"""
    )


def _scan_errors(page, check: SliderCheck) -> None:
    check.errors_on_page.clear()
    check.other_stderr.clear()
    for kind, text in page.evaluate(_JS_ERRORS):
        text = text.strip()
        if kind == "stderr":
            if _ERROR_IN_STDERR.search(text) or _ERROR_TEXT.search(text):
                check.errors_on_page.append(text)
            elif text:
                check.other_stderr.append(text)
        else:  # the whole page's text: voila's and the widget manager's messages
            for line in text.splitlines():
                line = line.strip()
                if _ERROR_TEXT.search(line) and not any(line in e for e in check.errors_on_page):
                    check.errors_on_page.append(line)


# ipywidgets' widget manager asks the kernel for the widgets' state once the page is loaded and gives up
# after 4 s ("Control comm did not respond in time"); on a machine whose CPUs are all busy the kernel can
# answer later than that, and the widgets then show this text instead. That is the machine, not the
# notebook: the page is loaded once more before the check fails.
_WIDGET_STATE_RACE = "Error displaying widget: model not found"

# voila 0.5 now and then starts a kernel and never gets an answer from it: its page then shows
# "Executing 1 of N" forever (seen on this 2-CPU machine about once in five page loads, also without a
# browser). A page still on its first cell after this many seconds is loaded once more.
KERNEL_START_TIMEOUT = 90.0


def _still_on_first_cell(page) -> bool:
    try:
        text = page.evaluate("() => document.body ? document.body.innerText : ''")
    except Exception:
        return False
    return re.search(r"Executing 1 of \d+", text) is not None


def check_first_slider(page, url: str, shot_prefix: Path, load_timeout: float = 300.0,
                       redraw_timeout: float = 60.0, attempts: int = 3) -> SliderCheck:
    """Open ``url``, move the first slider of the page one step with the keyboard, and report.

    Passes (``check.ok``) when the page shows the slider and a figure under it, the slider's value changed,
    the figure's bytes (the ``<img>`` data under the slider) changed within ``redraw_timeout`` seconds, and
    no error is on the page, before or after. Screenshots ``<shot_prefix>-before.png`` / ``-after.png``
    (the slider and the figure under it), ``-top.png`` (the top of the page: the chapter rendered) and,
    when the check stops early, ``-page.png`` (the window as it was) are saved.
    Up to ``attempts`` loads when the widgets lost the race for their state (see ``_WIDGET_STATE_RACE``).
    """
    console = []

    def on_console(msg):
        if msg.type in ("error", "warning") and len(console) < 200:
            console.append(f"{msg.type}: {msg.text[:300]}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: console.append(f"pageerror: {str(exc)[:300]}"))
    notes = []
    for attempt in range(1, attempts + 1):
        console.clear()
        check = _check_once(page, url, shot_prefix, load_timeout, redraw_timeout)
        check.console = list(console)
        check.notes = notes + check.notes
        raced = not check.figures_before and any(_WIDGET_STATE_RACE in e for e in check.errors_on_page)
        if not ((raced or check.kernel_hang) and attempt < attempts):
            break
        why = (f"the widgets lost the race for their state ({_WIDGET_STATE_RACE!r})" if raced
               else "voila's kernel did not start")
        notes.append(f"attempt {attempt}: {why}; loading the page again")
    page.remove_listener("console", on_console)
    return check


def _check_once(page, url, shot_prefix, load_timeout, redraw_timeout) -> SliderCheck:
    check = SliderCheck(url=url)
    shot_prefix = Path(shot_prefix)

    def shoot(tag, element=None):
        path = shot_prefix.with_name(f"{shot_prefix.name}-{tag}.png")
        try:
            (element or page).screenshot(path=str(path), timeout=30_000)
            check.screenshots.append(str(path))
        except Exception as e:  # a screenshot is evidence, never the reason of a failure
            check.screenshots.append(f"{path} (failed: {e})")

    t0 = time.monotonic()
    try:
        response = page.goto(url, wait_until="commit", timeout=60_000)
        # voila streams the page while it runs the notebook; "load" comes when the last cell has run
        while True:
            try:
                page.wait_for_load_state("load", timeout=5_000)
                break
            except Exception:
                pass
            waited = time.monotonic() - t0
            if waited > load_timeout:
                raise TimeoutError(f"the page did not load within {load_timeout:.0f} s")
            if waited > KERNEL_START_TIMEOUT and _still_on_first_cell(page):
                check.kernel_hang = True
                raise TimeoutError(f"voila ran no cell within {KERNEL_START_TIMEOUT:.0f} s (its kernel did not start)")
    except Exception as e:
        check.problems.append(f"the page did not load: {e}")
        shoot("page")
        _scan_errors(page, check)
        return check
    if response is None or response.status >= 400:
        check.problems.append(f"voila answered HTTP {response.status if response else '(none)'}")

    remaining = max(5.0, load_timeout - (time.monotonic() - t0))
    try:
        handle = page.wait_for_selector(SLIDER_HANDLE, state="visible", timeout=remaining * 1000)
        # the figure under it: `interactive` draws once when built, so an <img> is there before any move
        page.wait_for_function(
            f"() => {{ const h = document.querySelector({json.dumps(SLIDER_HANDLE)});"
            f" return h && ({_JS_FIGURES})(h).length > 0; }}",
            timeout=60_000,
        )
    except Exception as e:
        check.problems.append(f"no slider with a figure under it on the page: {type(e).__name__}: {str(e)[:300]}")
        _scan_errors(page, check)
        if check.errors_on_page:
            check.problems.append("errors on the page (below)")
        shoot("page")
        return check
    check.seconds_to_widget = time.monotonic() - t0

    slider = handle.evaluate_handle("h => h.closest('.widget-slider')").as_element()
    check.slider = (slider.inner_text() if slider else "").replace("\n", " ").strip()
    shoot("top")
    box = handle.evaluate_handle(_JS_BOX).as_element()
    handle.scroll_into_view_if_needed()
    page.mouse.move(0, 0)
    time.sleep(0.3)
    check.figures_before = [_digest(s) for s in handle.evaluate(_JS_FIGURES)]
    check.value_before = _slider_value(handle)
    _scan_errors(page, check)
    if check.errors_on_page:
        check.problems.append("errors on the page before the slider was moved (below)")
    shoot("before", box)

    # One keyboard step up; if the value does not move (the slider at the top of its range), one step down.
    handle.focus()
    page.keyboard.press("ArrowRight")

    t1 = time.monotonic()
    before = set(check.figures_before)
    turned = False
    while True:
        check.value_after = _slider_value(handle)
        if check.value_after == check.value_before and not turned and time.monotonic() - t1 > 2.0:
            handle.focus()
            page.keyboard.press("ArrowLeft")
            turned = True
        srcs = handle.evaluate(_JS_FIGURES)
        now = [_digest(s) for s in srcs]
        if now and any(d not in before for d in now):
            check.figure_changed = True
            break
        if time.monotonic() - t1 > redraw_timeout:
            break
        time.sleep(0.25)
    check.seconds_to_redraw = time.monotonic() - t1
    # A callback that draws several figures shows the first before the others are drawn: wait for as many
    # images as before (or the end of the redraw time), then a moment for an error printed after them.
    while check.figure_changed and time.monotonic() - t1 < redraw_timeout:
        if len(handle.evaluate(_JS_FIGURES)) >= len(check.figures_before):
            break
        time.sleep(0.25)
    time.sleep(1.0)
    check.figures_after = [_digest(s) for s in handle.evaluate(_JS_FIGURES)]
    page.mouse.move(0, 0)
    shoot("after", box)

    if check.value_after == check.value_before:
        check.problems.append(f"the slider's value did not move from {check.value_before} with the arrow key")
    if not check.figure_changed:
        check.problems.append(f"figure did not change within {redraw_timeout:.0f} s of moving the slider")
    elif not check.figures_after:
        check.problems.append("the figure disappeared after the redraw")
    _scan_errors(page, check)
    if check.errors_on_page and not any(p.startswith("errors on the page") for p in check.problems):
        check.problems.append("errors on the page after the slider was moved (below)")
    return check
