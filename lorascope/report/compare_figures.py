"""The report's comparison section: φ heatmaps, amplification per layer, intruders against ε (Hu et al. 2021;
Shuttleworth et al. 2024).

Reads only the tables ``lorascope compare`` and ``lorascope intruders`` save (``lorascope.compare.results``).
Figures are pure functions, tables in, a matplotlib ``Figure`` out; ``compare_blocks`` structures them into
report blocks; the section appears in ``render_report`` wherever ``compare_summary.json`` sits in the results
folder, and ``render_compare_report`` writes a page for a folder holding a comparison alone.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..compare.results import SUMMARY_JSON, CompareResults, load_compare
from . import data
from . import figures as fg
from .blocks import Block, CardsBlock, FigureBlock, Page, Section, TableBlock
from .formatting import counted
from .sections import SECTIONS, RunContext, warning_blocks

PHI_CMAP = "magma"  # Hu et al. Figure 3 shades φ from dark (0) to light (1)


# ---- numbers shown (pure) -----------------------------------------------------------------------------


def _typed(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    typed = data.with_types(table)
    types = data.type_order(table)
    return typed, types, data.short_labels(types)


def mean_phi_grids(similarity: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per module type, φ(i, j) averaged over layers: a frame indexed by i with one column per j."""
    typed, types, _ = _typed(similarity)
    return {t: typed[typed["type"] == t].groupby(["i", "j"])["phi"].mean().unstack("j") for t in types}


def overlap_table(modules: pd.DataFrame) -> pd.DataFrame:
    """Per module type: medians of cosine and φ beside φ's random expectation."""
    typed, types, _ = _typed(modules)
    rows = []
    for t in types:
        g = typed[typed["type"] == t]
        rows.append(
            {
                "module type": t,
                "modules": len(g),
                "cosine": g["cosine"].median(),
                "φ(1,1)": g["phi_1_1"].median(),
                "φ(k,k)": g["phi_min"].median(),
                "φ(k_x,k_y)": g["phi_all"].median(),
                "random max(k_x,k_y)/m": g["random_all"].median(),
                "shared dims": g["shared_dims"].median(),
                "k_x": g["k_x"].median(),
                "k_y": g["k_y"].median(),
            }
        )
    return pd.DataFrame(rows)


def table7(amplification: pd.DataFrame) -> pd.DataFrame:
    """Hu et al. Table 7 per update and module type (medians over layers)."""
    typed, types, _ = _typed(amplification)
    rows = []
    for label, by_update in typed.groupby("update", sort=False):
        for t in types:
            g = by_update[by_update["type"] == t]
            if g.empty:
                continue
            rows.append(
                {
                    "update": label,
                    "module type": t,
                    "r": g["rank"].median(),
                    "‖UᵀWV‖ ΔW's": g["proj_delta"].median(),
                    "‖UᵀWV‖ W's top-r": g["proj_w"].median(),
                    "‖UᵀWV‖ random": g["proj_random"].median(),
                    "random expected": g["random_expected"].median(),
                    "‖W‖_F": g["base_fro_norm"].median(),
                    "‖ΔW‖_F": g["delta_fro"].median(),
                    "amplification": g["amplification"].median(),
                }
            )
    return pd.DataFrame(rows)


def intruder_table(intruder_modules: pd.DataFrame) -> pd.DataFrame:
    """Per update and module type: intruders summed over layers and how many modules have any."""
    typed, types, _ = _typed(intruder_modules)
    rows = []
    for label, by_update in typed.groupby("update", sort=False):
        for t in types:
            g = by_update[by_update["type"] == t]
            if len(g):
                rows.append(
                    {
                        "update": label,
                        "module type": t,
                        "modules": len(g),
                        "intruders": int(g["intruders"].sum()),
                        "modules with intruders": int((g["intruders"] > 0).sum()),
                        "median min max|cos|": g["min_max_cos"].median(),
                    }
                )
    return pd.DataFrame(rows)


