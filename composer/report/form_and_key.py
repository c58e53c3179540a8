"""Does a genre model keep its key, follow the key asked, and bring its themes back? Real pieces against samples.

``composer structure`` prints this: the measures of ``composer.analysis.structure`` on the
genre's validation pieces and on samples composed free and to a form plan, and, for a model
trained with controls, how often a piece is in the key it was asked for (Krumhansl-Kessler,
goal >= 90 %) and the density played against the density asked.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from composer.analysis.structure import MEASURES, closeness, measure_pieces, summarize
from composer.codec import events
from composer.codec.controls import control_vector
from composer.codec.keys import ALL_KEYS, estimate_key

if TYPE_CHECKING:
    from composer.serving.composition import GenreStyle

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
    served: dict[str, float] | None = None
    """The measures of pieces as the composer serves them (best of its candidates, the genre's form)."""
    served_key_accuracy: float | None = None
    """Share of pieces the composer served in the key asked (every key in turn), whatever the model."""
    served_model_key_accuracy: float | None = None
    """... of those, the share whose best candidate was in the key's mode before any recasting."""


def compared_options(style: GenreStyle) -> tuple[list[str | None], list[float], list[float]]:
    """The plans, cache weights and echoes ``composer structure`` and the report compare: none
    (free, the model alone, no echo) and the genre's own, where its manifest names one."""
    return (
        [None, *([style.form] if style.form else [])],
        [0.0, *([style.cache] if style.cache else [])],
        [0.0, *([style.echo] if style.echo else [])],
    )


def real_measures(cache_dir: Path, genre: str) -> dict[str, float]:
    """The summarized measures of the genre's validation pieces, their errors clustered by work."""
    from composer.corpus.data import split_works

    return summarize(measure_pieces(real_pieces(cache_dir, genre), split_works(cache_dir, genre, "validation")))


def real_pieces(cache_dir: Path, genre: str) -> list[tuple[list[events.Note], float]]:
    """The genre's validation pieces as (notes, seconds)."""
    from composer.corpus.data import TokenBundle

    bundle = TokenBundle.load(cache_dir, genre, "validation")
    pieces = []
    for i in range(len(bundle)):
        tokens = bundle.sequence(i).astype(np.int64)
        pieces.append((events.decode(tokens), events.duration_steps(tokens) / events.STEPS_PER_SECOND))
    return pieces


def training_pieces(cache_dir: Path, genre: str, pieces: int = 200) -> list[tuple[list[events.Note], float]]:
    """Up to ``pieces`` of the genre's training pieces spread over the split, each as played (not
    time-stretched), as (notes, seconds): what the manifest's targets are measured on, so the
    composer aims at the genre's character without looking at the validation pieces it is judged on."""
    from composer.corpus.data import STRETCHES, TokenBundle

    bundle = TokenBundle.load(cache_dir, genre, "train")
    count = len(bundle) // len(STRETCHES)
    chosen = np.unique(np.linspace(0, count - 1, min(pieces, count)).astype(int)) if count else []
    played = []
    for i in chosen:
        tokens = bundle.sequence(int(i) * len(STRETCHES) + STRETCHES.index(1.0)).astype(np.int64)
        played.append((events.decode(tokens), events.duration_steps(tokens) / events.STEPS_PER_SECOND))
    return played


def training_profile(played: Sequence[tuple[Sequence[events.Note], float]]) -> dict[str, float]:
    """The manifest's ``[structure]``: the measures of ``training_pieces`` on 30 s windows."""
    return summarize(measure_pieces(played))


MIN_KEY_SHARE = 0.02  # rarer keys are chance, not the genre's habit


def training_keys(played: Sequence[tuple[Sequence[events.Note], float]]) -> dict[str, float]:
    """The manifest's ``[keys]``: the share of ``training_pieces`` in each key (Krumhansl-Kessler,
    whole pieces), the rare ones left out."""
    found = [estimate_key(notes) for notes, _ in played]
    names = [k[0].name for k in found if k is not None]
    shares = {name: names.count(name) / len(names) for name in sorted(set(names))} if names else {}
    return {name: share for name, share in shares.items() if share >= MIN_KEY_SHARE}


def profile_toml(profile: dict[str, float], keys: dict[str, float]) -> str:
    """The manifest blocks that set a genre's targets (key clarity is left to the score's own term)."""
    lines = ["[structure]  # composer structure --profile: the genre's training pieces, 30 s windows"]
    lines += [f"{name} = {profile[name]:.3f}" for name in MEASURES if name != "key_clarity"]
    lines += ["", "[keys]  # the keys its training pieces are in (share of pieces)"]
    lines += [f'"{name}" = {share:.3f}' for name, share in sorted(keys.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


def sampled_pieces(sampler, requests: Sequence) -> list[tuple[list[events.Note], float]]:
    from composer.sampling.sample import piece_notes

    return [(piece_notes(t), events.duration_steps(t) / events.STEPS_PER_SECOND) for t in sampler.generate(requests)]


def structure_report(
    sampler,
    cache_dir: Path,
    genre: str,
    style: GenreStyle,
    count: int = 24,
    seed: int = 0,
    plans: Sequence[str | None] | None = None,
    caches: Sequence[float] | None = None,
    echoes: Sequence[float] | None = None,
) -> StructureReport:
    """Real validation pieces against ``count`` 30 s samples per plan (None: free), neural-cache
    weight (composer.sampling.cache; 0: off) and echo (SampleRequest.echo, seconds; 0: none),
    seeds seed..; each list left out is "none and the genre's own" (``compared_options``). The
    style's ``restate`` and ``echo_gap`` shape every sample."""
    from composer.sampling.sample import SampleRequest

    default_plans, default_caches, default_echoes = compared_options(style)
    plans = default_plans if plans is None else plans
    caches = default_caches if caches is None else caches
    echoes = default_echoes if echoes is None else echoes
    report = StructureReport(genre, real_measures(cache_dir, genre))
    for plan, cache, echo in itertools.product(plans, caches, echoes):
        requests = [
            SampleRequest(
                SAMPLE_SECONDS,
                seed + i,
                1.0,
                0.95,
                form=plan,
                restate=style.restate,
                cache=cache,
                echo=echo,
                echo_gap=style.echo_gap,
            )
            for i in range(count)
        ]
        echoed = f", echo {echo:g} s" + (f" every {echo * 2 + style.echo_gap:g} s" if style.echo_gap else "")
        name = (plan or "free") + (f", cache {cache:g}" if cache else "") + (echoed if echo else "")
        report.samples[name] = summarize(measure_pieces(sampled_pieces(sampler, requests)))
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


def served_report(report: StructureReport, client, sampler, count: int = 24, seed: int = 0) -> StructureReport:
    """Add what the composer serves: ``count`` 30 s pieces without a key (their measures against
    real ones) and ``count`` asked for every key in turn (how many come out in it). ``client``: a
    ComposerClient serving the model that ``sampler`` holds, which shows how often the kept
    candidate was already in the mode asked, before ``fit_to_key`` recast it."""
    from composer.codec.midi import load_notes
    from composer.contract import DEFAULT_CANDIDATES, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, candidates_ranked
    from composer.sampling.sample import piece_notes
    from composer.serving.composition import (
        candidate_requests,
        genre_style,
        rank_candidates,
        sample_request,
    )

    pieces = [client.compose(report.genre, SAMPLE_SECONDS, seed=seed + i) for i in range(count)]
    report.served = summarize(measure_pieces([(load_notes(p.midi), p.seconds) for p in pieces]))
    asked = [ALL_KEYS[(seed + i) * 7 % len(ALL_KEYS)] for i in range(count)]
    keyed = [client.compose(report.genre, SAMPLE_SECONDS, seed=seed + i, key=k.name) for i, k in enumerate(asked)]
    report.served_key_accuracy = float(np.mean([p.summary.key == k.name for p, k in zip(keyed, asked)]))
    style = genre_style(report.genre, client.genres_dir)
    in_mode = []
    for i, key in enumerate(asked):
        request = sample_request(
            SAMPLE_SECONDS,
            DEFAULT_TEMPERATURE,
            DEFAULT_TOP_P,
            seed + i,
            key=key.name,
            form=style.form,
            style=style,
        )
        asked_pieces = [sampler.fit(r) for r in candidate_requests(request, DEFAULT_CANDIDATES)]
        scored = [c for c in sampler.generate_scored(asked_pieces, candidates_ranked(DEFAULT_CANDIDATES)) if c]
        found = estimate_key(piece_notes(scored[rank_candidates(scored, key.name, style.profile)[0]][0]))
        in_mode.append(found is not None and found[0].mode == key.mode)
    report.served_model_key_accuracy = float(np.mean(in_mode))
    return report


def _relative(key):
    from composer.codec.keys import Key

    return Key((key.tonic + 9) % 12, "minor") if key.mode == "major" else Key((key.tonic + 3) % 12, "major")


def format_structure(report: StructureReport) -> str:
    """The table ``composer structure`` prints."""
    width = max(len(name) for name in ("real", "served", *report.samples))
    head = f"{'':<{width}}  " + "  ".join(f"{m:>14}" for m in MEASURES) + f"  {'stuck':>6}  windows"
    lines = [
        f"{report.genre}: 30 s windows, real validation pieces against samples "
        "(mean ± standard error: a piece's windows, and a work's performances, counted as one)",
        head,
    ]
    sampled = {**report.samples, **({"served": report.served} if report.served else {})}
    rows = [("real", report.real), *sampled.items()]
    for name, values in rows:
        cells = "  ".join(f"{_with_error(values, m):>14}" for m in MEASURES)
        lines.append(f"{name:<{width}}  {cells}  {values['stuck']:>6.2f}  {values['windows']:>7}")
    for name, values in sampled.items():
        gap, within, noise = closeness(values, report.real)
        gaps = ", ".join(f"{m} {g:.0%}" for m, g in gap.items())
        lines.append(
            f"gap to real, {name}: {gaps} ({within} of {len(gap)} within 10 %, {noise} within two standard errors)"
        )
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
    if report.served_key_accuracy is not None:
        lines.append(
            f"served in the key asked: {report.served_key_accuracy:.0%} "
            f"(the best candidate already in the mode asked: {report.served_model_key_accuracy:.0%}; "
            "for the others another candidate heard in the key, or the best recast)"
        )
    return "\n".join(lines)


def _with_error(values: dict, measure: str) -> str:
    """``0.146±0.015``; the mean alone for figures summarized before errors were kept."""
    se = values.get(f"{measure}_se")
    return f"{values[measure]:.3f}" + (f"±{se:.3f}" if se is not None and np.isfinite(se) else "")


def structure_section(
    directories: dict[str, Path],
    models_dir: Path,
    cache_dir: Path,
    samples: int,
    seed: int,
    device: str = "cpu",
    engine: str = "auto",
) -> dict[str, dict]:
    """The report's "Keys and themes" figures: ``structure_report`` and ``served_report`` for each
    genre's current model (``directories``: genre -> its model directory), as plain dicts."""
    import dataclasses

    from composer.config import settings
    from composer.sampling.sample import Sampler
    from composer.serving.composition import genre_style
    from composer.serving.local import LocalComposerClient

    client = LocalComposerClient(models_dir=models_dir, device=device)
    out = {}
    for genre, directory in directories.items():
        sampler = Sampler.from_dir(directory, device, engine)
        style = genre_style(genre, settings().genres_dir)
        report = structure_report(sampler, cache_dir, genre, style, samples, seed)
        out[genre] = dataclasses.asdict(served_report(report, client, sampler, samples, seed))
    return out


def structure_rows(section: dict) -> list[dict]:
    """One genre's figures as the report's table rows: real pieces, then each kind of sample with its gaps."""

    def row(name: str, values: dict, verdicts: tuple) -> dict:
        gaps, within, noise = verdicts
        return {"name": name, "values": values, "gaps": gaps, "within": within, "within_noise": noise}

    none = (None, None, None)
    rows = [row("real validation pieces", section["real"], none)]
    named = {f"samples, plan {k}" if k != "free" else "samples, free": v for k, v in section["samples"].items()}
    if section.get("served"):
        named["served (best of the candidates, the genre's form)"] = section["served"]
    for name, values in named.items():
        rows.append(row(name, values, closeness(values, section["real"]) if values["windows"] else none))
    return rows
