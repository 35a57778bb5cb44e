"""The modules of a results folder as the rank code sees them: σ², ‖ΔW‖_F², shapes, and what is known.

A ``Spectra`` is built from a ``Results`` (no recomputation) and is what every sweep and policy reads —
and what the report's uniform sweep is priced from (``spectra_from``). A module's spectrum is *complete* when
the singular values not stored are exact zeros (factored or exact SVD); a randomized top-k spectrum is not —
nor one marked ``rank_beyond_k``, nor one whose Σσ² falls short of ‖ΔW‖_F² by more than ``SHORT_SLACK`` —
and energies past its k are unknown (NaN), never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics import tail_energy
from ..results import Results

COMPLETE_METHODS = {"factored", "exact", "gram", "kronecker"}
# Stored spectra whose squared sum falls short of ‖ΔW‖_F² by more than this fraction are a top-k, whatever
# the method says; spectra are stored as float32, so the slack is far above rounding.
SHORT_SLACK = 1e-4


@dataclass(frozen=True)
class Spectra:
    """Per module, aligned by position: names, shapes, σ (descending), ‖ΔW‖_F² and completeness."""

    table: (
        pd.DataFrame
    )  # name, layer, module, rows, cols, source, lora_rank, fro_norm, n_singular, complete, floor
    sigma: tuple[np.ndarray, ...]

    @property
    def names(self) -> list[str]:
        return list(self.table["name"])

    @property
    def totals(self) -> np.ndarray:
        """‖ΔW‖_F² per module, from the entries (exact even when only a top-k σ is stored)."""
        return self.table["fro_norm"].to_numpy(np.float64) ** 2

    @property
    def unit_costs(self) -> np.ndarray:
        """m + n: the parameters one unit of LoRA rank costs on each module (docs/METRICS.md 'Parameter
        counts')."""
        return self.table["rows"].to_numpy(np.int64) + self.table["cols"].to_numpy(np.int64)

    @property
    def max_ranks(self) -> np.ndarray:
        """The largest rank worth keeping: the number of non-zero stored σ."""
        return np.array([int(np.count_nonzero(s > 0)) for s in self.sigma], dtype=np.int64)

    def kept(self, ranks: np.ndarray) -> np.ndarray:
        """Σ_{i≤r_l} σ²_{l,i} per module for ranks r_l (NaN where r_l passes an incomplete spectrum)."""
        out = np.empty(len(self.sigma))
        for l, (s, r) in enumerate(zip(self.sigma, ranks)):
            r = int(r)
            if r > s.size and not self.table["complete"].iat[l]:
                out[l] = np.nan
            else:
                out[l] = float(np.sum(s[:r] ** 2))
        return out

    def tails(self, l: int) -> np.ndarray:
        """‖ΔW_l − ΔW_l,r‖_F² for r = 0..len(σ_l) (``metrics.tail_energy``): the tail Σ_{i>r} σ² summed from
        the smallest value up (no cancellation, exactly 0 at full rank), plus, for a top-k, the part of
        ‖ΔW‖_F² past the stored values."""
        complete = bool(self.table["complete"].iat[l])
        return tail_energy(self.sigma[l], None if complete else float(self.totals[l]))

    def lost(self, ranks: np.ndarray) -> np.ndarray:
        """‖ΔW_l − ΔW_l,r‖_F² per module (``tails``); NaN where r passes a top-k spectrum."""
        out = np.empty(len(self.sigma))
        for l, (s, r) in enumerate(zip(self.sigma, ranks)):
            r = int(r)
            if r > s.size and not self.table["complete"].iat[l]:
                out[l] = np.nan
            else:
                out[l] = float(self.tails(l)[min(r, s.size)])
        return out

    def rel_error_at(self, ranks: np.ndarray) -> np.ndarray:
        """sqrt(1 − energy(r_l)) per module (docs/METRICS.md 'truncation error'),
        from the tail (see ``lost``)."""
        totals = self.totals
        lost = self.lost(ranks)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(totals > 0, np.sqrt(lost / np.where(totals > 0, totals, 1.0)), 0.0)

    def energy_at(self, ranks: np.ndarray) -> np.ndarray:
        """energy(r_l) per module (docs/METRICS.md 'energy(k)'); 1.0 for an all-zero update."""
        totals = self.totals
        kept = self.kept(ranks)
        with np.errstate(invalid="ignore", divide="ignore"):
            e = np.where(totals > 0, kept / np.where(totals > 0, totals, 1.0), 1.0)
        return np.minimum(e, 1.0)


def spectra_of(results: Results) -> Spectra:
    """The rank code's view of a ``Results`` (modules table + stored σ)."""
    return spectra_from(results.modules, results.spectra)


def complete_spectrum(rec: dict, s: np.ndarray) -> bool:
    """Whether the σ not stored for this modules.csv row are exact zeros (module docstring)."""
    p = min(int(rec["rows"]), int(rec["cols"]))
    complete = str(rec.get("method")) in COMPLETE_METHODS or s.size >= p
    fro = rec.get("fro_norm")
    fro2 = float(fro) ** 2 if fro is not None and pd.notna(fro) else float(s @ s)
    short = fro2 > 0 and float(s @ s) < fro2 * (1 - SHORT_SLACK)
    beyond = rec.get("rank_beyond_k")
    return complete and not short and not (beyond is not None and pd.notna(beyond) and bool(beyond))


def spectra_from(modules: pd.DataFrame, spectra: Mapping[str, np.ndarray]) -> Spectra:
    """The rank code's view of a modules table and σ per module name (the modules without σ left out)."""
    rows = []
    sigma = []
    for rec in modules.to_dict("records"):
        if rec["name"] not in spectra:
            continue
        s = np.asarray(spectra[rec["name"]], dtype=np.float64)
        complete = complete_spectrum(rec, s)
        rows.append(
            {
                "name": rec["name"],
                "layer": rec["layer"],
                "module": rec["module"],
                "rows": int(rec["rows"]),
                "cols": int(rec["cols"]),
                "source": rec.get("source"),
                "lora_rank": rec.get("lora_rank"),
                "fro_norm": float(rec["fro_norm"])
                if pd.notna(rec["fro_norm"])
                else float(np.sqrt(np.sum(s**2))),
                "n_singular": int(s.size),
                "complete": bool(complete),
                "floor": float(rec["sigma_floor"]) if pd.notna(rec.get("sigma_floor", np.nan)) else 0.0,
            }
        )
        sigma.append(s)
    table = pd.DataFrame(
        rows,
        columns=[
            "name",
            "layer",
            "module",
            "rows",
            "cols",
            "source",
            "lora_rank",
            "fro_norm",
            "n_singular",
            "complete",
            "floor",
        ],
    )
    table["layer"] = table["layer"].astype("Int64")
    table["lora_rank"] = table["lora_rank"].astype("Int64")
    return Spectra(table, tuple(sigma))
