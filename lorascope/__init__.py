"""lorascope: what a fine-tune changed, and how much rank it needed.

The public API is imported lazily so that ``lorascope --help`` and small commands start fast: this module
imports none of the package's modules, so any of them may read ``__version__`` from it without a cycle.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "analyze": ("lorascope.analysis", "analyze"),
    "Results": ("lorascope.notebook", "Results"),
    "load_results": ("lorascope.notebook", "load_results"),
    "open_checkpoint": ("lorascope.checkpoint", "open_checkpoint"),
    "LorascopeError": ("lorascope.errors", "LorascopeError"),
    "render_report": ("lorascope.report", "render_report"),
    "render_comparison": ("lorascope.report", "render_comparison"),
}

__all__ = [  # the names of _LAZY
    "__version__",
    "LorascopeError",
    "Results",
    "analyze",
    "load_results",
    "open_checkpoint",
    "render_comparison",
    "render_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lorascope' has no attribute {name!r}")
