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
