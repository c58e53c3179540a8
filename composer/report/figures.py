"""The report's figures: matplotlib charts of the measured dict, each a PNG data URI."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np

from composer.analysis.measures import FEATURE_LABELS, FEATURES


def _png_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor=fig.get_facecolor())
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


CURVE_COLUMNS = 2
"""Learning-curve panels per row: each stays about 600 px wide at the page's full width."""


def curve_figure(genre: str, stages: list[dict], baseline: dict | None, final_nll: float | None) -> str | None:
    """One panel per training stage, two to a row (a long lineage grows down, not narrower), axes
    labelled; the latest validation figure is written beside its point, so a run with a single
    evaluation still says where it stands."""
    stages = [s for s in stages if s["train"] or s["val"]]
    if not stages:
        return None
    columns = min(CURVE_COLUMNS, len(stages))
    rows = -(-len(stages) // columns)
    fig = _figure(6.0 * columns + 0.4, 3.9 * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(stages) :]:
        ax.axis("off")
    for ax, stage in zip(axes, stages):
        if stage["train"]:
            ax.plot(*zip(*stage["train"]), color="#7a9aa8", lw=1.2, label="training loss (crops)")
        if stage["val"]:
            ax.plot(*zip(*stage["val"]), color="#c0392b", marker="o", ms=4, lw=1.4, label="validation NLL")
            step, value = stage["val"][-1]
            alone = len(stage["val"]) == 1
            label = f"{value:.3f}" + (f" (the one evaluation, step {step})" if alone else "")
            ax.annotate(label, (step, value), textcoords="offset points", xytext=(-6, 8),
                        ha="center" if alone else "right", fontsize=9, color="#c0392b")  # fmt: skip
        last = stage is stages[-1]
        if last and baseline:
            ax.axhline(
                baseline["best_whole"],
                color="#555",
                ls="--",
                lw=1,
                label=f"{baseline['best_order']}-gram baseline {baseline['best_whole']:.3f}",
            )
        if last and final_nll is not None:
            ax.axhline(final_nll, color="#c0392b", ls=":", lw=1, label=f"published: {final_nll:.3f}")
        if stage.get("start_from_step") is not None:
            ax.axvline(
                stage["start_from_step"],
                color="#2b6cb0",
                ls="-.",
                lw=1,
                label=f"fine-tune starts from step {stage['start_from_step']}",
            )
        name = {"pretrain": "pre-training (all genres)", "finetune": f"fine-tuning on {genre}"}.get(
            stage["stage"], stage["stage"]
        )
        ax.set_title(name, fontsize=12)
        ax.set_xlabel("optimizer step", fontsize=10)
        ax.set_ylabel("NLL, nats per event", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5)
    fig.tight_layout()
    return _png_uri(fig)


STUDY_COLORS = ("#c0392b", "#2b6cb0", "#27ae60", "#8e44ad", "#d68910", "#16a085", "#7f8c8d")


def study_figure(study: dict) -> str | None:
    """Validation NLL (solid) and training-piece NLL (dashed) of every run; a star at each run's best.

    Runs far behind the best (a fresh model beside fine-tuned ones) would flatten the others'
    curves, so the close ones get a second panel of their own."""
    runs = [r for r in study["runs"] if r["val"]]
    if not runs:
        return None
    colors = {r["run"]: STUDY_COLORS[i % len(STUDY_COLORS)] for i, r in enumerate(runs)}
    best = min(r["best_val"] for r in runs)
    close = [r for r in runs if r["best_val"] <= 1.5 * best]
    panels = [("all runs", runs)] + ([("the runs within 50 % of the best", close)] if len(close) < len(runs) else [])
    fig = _figure(7.5 * len(panels) + 3.5, 4.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, shown) in zip(axes, panels):
        for run in shown:
            color = colors[run["run"]]
            ax.plot(*zip(*run["val"]), color=color, lw=1.6, marker="o", ms=2.5, label=f"{run['label']}: validation")
            if run["train"]:
                ax.plot(*zip(*run["train"]), color=color, lw=1.1, ls="--", label="  training pieces")
            ax.plot([run["best_step"]], [run["best_val"]], marker="*", ms=12, color=color, mec="black", mew=0.6)
        values = sorted(v for run in shown for _, v in run["val"] + run["train"])
        lo, hi = values[0], values[int(0.97 * (len(values) - 1))]  # a fresh model's first evaluations go off the top
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        ax.set_xlabel("step")
        ax.set_ylabel("nats / event")
        ax.set_title(title if len(panels) > 1 else (study.get("question") or study["name"]), fontsize=11)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].legend(handles, labels, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _png_uri(fig)


def baseline_figure(report: dict) -> str:
    genres = report["genres"]
    fig = _figure(1.9 * len(genres) + 2.5, 3.2)
    ax = fig.add_subplot()
    x = np.arange(len(genres))
    model = [report["baseline"][g]["model_whole"] or np.nan for g in genres]
    ngram = [report["baseline"][g]["best_whole"] for g in genres]
    ax.bar(x - 0.2, model, 0.4, color="#c0392b", label="LSTM (card, whole split)")
    ax.bar(x + 0.2, ngram, 0.4, color="#95a5a6", label="best n-gram (whole split)")
    for xi, (m, n) in enumerate(zip(model, ngram)):
        ax.text(xi - 0.2, m, f"{m:.2f}", ha="center", va="bottom", fontsize=8)
        ax.text(xi + 0.2, n, f"{n:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, genres)
    ax.set_ylabel("validation NLL (nats / event)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _png_uri(fig)


def feature_figure(genre: str, feats: dict[str, dict]) -> str:
    fig = _figure(12.5, 6.4)
    axes = fig.subplots(2, 3).ravel()
    for ax, name in zip(axes, FEATURES):
        f = feats[name]
        edges = np.asarray(f["edges"])
        real = np.asarray(f["real"], dtype=float)
        gen = np.asarray(f["samples"], dtype=float)
        real = real / real.sum() if real.sum() else real
        gen = gen / gen.sum() if gen.sum() else gen
        used = np.nonzero((real + gen) > 0)[0]
        lo, hi = (used[0], used[-1] + 1) if len(used) else (0, len(real))
        ax.stairs(real[lo:hi], edges[lo : hi + 1], fill=True, color="#9fb3c8", alpha=0.85, label="held-out")
        ax.stairs(gen[lo:hi], edges[lo : hi + 1], color="#c0392b", lw=1.5, label="samples")
        ax.set_title(f"{name}: overlap {f['overlap']:.2f}", fontsize=11)
        ax.set_xlabel(FEATURE_LABELS[name], fontsize=9)
        ax.set_ylabel("share", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.25)
    key = axes[-1]
    key.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    key.legend(handles, labels, loc="upper left", fontsize=10, frameon=False, title=f"{genre}")
    lines = [f"{name:<10} {feats[name]['overlap']:.3f}" for name in FEATURES]
    key.text(0.02, 0.55, "overlap area\n" + "\n".join(lines), family="monospace", fontsize=10, va="top")
    fig.tight_layout()
    return _png_uri(fig)


def roll_uri(tokens: Sequence[int], title: str) -> str | None:
    from composer.audio.pianoroll import BACKGROUND, draw_pianoroll
    from composer.sampling.sample import piece_notes

    notes = piece_notes(np.asarray(tokens, dtype=np.int64))
    if not notes:
        return None
    fig = draw_pianoroll(notes, title, size=(800, 450))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor=BACKGROUND)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