# ---- figures (pure) -----------------------------------------------------------------------------------


def _tick_positions(values: np.ndarray, most: int = 8) -> np.ndarray:
    step = max(1, math.ceil(len(values) / most))
    return np.arange(0, len(values), step)


@fg.styled
def phi_heatmaps(grids: dict[str, pd.DataFrame], labels: tuple[str, str], names: dict[str, str]) -> Figure:
    """φ(i, j) per module type as in Hu et al. Figure 3: rows i (X's top directions), columns j (Y's)."""
    fig, axes = fg.panel_grid(len(grids), ncols=4, panel_w=2.5, panel_h=2.3)
    image = None
    for ax, (t, g) in zip(axes, grids.items()):
        image = ax.imshow(
            g.to_numpy(), vmin=0.0, vmax=1.0, cmap=PHI_CMAP, aspect="auto", interpolation="nearest"
        )
        xs, ys = _tick_positions(g.columns.to_numpy()), _tick_positions(g.index.to_numpy())
        ax.set_xticks(xs, [str(g.columns[p]) for p in xs])
        ax.set_yticks(ys, [str(g.index[p]) for p in ys])
        ax.set_xlabel(f"j ({labels[1]})")
        ax.set_ylabel(f"i ({labels[0]})")
        ax.set_title(names.get(t, t))
        ax.grid(False)
    if image is not None:
        fig.colorbar(image, ax=axes, label="φ(i, j), mean over layers", shrink=0.9)
    return fig


def _layer_lines(
    ax, table: pd.DataFrame, column: str, types: list[str], names: dict[str, str], style: str = "-"
) -> None:
    """One line per module type against layer (module order where there is no layer)."""
    typed = data.with_types(table)
    for i, t in enumerate(types):
        g = typed[typed["type"] == t].sort_values("layer")
        if g.empty:
            continue
        x = data.layer_values(g)
        x = np.where(np.isnan(x), np.arange(len(g)), x)
        ax.plot(
            x,
            g[column].to_numpy(dtype=float),
            marker="o" if style == "-" else None,
            markersize=2.5,
            label=names.get(t, t) if style == "-" else "_nolegend_",
            **{**fg.category_style(i), "linestyle": style},
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))


@fg.styled
def overlap_by_layer(modules: pd.DataFrame) -> Figure:
    """Cosine, φ(1, 1) and φ(k_x, k_y) per layer and module type; dotted: φ(k_x, k_y) of random subspaces."""
    _, types, names = _typed(modules)
    fig, axes = fg.panel_grid(3, ncols=3, panel_w=3.2, panel_h=2.6)
    for ax, (col, title) in zip(
        axes,
        [
            ("cosine", "cosine ⟨ΔW_x, ΔW_y⟩ / ‖ΔW_x‖‖ΔW_y‖"),
            ("phi_1_1", "φ(1, 1): top directions"),
            ("phi_all", "φ(k_x, k_y): whole subspaces"),
        ],
    ):
        _layer_lines(ax, modules, col, types, names)
        if col == "phi_all":
            _layer_lines(ax, modules, "random_all", types, names, style=":")
        ax.set_title(title)
        ax.set_xlabel("layer")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", linestyle=":"))
    labels.append("φ(k_x, k_y) of random subspaces (dotted, in each type's colour)")
    _legend_below(fig, handles, labels)
    return fig


def _legend_below(fig: Figure, handles: list, labels: list[str]) -> None:
    """One legend for every panel, under them: never on a line or a label."""
    ncol = fg.legend_columns(labels, fig.get_size_inches()[0] - 0.3, handle=2.0)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, handlelength=2.0)


