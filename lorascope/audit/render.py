"""Owns the audit's output: the terminal (rich), and the claims table as audit.csv and a self-contained page.

Every claimed figure is rendered from one row model, ``claims.figure_rows``: the single claim of
``lorascope params`` in the terminal, and each row of the claims table (``claims_file.run_claims``) in the
terminal, audit.csv and audit.html alike. The page is structured as report sections and rendered by the
report's own template (one HTML file, inline CSS and script, nothing loaded from anywhere).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ..units import human_bytes
from .claims import ClaimCheck, figure_rows
from .claims_file import claim_notes
from .mistakes import MISTAKES
from .numbers import both, format_ranges

SHAPES_WORDS = {"hf": "transformers on the meta device", "rules": "lorascope's built-in shape table",
                "headers": "checkpoint headers"}  # fmt: skip
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "note": "cyan"}
VERDICT_STYLE = {"ok": "green", "wrong": "bold red", "error": "yellow"}
LEFT = ("module type", "part", "figure", "target", "verdict", "explanation", "layers", "name")
PAGE_COLUMNS = {
    "name": "claim", "figure": "figure", "claimed": "claimed", "exact": "exact",
    "relative_error": "error (%)", "verdict": "verdict", "mistakes": "mistake", "arch": "model",
    "targets": "targets", "rank": "r", "modules": "modules", "source": "source",
}  # fmt: skip


def escape(text: str) -> str:
    """User and library text printed as is: '[hf]' is not a rich style tag."""
    from rich.markup import escape

    return escape(str(text))


def _console(console: Any | None):
    from rich.console import Console

    # piped output gets room for the module-type column instead of rich's 80-column default
    return console or Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)


def _table(con: Any, columns: tuple[str, ...], rows: Any, title: str | None = None) -> None:
    """Print one table: text columns left-aligned (``LEFT``), numbers right-aligned."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, justify="left" if c in LEFT else "right")
    for row in rows:
        t.add_row(*map(str, row))
    con.print(t)


def layer_runs(by_layer: pd.DataFrame) -> list[tuple[str, int, int]]:
    """Consecutive layers with the same modules and parameters, as ('0–31', modules, params each)."""
    runs: list[list[Any]] = []
    for r in by_layer.itertuples():
        layer = None if pd.isna(r.layer) else int(r.layer)
        if layer is not None and runs and runs[-1][1] == layer - 1 and runs[-1][2:] == [r.modules, r.params]:
            runs[-1][1] = layer
        else:
            runs.append([layer, layer, r.modules, r.params])
    label = lambda a, b: "outside layers" if a is None else str(a) if a == b else f"{a}–{b}"  # noqa: E731
    return [(label(a, b), int(modules), int(params)) for a, b, modules, params in runs]


def print_params(result: Any, console: Any | None = None) -> None:
    """The ``lorascope params`` result of a model SOURCE (``params.ParamsResult``)."""
    con = _console(console)
    c, m, s = result.count, result.model, result.count.settings
    tied = ", ".join(f"{t.name} = {t.tied_to}" for t in m.tied) or "none"
    con.print(f"[bold]source[/]  {result.source}")
    con.print(f"[bold]model[/]   {m.arch} · {m.head} · shapes from {SHAPES_WORDS.get(m.shapes_from)}")
    layers = f"{m.num_layers} layers · d={m.hidden} · tied: {tied}"
    con.print(f"        {both(c.total)} parameters (tied weights once) · {layers}")
    extras = [
        f"layers {format_ranges(s.layers)}" if s.layers else "",
        "DoRA" if s.dora else "",
        f"rank_pattern {dict(s.rank_pattern)}" if s.rank_pattern else "",
        f"bias={s.bias}" if s.bias != "none" else "",
        f"modules_to_save {list(s.modules_to_save)}" if s.modules_to_save else "",
    ]
    lora = f"r={s.rank} · alpha={s.alpha:g} · targets {c.match.label} → {len(c.rows)} modules"
    con.print(f"[bold]LoRA[/]    {lora}" + "".join(f" · {e}" for e in extras if e))
    for w in result.warnings:
        con.print(f"[yellow]warning:[/] {escape(w)}")
    for note in m.notes:
        con.print(f"[cyan]note:[/] {escape(note)}")
    _print_matched(con, c)
    types = [(r.module_type, r.modules, f"{r.rows}×{r.cols}", r.r, f"{r.params // r.modules:,}",
              f"{r.params:,}") for r in c.by_type().itertuples()]  # fmt: skip
    _table(con, ("module type", "modules", "shape (out×in)", "r", "params each", "params"), types)
    runs = [(label, modules, f"{params:,}") for label, modules, params in layer_runs(c.by_layer())]
    _table(con, ("layers", "modules", "params per layer"), runs)
    parts = (("DoRA magnitude", c.magnitude), ("bias", c.bias), ("modules_to_save", c.saved))
    parts = [f"LoRA {c.lora:,}", *(f"{k} {v:,}" for k, v in parts if v)]
    con.print(f"[bold]trainable[/] {both(c.trainable)}  ({' + '.join(parts)})")
    peft = f"{c.peft_percent:.4g} % (of {c.peft_total:,}, adapter included)"
    share = f"{c.percent:.4g} % of the model's {both(c.total)}"
    con.print(f"          {share}; PEFT's print_trainable_parameters shows {peft}")
    size = f"{result.file_bytes:,} bytes ({human_bytes(result.file_bytes)})"
    con.print(f"[bold]adapter file[/] {size} as {result.options.dtype} safetensors")
    memory = [(r.part, human_bytes(r.lora), human_bytes(r.full)) for r in result.memory.itertuples()]
    _table(con, ("part", "LoRA", "full fine-tuning"), memory, "training memory (no activations)")
    for line in result.options.memory.lines():
        con.print(f"  [dim]assumes: {line}[/]")
    if result.claim is not None:
        print_claim(result.claim, con)


