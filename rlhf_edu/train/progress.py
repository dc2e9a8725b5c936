"""Progress bars for anything that runs more than a few seconds.

``progress_bar(total, desc, enabled)`` is a ``tqdm`` bar that stays quiet when ``enabled`` is False or when
the output is not a terminal or a notebook (CI logs), so logs are not flooded with bar redraws.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        return True
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress_bar(total: int, desc: str = "", enabled: bool = True):
    """A tqdm bar over ``total`` steps; call ``.update(1)`` and ``.set_postfix(...)``; close it when done."""
    return tqdm(total=total, desc=desc, disable=not (enabled and _interactive()), leave=False, dynamic_ncols=True)
