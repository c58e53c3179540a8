"""The report page: ``render_html`` turns ``compute_report``'s plain dict into one self-contained HTML page.

Jinja2 (``templates/report.html``), images as base64 data URIs, inline CSS, no scripts, nothing
fetched from elsewhere; ``write_report`` writes it atomically.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from composer.analysis.measures import FEATURE_LABELS, FEATURES
from composer.analysis.structure import MEASURE_LABELS, MEASURES
from composer.codec import events
from composer.report.figures import baseline_figure, curve_figure, feature_figure, roll_uri, study_figure
from composer.report.form_and_key import structure_rows
from composer.report.listening import audio_uri


@dataclass
class _Matrix:
    title: str
    note: str
    rows: list = field(default_factory=list)
    cols: list = field(default_factory=list)
    all_wins: bool = False


def _matrix_view(matrix: dict, title: str, note: str) -> _Matrix:
    view = _Matrix(title, note, cols=matrix["cols"], all_wins=matrix["diagonal_wins_all"])
    for i, row in enumerate(matrix["rows"]):
        cells = [
            {
                "value": f"{v:.3f}",
                "min": j == matrix["row_min"][i],
                "diag": matrix["cols"][j] == row,
                "events": matrix["events"][i][j],
            }
            for j, v in enumerate(matrix["nll"][i])
        ]
        view.rows.append({"genre": row, "cells": cells, "wins": matrix["diagonal_wins"][i]})
    return view


def _candidate_view(report: dict) -> dict | None:
    """The candidate section's figures: its learning curve, with the baseline to beat."""
    cand = report.get("candidate")
    if not cand:
        return None
    base = {"best_whole": cand["baseline"]["nll"], "best_order": cand["baseline"]["order"]}
    return {**cand, "curve": curve_figure(cand["genre"], cand["curves"], base, None)}


def render_html(report: dict) -> str:
    from jinja2 import Environment, FileSystemLoader

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True)
    opts = report["options"]
    genres = report["genres"]
    curves = {
        g: curve_figure(g, report["curves"][g], report["baseline"].get(g), report["models"][g]["validation_nll"])
        for g in genres
    }
    matrices = [
        _matrix_view(
            report["fidelity"]["heldout"],
            "Held-out pieces",
            f"Validation pieces of each genre from the token cache: up to {opts['pieces']} pieces, "
            f"the first {opts['events']:,} events of each.",
        ),
        _matrix_view(
            report["fidelity"]["samples"],
            "Samples",
            f"{opts['samples']} samples of {opts['seconds']:g} s from each genre's model "
            f"(seeds {opts['seed']}..{opts['seed'] + opts['samples'] - 1}, temperature {opts['temperature']:g}).",
        ),
    ]
    rolls = {
        g: [
            {
                "seed": r["seed"],
                "uri": roll_uri(r["tokens"], f"{g} · seed {r['seed']}"),
                "audio": audio_uri(r["tokens"]),
            }
            for r in report["rolls"][g]
        ]
        for g in genres
    }
    structure = {g: structure_rows(s) for g, s in report.get("structure", {}).items()}
    page = env.get_template("report.html").render(
        report=report,
        opts=opts,
        genres=genres,
        models=report["models"],
        curves=curves,
        baseline=report["baseline"],
        baseline_chart=baseline_figure(report),
        matrices=matrices,
        features=report["features"],
        feature_names=FEATURES,
        default_velocity=events.bin_to_velocity(events.NUM_VELOCITY_BINS // 2),
        feature_labels=FEATURE_LABELS,
        feature_charts={g: feature_figure(g, report["features"][g]) for g in genres},
        rolls=rolls,
        studies=[{**st, "figure": study_figure(st)} for st in report.get("studies", [])],
        candidate=_candidate_view(report),
        structure=structure,
        structure_info=report.get("structure", {}),
        measures=MEASURES,
        measure_labels=MEASURE_LABELS,
    )
    return page


def write_report(report: dict, out: Path) -> Path:
    """Render and write the page atomically."""
    html = render_html(report)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        part.write_text(html, encoding="utf-8")
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
    return out