def _print_matched(con: Any, c) -> None:
    owners: dict[str, list[str]] = {}
    for target, names in c.match.by_target.items():
        for n in names:
            owners.setdefault(n, []).append(target)
    shapes = {m.name: m.shape for m in c.model.modules} | {p.name: p.shape for p in c.model.parameters}
    groups = c.match.groups()
    con.print("[bold]matched[/]")
    for kind, names in groups.items():
        ts = sorted({t for n in names for t in owners.get(n, [])})
        via = f"  ← {', '.join(ts)}" if ts and ts != ["all-linear"] else ""
        param = " (parameter)" if names[0] in c.match.parameters else ""
        con.print(f"  {kind} ×{len(names)}  {'×'.join(map(str, shapes[names[0]]))}{param}{via}")
    for target, names in c.match.by_target.items():
        kinds = sorted(k for k, ns in groups.items() if set(ns) & set(names))
        # all-linear and a regex are meant to reach many types; a name reaching several is worth a note
        if target not in ("all-linear", c.match.regex) and len(kinds) > 1:
            con.print(
                f"  [cyan]note:[/] target {target!r} matches {len(kinds)} module types: {', '.join(kinds)}"
            )
    for target in c.match.unmatched:
        con.print(f"  [bold red]target {target!r} matched NOTHING[/]")


def _figures_table(con: Any, rows: list[dict[str, Any]], title: str | None = None, named: bool = False):
    """Claimed figures as a terminal table from ``claims.figure_rows`` rows (``named``: the claims table)."""
    cells = []
    for r in rows:
        error = "" if pd.isna(r["relative_error"]) else f"{r['relative_error']:+.2%}"
        verdict = f"[{VERDICT_STYLE[r['verdict']]}]{r['verdict']}[/]"
        cells.append([r["figure"], r["claimed_text"], r["exact_text"], error, verdict])
        cells[-1] = [escape(r["name"]), *cells[-1], escape(r["explanation"] or "")] if named else cells[-1]
    columns = ("figure", "claimed", "exact", "error", "verdict")
    _table(con, ("name", *columns, "explanation") if named else columns, cells, title)


def print_claim(check: ClaimCheck, console: Any | None = None) -> None:
    """One claim's figures, and under the table how each wrong one comes about."""
    con, rows = _console(console), figure_rows(check)
    _figures_table(con, rows, f"claim (tolerance {check.figures[0].tolerance:.1%})")
    for r in rows:
        if r["explanation"]:
            con.print(f"  {r['figure']}: {escape(r['explanation'])} (claim within {r['fit']:.2%})")
            for other in r["also"]:
                con.print(f"    [dim]also consistent: {escape(other)}[/]")
        elif r["verdict"] != "ok":
            con.print(f"  {r['figure']}: no common mistake changes this figure")


def print_adapter(result: Any, console: Any | None = None) -> None:
    """The ``lorascope params`` result of an adapter SOURCE (``params.AdapterResult``)."""
    con, a = _console(console), result.audit
    cfg, c = a.config, a.model_count
    con.print(f"[bold]adapter[/] {result.source}")
    targets, base = cfg.get("target_modules"), cfg.get("base_model_name_or_path")
    con.print(f"        r={cfg.get('r')} · alpha={cfg.get('lora_alpha')} · targets {targets} · "
              f"task {cfg.get('task_type')} · base {base}")  # fmt: skip
    reached = [(t, ", ".join(f"{k} ×{n}" for k, n in types.items()) or "[bold red]NOTHING[/]")
               for t, types in a.targets.items()]  # fmt: skip
    _table(con, ("target", "module types reached"), reached)
    ranks = lambda s: ",".join(map(str, sorted(set(s))))  # noqa: E731
    types = [(kind, len(g), f"{g['rows'].iloc[0]}×{g['cols'].iloc[0]}", ranks(g["tensor_rank"]),
              ranks(g["r"]), f"{g['actual'].sum():,}", f"{g['configured'].sum():,}")
             for kind, g in a.modules.groupby("module_type", sort=False)]  # fmt: skip
    _table(
        con,
        ("module type", "modules", "shape (out×in)", "tensor rank", "config r", "actual", "configured"),
        types,
    )
    differ = "" if a.actual == a.configured else "  [bold red]differ[/]"
    con.print(f"[bold]LoRA parameters[/] actual {both(a.actual)} · configured {both(a.configured)}{differ}")
    if not a.saved.empty:
        size = human_bytes(int(a.saved["bytes"].sum()))
        con.print(
            f"[bold]full tensors[/] {both(a.saved_params)} parameters in {len(a.saved)} tensors ({size})"
        )
    con.print(f"[bold]trainable[/] {both(a.trainable)}")
    if c is not None:
        share = f"{100 * a.trainable / c.total:.4g} %"
        con.print(f"[bold]on the base model[/] ({both(c.total)} parameters): the config creates "
                  f"{both(c.trainable)} trainable; the adapter holds {share} of the model")  # fmt: skip
    for f in a.findings:
        con.print(f"[{SEVERITY_STYLE[f.severity]}]{f.severity}:[/] {escape(f.message)}")
    if not a.findings:
        con.print("[green]no findings[/]")
    if result.claim is not None:
        print_claim(result.claim, con)


