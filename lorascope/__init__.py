"""lorascope: what a fine-tune changed, and how much rank it needed.

The public API is imported lazily so that ``lorascope --help`` and small commands start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "analyze": ("lorascope.analysis", "analyze"),
    "Results": ("lorascope.results", "Results"),
    "load_results": ("lorascope.results", "load_results"),
    "open_checkpoint": ("lorascope.checkpoint", "open_checkpoint"),
    "LorascopeError": ("lorascope.errors", "LorascopeError"),
    "render_report": ("lorascope.report", "render_report"),
    "render_comparison": ("lorascope.report", "render_comparison"),
}

__all__ = [  # the names of _LAZY
    "__version__", "LorascopeError", "Results", "analyze", "load_results", "open_checkpoint", "render_comparison",
    "render_report",
]

if TYPE_CHECKING:  # pragma: no cover
    from .analysis import analyze
    from .checkpoint import open_checkpoint
    from .errors import LorascopeError
    from .report import render_comparison, render_report
    from .results import Results, load_results


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lorascope' has no attribute {name!r}")
