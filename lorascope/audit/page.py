"""The audit page: the claims table structured as report sections and rendered by the report's own template
(lorascope/report: one self-contained HTML file, inline CSS and script, nothing loaded from anywhere).

Structure only: a DataFrame from ``claims_file.run_claims`` in, a report ``Page`` or its HTML string out.
"""

from __future__ import annotations

import pandas as pd

from .claims import MISTAKES
from .claims_file import claim_notes

TABLE_COLUMNS = {"name": "claim", "figure": "figure", "claimed": "claimed", "exact": "exact",
                 "relative_error": "error (%)", "verdict": "verdict", "mistakes": "mistake", "arch": "model",
                 "targets": "targets", "rank": "r", "modules": "modules", "source": "source"}


def build_page(table: pd.DataFrame, title: str, subtitle: str = ""):
    """Sections: summary cards, the sortable claims table, one note per wrong or unchecked figure, the method."""
    from ..report.blocks import CardsBlock, NoteBlock, Page, Section, TableBlock

    counts = {v: int((table["verdict"] == v).sum()) for v in ("ok", "wrong", "error")}
    summary = Section("summary", "Summary", [CardsBlock([
        ("claims", str(table["name"].nunique()), "entries of the claims file"),
        ("correct", str(counts["ok"]), "figures within their tolerance"),
        ("wrong", str(counts["wrong"]), "figures outside their tolerance"),
        ("not checked", str(counts["error"]), "claims whose input could not be counted"),
    ])])
    shown = table.assign(relative_error=100 * table["relative_error"])[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS)
    claims = Section("claims", "Claims", [TableBlock(shown, "every claimed figure against the exact count",
                                                     interactive=True, csv_name="audit.csv")])
    notes = []
    for r in table.itertuples():
        if r.verdict == "ok":
            continue
        what = f"{r.name} — {r.figure}: claimed {r.claimed_text}, exact {r.exact_text}; " if r.figure else f"{r.name}: "
        notes.append(NoteBlock(what + (r.explanation or "no common mistake changes this figure"),
                               "warn" if r.verdict == "error" else "info"))
    notes.extend(NoteBlock(f"{name}: {note}", "warn") for name, note in claim_notes(table))
    why = Section("why", "Why the wrong figures are wrong", notes or [NoteBlock("Every claimed figure is correct.")])
    method = Section("method", "How the counts were made", [NoteBlock(text) for text in (
        "LoRA parameters: r·(out + in) per targeted weight, from its real shape (grouped-query k/v, fused qkv and "
        "gate_up, Conv1D and MoE experts as stored); DoRA adds one magnitude per output feature.",
        "Targets follow PEFT: a name matches a module that equals it or ends with '.' + it; a string is a "
        "full-match regex; all-linear is every linear layer except the output layer.",
        "Model parameters count every parameter once (tied embeddings once), as model.parameters() does; the "
        "percentage is trainable ÷ model parameters × 100.",
        "A wrong figure is recomputed under each common mistake, alone and in pairs — "
        + "; ".join(m.label for m in MISTAKES.values()) + " — and the recomputation that reproduces it is named.",
    )])
    return Page(title, subtitle, [summary, claims, why, method])


def render_page(table: pd.DataFrame, title: str, subtitle: str = "", footer: str = "") -> str:
    """The audit as one self-contained HTML page in the report's style."""
    from ..report.html import render_html

    return render_html(build_page(table, title, subtitle), {}, footer)