def print_claims_table(table: pd.DataFrame, console: Any | None = None) -> None:
    """The claims table (``claims_file.run_claims``) in the terminal, with each claim's notes below."""
    con = _console(console)
    _figures_table(con, table.to_dict("records"), named=True)
    for name, note in claim_notes(table):
        con.print(f"[yellow]note[/] {escape(name)}: {escape(note)}")


def render_page(table: pd.DataFrame, title: str, subtitle: str = "", footer: str = "") -> str:
    """The claims table as one self-contained HTML page in the report's style: summary cards, the sortable
    table, one note per wrong or unchecked figure, and how the counts were made."""
    from ..report.blocks import CardsBlock, NoteBlock, Page, Section, TableBlock
    from ..report.html import render_html

    counts = {v: int((table["verdict"] == v).sum()) for v in ("ok", "wrong", "error")}
    all_correct = "Every claimed figure is correct."
    cards = CardsBlock([
        ("claims", str(table["name"].nunique()), "entries of the claims file"),
        ("correct", str(counts["ok"]), "figures within their tolerance"),
        ("wrong", str(counts["wrong"]), "figures outside their tolerance"),
        ("not checked", str(counts["error"]), "claims whose input could not be counted"),
    ])  # fmt: skip
    shown = table.assign(relative_error=100 * table["relative_error"])[list(PAGE_COLUMNS)]
    claims = TableBlock(shown.rename(columns=PAGE_COLUMNS), "every claimed figure against the exact count",
                        interactive=True, csv_name="audit.csv")  # fmt: skip
    notes = []
    for r in (r for r in table.itertuples() if r.verdict != "ok"):
        what = (
            f"{r.name} — {r.figure}: claimed {r.claimed_text}, exact {r.exact_text}; "
            if r.figure
            else f"{r.name}: "
        )
        why = r.explanation or "no common mistake changes this figure"
        notes.append(NoteBlock(what + why, "warn" if r.verdict == "error" else "info"))
    notes += [NoteBlock(f"{name}: {note}", "warn") for name, note in claim_notes(table)]
    method = [
        "LoRA parameters: r·(out + in) per targeted weight, from its real shape (grouped-query k/v, fused "
        "qkv and gate_up, Conv1D and MoE experts as stored); DoRA adds one magnitude per output feature.",
        "Targets follow PEFT: a name matches a module that equals it or ends with '.' + it; a string is a "
        "full-match regex; all-linear is every linear layer except the output layer.",
        "Model parameters count every parameter once (tied embeddings once), as model.parameters() does; the "
        "percentage is trainable ÷ model parameters × 100.",
        "A wrong figure is recomputed under each common mistake, alone and, where none reproduces it, in "
        f"pairs — {'; '.join(m.label for m in MISTAKES.values())} — and the recomputation that reproduces it "
        "is named.",
    ]
    page = Page(title, subtitle, [
        Section("summary", "Summary", [cards]),
        Section("claims", "Claims", [claims]),
        Section("why", "Why the wrong figures are wrong", notes or [NoteBlock(all_correct)]),
        Section("method", "How the counts were made", [NoteBlock(text) for text in method]),
    ])  # fmt: skip
    return render_html(page, {}, footer)


def save_audit(out: Path, table: pd.DataFrame, html: str) -> list[Path]:
    """Write audit.csv (the claims table without its text columns) and audit.html into ``out`` as one
    transaction (``lorascope.outputs``); returns their paths."""
    from ..outputs import writing

    with writing(out, "audit") as tx:
        table.drop(columns=["claimed_text", "exact_text"]).to_csv(tx.stage / "audit.csv", index=False)
        (tx.stage / "audit.html").write_text(html, encoding="utf-8")
    return [tx.path / "audit.csv", tx.path / "audit.html"]
