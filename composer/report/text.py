"""The report's tables as plain text, as ``composer report`` and ``composer fidelity`` print them."""

from __future__ import annotations

from composer.analysis.measures import FEATURES


def format_matrix(matrix: dict, title: str) -> str:
    """A text table: rows = data genre, columns = model; * marks the row minimum."""
    cols = matrix["cols"]
    width = max(10, *(len(c) + 2 for c in cols))
    corner = "data \\ model"
    lines = [title, f"{corner:<14}" + "".join(f"{c:>{width}}" for c in cols) + f"{'diagonal':>10}"]
    for i, row in enumerate(matrix["rows"]):
        cells = "".join(
            f"{(f'{v:.3f}' + ('*' if j == matrix['row_min'][i] else ' ')):>{width}}"
            for j, v in enumerate(matrix["nll"][i])
        )
        win = matrix["diagonal_wins"][i]
        lines.append(f"{row:<14}{cells}{('wins' if win else 'loses') if win is not None else '-':>10}")
    verdict = "yes" if matrix["diagonal_wins_all"] else "no"
    lines.append(f"diagonal wins in every row: {verdict}   (* row minimum; nats per event)")
    return "\n".join(lines)


def format_overlaps(features: dict[str, dict]) -> str:
    lines = [
        "overlap area, samples vs held-out (1 = same distribution)",
        f"{'genre':<12}" + "".join(f"{f:>11}" for f in FEATURES),
    ]
    for genre, feats in features.items():
        lines.append(f"{genre:<12}" + "".join(f"{feats[f]['overlap']:>11.3f}" for f in FEATURES))
    return "\n".join(lines)


def format_candidate(cand: dict) -> str:
    """The candidate beside the current version, as ``composer report --candidate`` prints it."""
    roles = ["current", "candidate"] if cand["current"] else ["candidate"]
    names = {"current": cand["current"], "candidate": cand["candidate"]}
    width = max(12, *(len(names[r]) + 2 for r in roles))
    lines = [
        f"{cand['genre']}: {cand['candidate']} beside the current {cand['current'] or '(none)'}",
        f"{'NLL per event':<30}"
        + "".join(f"{names[r]:>{width}}" for r in roles)
        + ("  difference" if cand["current"] else ""),
    ]

    def row(label: str, values: dict, delta: float | None) -> str:
        cells = "".join(f"{values[r]:>{width}.3f}" for r in roles)
        return f"{label:<30}{cells}" + (f"  {delta:+.3f}" if delta is not None else "")

    whole = cand["whole"]
    lines.append(
        row("whole validation split", whole, whole["candidate"] - whole["current"] if cand["current"] else None)
    )
    for r in cand["per_genre"]:
        lines.append(row(f"{r['genre']} held-out excerpts", r, r["delta"]))
    base = cand["baseline"]
    lines.append(f"{'n-gram baseline':<30}{base['nll']:>{width}.3f}  ({base['order']}-gram, whole validation split)")
    lines.append(f"verdict: {cand['verdict']['text']}")
    return "\n".join(lines)
