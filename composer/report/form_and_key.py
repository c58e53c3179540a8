"""Does a genre model keep its key, follow the key asked, and bring its themes back? Real pieces against samples.

``composer structure`` prints this: the measures of ``composer.analysis.structure`` on the
genre's validation pieces and on samples composed free and to a form plan, and, for a model
trained with controls, how often a piece is in the key it was asked for (Krumhansl-Kessler,
goal >= 90 %) and the density played against the density asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from composer.analysis.structure import MEASURES, measure_pieces, relative_gap, summarize
from composer.codec import events
from composer.codec.controls import control_vector
from composer.codec.keys import ALL_KEYS, estimate_key

SAMPLE_SECONDS = 30.0
DENSITIES = (2.0, 5.0, 12.0)  # calm, moderate, busy


@dataclass
class StructureReport:
    genre: str
    real: dict[str, float]
    samples: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per plan ("free", "ABAB", ...): the summarized measures of its samples."""
    key_accuracy: float | None = None
    """Share of pieces asked for a key whose notes are in that key (None: the model takes no key)."""
    relative_key_accuracy: float | None = None
    """... or in its relative major/minor, which Krumhansl-Kessler profiles often confuse."""
    density_asked_played: list[tuple[float, float]] = field(default_factory=list)


def real_pieces(cache_dir: Path, genre: str) -> list[tuple[list[events.Note], float]]:
    """The genre's validation pieces as (notes, seconds)."""
    from composer.corpus.data import TokenBundle

    bundle = TokenBundle.load(cache_dir, genre, "validation")
    pieces = []
    for i in range(len(bundle)):
        tokens = bundle.sequence(i).astype(np.int64)
        pieces.append((events.decode(tokens), events.duration_steps(tokens) / events.STEPS_PER_SECOND))
    return pieces


def sampled_pieces(sampler, requests: Sequence) -> list[tuple[list[events.Note], float]]:
    from composer.sampling.sample import piece_notes

    return [(piece_notes(t), events.duration_steps(t) / events.STEPS_PER_SECOND) for t in sampler.generate(requests)]


def structure_report(
    sampler, cache_dir: Path, genre: str, count: int = 24, plans: Sequence[str | None] = (None,), seed: int = 0
) -> StructureReport:
    """Real validation pieces against ``count`` 30 s samples per plan (None: free), seeds seed.."""
    from composer.sampling.sample import SampleRequest

    report = StructureReport(genre, summarize(measure_pieces(real_pieces(cache_dir, genre))))
    for plan in plans:
        requests = [SampleRequest(SAMPLE_SECONDS, seed + i, 1.0, 0.95, form=plan) for i in range(count)]
        report.samples[plan or "free"] = summarize(measure_pieces(sampled_pieces(sampler, requests)))
    if sampler.conditioned:
        asked = [ALL_KEYS[(seed + i) * 7 % len(ALL_KEYS)] for i in range(count)]  # every key in turn
        densities = [DENSITIES[i % len(DENSITIES)] for i in range(count)]
        requests = [
            SampleRequest(SAMPLE_SECONDS, seed + i, 1.0, 0.95, controls=control_vector(key, density))
            for i, (key, density) in enumerate(zip(asked, densities))
        ]
        pieces = sampled_pieces(sampler, requests)
        heard = [estimate_key(notes) for notes, _ in pieces]
        report.key_accuracy = float(np.mean([h is not None and h[0] == k for h, k in zip(heard, asked)]))
        report.relative_key_accuracy = float(
            np.mean([h is not None and h[0] in (k, _relative(k)) for h, k in zip(heard, asked)])
        )
        report.density_asked_played = [
            (density, len(notes) / max(seconds, 1e-3)) for density, (notes, seconds) in zip(densities, pieces)
        ]
    return report


def _relative(key):
    from composer.codec.keys import Key

    return Key((key.tonic + 9) % 12, "minor") if key.mode == "major" else Key((key.tonic + 3) % 12, "major")


def format_structure(report: StructureReport) -> str:
    """The table ``composer structure`` prints."""
    width = max(len(name) for name in ("real", *report.samples))
    head = f"{'':<{width}}  " + "  ".join(f"{m:>14}" for m in MEASURES) + f"  {'stuck':>6}  windows"
    lines = [f"{report.genre}: 30 s windows, real validation pieces against samples", head]
    rows = [("real", report.real), *report.samples.items()]
    for name, values in rows:
        cells = "  ".join(f"{values[m]:>14.3f}" for m in MEASURES)
        lines.append(f"{name:<{width}}  {cells}  {values['stuck']:>6.2f}  {values['windows']:>7}")
    for name, values in report.samples.items():
        gap = relative_gap(values, report.real)
        within = sum(g <= 0.10 for g in gap.values())
        gaps = ", ".join(f"{m} {g:.0%}" for m, g in gap.items())
        lines.append(f"gap to real, {name}: {gaps} ({within} of {len(gap)} within 10 %)")
    if report.key_accuracy is not None:
        lines.append(
            f"key asked = key heard: {report.key_accuracy:.0%} of {len(report.density_asked_played)} pieces "
            f"({report.relative_key_accuracy:.0%} counting the relative major/minor)"
        )
        for asked in DENSITIES:
            played = [p for a, p in report.density_asked_played if a == asked]
            if played:
                lines.append(f"density asked {asked:g} notes/s: played {np.mean(played):.1f} (n={len(played)})")
    else:
        lines.append("key asked = key heard: this model takes no key (train it with --controls)")
    return "\n".join(lines)