@fg.styled
def amplification_by_layer(amplification: pd.DataFrame) -> Figure:
    """Amplification ‖ΔW‖_F / ‖UᵀWV‖_F per layer, one panel per update,
    one line per module type (log scale)."""
    _, types, names = _typed(amplification)
    updates = list(dict.fromkeys(amplification["update"]))
    fig, axes = fg.panel_grid(len(updates), ncols=2, panel_w=4.6, panel_h=2.8, sharey=True)
    for ax, label in zip(axes, updates):
        _layer_lines(ax, amplification[amplification["update"] == label], "amplification", types, names)
        ax.set_yscale("log")
        ax.set_title(f"{label}: amplification factor")
        ax.set_xlabel("layer")
    axes[0].set_ylabel("‖ΔW‖_F / ‖UᵀWV‖_F")
    _legend_below(fig, *axes[0].get_legend_handles_labels())
    return fig


@fg.styled
def intruders_vs_epsilon(sweep: pd.DataFrame, epsilon: float | None) -> Figure:
    """Intruder dimensions summed over modules against ε, and the share of modules with any, per update."""
    fig, axes = fg.panel_grid(2, ncols=2, panel_w=4.6, panel_h=2.8)
    for i, (label, g) in enumerate(sweep.groupby("update", sort=False)):
        style = fg.category_style(i)
        axes[0].plot(g["epsilon"], g["intruders"], marker="o", markersize=3, label=str(label), **style)
        axes[1].plot(
            g["epsilon"],
            g["modules_with_intruders"] / g["modules"].clip(lower=1),
            marker="o",
            markersize=3,
            label=str(label),
            **style,
        )
    for ax, ylabel in zip(
        axes, ["intruder dimensions (sum over modules)", "share of modules with an intruder"]
    ):
        if epsilon is not None:
            ax.axvline(epsilon, color="0.5", linestyle="--", linewidth=0.8)
        ax.set_xlabel("ε (intruder when max |cos| with every base vector < ε)")
        ax.set_ylabel(ylabel)
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].legend(loc="best", frameon=False)
    return fig


# ---- structure ----------------------------------------------------------------------------------------


def _g(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.3g}"


