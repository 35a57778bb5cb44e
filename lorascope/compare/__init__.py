"""Comparing two weight updates: subspace similarity, amplification and intruder dimensions (docs/METRICS.md
'Between matrices').

Rooms: ``updates`` (ΔW as factors or dense; inner products, cosine, SVD), ``subspace`` (φ, Hu et al. 2021
§7.2), ``amplification`` (Hu et al. §7.3, Table 7), ``intruders`` (Shuttleworth et al. 2024, Algorithm 1),
``pair`` (all of them on one module), ``run`` (the streaming driver behind ``lorascope compare`` and
``lorascope intruders``) and ``results`` (the tables on disk). Figures live in
``lorascope.report.compare_figures``.
"""

from __future__ import annotations

from .results import TABLES, CompareResults, load_compare
from .run import compare, intruders

__all__ = ["TABLES", "CompareResults", "compare", "intruders", "load_compare"]
