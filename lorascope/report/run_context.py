"""The one-analysis page's shared state: ``RunContext`` (one results folder as its sections see it),
the ``SECTIONS`` registry, and the texts several sections use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from ..results import Results
from . import data
from .registry import SectionRegistry, folder_has


KIND_TEXT = {
    "adapter": "a LoRA adapter alone: ΔW = s·B@A",
    "adapter+base": (
        "an adapter on its base model: ΔW = s·B@A (DoRA: the exact merged update), with base norms"
    ),
    "full-diff": "a base and a fine-tuned checkpoint: ΔW = W_tuned − W_base",
}
HEATMAP_METRICS = {  # column -> (panel title, colour-bar label with units)
    "entropy_rank": ("entropy_rank", "entropy rank (directions)"),
    "rank_90": ("rank_90", "rank_90 (directions for 90 % energy)"),
    "relative_update": ("relative_update", data.SIZE_UNITS["relative_update"]),
    "fro_norm": ("fro_norm", data.SIZE_UNITS["fro_norm"]),
    "stable_rank": ("stable_rank", "stable rank Σσ²/σ₁²"),
}


@dataclass
class RunContext:
    """One results folder as the sections see it, with the derived tables each section shares."""

    results: Results
    _grids: dict[str, data.Grid] = field(default_factory=dict, repr=False)

    def has_file(self, name: str) -> bool:
        return folder_has(self.results.path, name)

    @property
    def summary(self) -> dict[str, Any]:
        return self.results.summary or {}

    @cached_property
    def all_modules(self) -> pd.DataFrame:
        """Every analyzed module, with its type."""
        return data.with_types(self.results.modules)

    @cached_property
    def modules(self) -> pd.DataFrame:
        """What the statistics and figures summarize: the modules whose ΔW is not exactly zero."""
        return data.updated(self.all_modules)

    @cached_property
    def zeros(self) -> pd.DataFrame:
        """Modules whose ΔW is exactly zero (not trained): named on the page, left out of its statistics."""
        return data.zero_updates(self.all_modules)

    @cached_property
    def types(self) -> list[str]:
        return data.type_order(self.modules if len(self.modules) else self.all_modules)

    @cached_property
    def labels(self) -> dict[str, str]:
        return data.short_labels(self.types)

    @cached_property
    def size(self) -> str:
        return data.size_column(self.modules)

    @cached_property
    def is_adapter(self) -> bool:
        return bool(self.modules["lora_rank"].notna().any())

    @cached_property
    def layered_types(self) -> list[str]:
        """The module types (in model order) that have a module with a layer index: the heatmaps' columns."""
        present = set(data.layered(self.modules)["type"])
        return [t for t in self.types if t in present]

    @cached_property
    def nominal_ranks(self) -> dict[str, list[int]]:
        """The distinct adapter ranks r of each module type (``data.nominal_ranks``)."""
        return data.nominal_ranks(self.modules, self.types)

    def layer_grid(self, metric: str) -> data.Grid:
        """``metric`` on the layer × module type grid of the updated modules, computed once per metric."""
        if metric not in self._grids:
            self._grids[metric] = data.layer_grid(self.modules, metric, self.layered_types)
        return self._grids[metric]


SECTIONS: SectionRegistry[RunContext] = SectionRegistry()