def headline_cards(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    h = summary.get("headline") or {}
    cards = [("modules", str((summary.get("totals") or {}).get("modules", "–")), summary.get("kind", ""))]
    if "mean_cosine" in h:
        cards += [
            ("mean cosine", _g(h["mean_cosine"]), "⟨ΔW_x, ΔW_y⟩_F / (‖ΔW_x‖_F ‖ΔW_y‖_F)"),
            ("mean φ(1, 1)", _g(h["mean_phi_1_1"]), "cos² of the two top directions"),
            ("mean φ(k_x, k_y)", _g(h["mean_phi_all"]), f"random subspaces: {_g(h['mean_random_all'])}"),
        ]
    for label, u in (h.get("updates") or {}).items():
        if u.get("median_amplification") is not None:
            cards.append(
                (
                    f"{label}: amplification",
                    _g(u["median_amplification"]),
                    f"median, along ΔW's top {_g(u.get('median_rank'))} directions",
                )
            )
        if "intruders" in u:
            cards.append(
                (
                    f"{label}: intruders",
                    str(u["intruders"]),
                    f"ε = {u['epsilon']:g}, in {u['modules_with_intruders']} of "
                    f"{counted(u['modules'], 'module')}",
                )
            )
    return cards


def compare_blocks(res: CompareResults) -> list[Block]:
    """The comparison section's blocks from saved tables (what is absent is left out)."""
    s = res.summary
    labels = tuple(s.get("labels") or ("x", "y"))
    blocks: list[Block] = [CardsBlock(headline_cards(s))]
    if res.similarity is not None and len(res.similarity):
        side = str(res.similarity["side"].iloc[0])
        _, _, names = _typed(res.similarity)
        blocks.append(
            FigureBlock(
                "compare_phi",
                f"Subspace similarity φ(i, j) = ‖U_xᵢᵀ U_yⱼ‖²_F / min(i, j) of the {side} singular vectors "
                f"(Hu et al. 2021, Eq. 4), averaged over layers: 1 (light) where {labels[0]}'s top-i "
                f"directions lie in {labels[1]}'s top-j, max(i, j)/m for unrelated random directions.",
                functools.partial(phi_heatmaps, mean_phi_grids(res.similarity), labels, names),
            )
        )
    if res.modules is not None and len(res.modules):
        blocks.append(
            FigureBlock(
                "compare_overlap",
                "Per layer: the cosine of the two updates and how much their top "
                "directions overlap; dotted lines (one per module type, same colour) are φ of random "
                "subspaces of the same sizes.",
                functools.partial(overlap_by_layer, res.modules),
            )
        )
        blocks.append(TableBlock(overlap_table(res.modules), caption="Per module type, medians over layers"))
    if res.amplification is not None and len(res.amplification):
        blocks.append(
            FigureBlock(
                "compare_amplification",
                "How strongly each update amplifies directions already in W: ‖ΔW‖_F / ‖UᵀWV‖_F with U, V the "
                "top-r singular vectors of ΔW (Hu et al. 2021, §7.3).",
                functools.partial(amplification_by_layer, res.amplification),
            )
        )
        blocks.append(
            TableBlock(
                table7(res.amplification),
                caption=(
                    "As Hu et al.'s Table 7: ‖UᵀWV‖_F for ΔW's top-r directions, W's own top-r and random "
                    "directions (expected r‖W‖_F/√(mn)); a value near W's own means ΔW reuses W's strong "
                    "directions, near random means it amplifies directions W barely uses"
                ),
            )
        )
    if res.sweep is not None and len(res.sweep):
        eps = (s.get("options") or {}).get("intruders", {}) or {}
        blocks.append(
            FigureBlock(
                "compare_intruders",
                "Intruder dimensions (Shuttleworth et al. 2024, Algorithm 1): of the top-k left singular "
                "vectors of W + ΔW, those whose largest |cos| with every left singular vector of W is below "
                "ε. The count depends strongly on ε; the dashed line marks the ε of the tables.",
                functools.partial(intruders_vs_epsilon, res.sweep, eps.get("epsilon")),
            )
        )
        if res.intruder_modules is not None:
            blocks.append(
                TableBlock(intruder_table(res.intruder_modules), caption="Intruders per module type")
            )
    if res.modules is not None and len(res.modules):
        blocks.append(
            TableBlock(
                res.modules,
                caption="Every module compared",
                interactive=True,
                csv_name="compare_modules.csv",
                collapsed=True,
            )
        )
    blocks.extend(warning_blocks(s.get("warnings") or []))
    return blocks


@SECTIONS.register("compare", "Comparing two updates", order=78, needs=(SUMMARY_JSON,))
def compare_section(ctx: RunContext) -> list[Block] | None:
    """The comparison section of a spectrum report whose folder also holds comparison tables."""
    return compare_blocks(load_compare(ctx.results.path))


def render_compare_report(results_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write report.html and figures/*.png for a folder holding a comparison alone (no modules.csv).

    Returns:
        The path of the HTML file.
    """
    from . import html_path, publish
    from .html import write_page

    res = load_compare(results_dir)
    s = res.summary
    names = [Path(str(i.get("path", ""))).name for i in s.get("inputs") or []]
    kind = s.get("kind", "compare")
    title = (
        " vs ".join(s.get("labels") or names)
        if kind == "compare"
        else f"intruder dimensions: {' → '.join(names)}"
    )
    subtitle = (
        f"lorascope {kind} report · {(s.get('totals') or {}).get('modules', 0)} modules · "
        f"{s.get('created', '')}"
    )
    from ..outputs import shown

    section_title = "Comparing two updates" if kind == "compare" else "Intruder dimensions"
    page = Page(title, subtitle, [Section("compare", section_title, compare_blocks(res))])
    html = html_path(out if out is not None else results_dir)
    footer = (
        f"Written by lorascope {s.get('lorascope_version', '')} from the saved tables in "
        f"{shown(results_dir)}."
    )
    return publish(html, lambda page_file, figures: write_page(page, page_file, figures, footer=footer))
