"""A candidate beside the current version: is it better? (``composer report --candidate``).

A candidate is a training run's best model (``runs/<genre>/<run>/best``) or a published
version. Beside the genre's current version it gets: NLL on the genre's whole validation
split (the promotion gate's figure, from the card when it was measured on this very split),
NLL on the held-out excerpts of every genre prepared here (with the difference), the
n-gram baseline (``composer.training.baseline.genre_baseline``), sample measures (overlap
of note statistics with held-out pieces, NLL of each model's samples under the other) and a
plain verdict. Every measurement is cached like the rest of the report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from composer.analysis.measures import FEATURES, compare_features, set_features
from composer.codec import events
from composer.corpus.data import split_fingerprint
from composer.models.registry import NoModelError, check_version_name, list_versions, model_dir
from composer.report.cache import cached, file_sha1

log = logging.getLogger(__name__)

SAME = 0.0005
"""Differences under this (nats/event) are no difference: the figures are shown to 3 decimals."""


def find_candidate(genre: str, name: str, models_dir: Path, runs_dir: Path):
    """The candidate ``name``: a published version of the genre, else a run's best model.
    Raises FileNotFoundError naming what exists when neither does."""
    from composer.nn.model import WEIGHTS_FILE, read_card
    from composer.report.compute import GenreModel
    from composer.training.train import BEST_DIR

    check_version_name(name)  # a run name or a version name, never a path
    try:
        directory, kind = model_dir(genre, name, models_dir), "version"
    except NoModelError:
        directory, kind = runs_dir / genre / name / BEST_DIR, "run"
        if not (directory / WEIGHTS_FILE).is_file():
            runs = sorted(p.parent.parent.name for p in (runs_dir / genre).glob(f"*/{BEST_DIR}/{WEIGHTS_FILE}"))
            raise FileNotFoundError(
                f"genre {genre} has no version or finished run named '{name}' "
                f"(versions: {', '.join(list_versions(genre, models_dir)) or 'none'}; "
                f"runs with a best model: {', '.join(runs) or 'none'})"
            ) from None
    label = name if kind == "version" else f"run {name}"
    key = f"{genre}/{kind}:{name}@{file_sha1(directory / WEIGHTS_FILE)[:16]}"
    return GenreModel(genre, label, directory, read_card(directory), key), kind


def whole_split_nll(model, cache_dir: Path, cache: Path | None, device: str, refresh: bool = False) -> dict:
    """NLL on the genre's whole validation split: the card's figure when it was measured on this
    very split (as the promotion gate trusts it), else measured now (cached)."""
    from composer.nn.model import load_model
    from composer.training.evaluate import validation_nll

    split = split_fingerprint(cache_dir, model.genre)
    validation = model.card.get("validation", {})
    if validation.get("split") == split and model.card.get("validation_nll") is not None:
        return {"nll": model.card["validation_nll"], "events": validation.get("events"), "from": "card"}

    def compute() -> dict:
        loaded = load_model(model.directory, device)[0]
        result = validation_nll(loaded, cache_dir, model.genre, device, progress=f"{model.version}: validation NLL")
        return {"nll": result.nll_per_event, "events": result.events, "from": "measured"}

    return cached(cache, "whole", [model.key, split, device], compute, refresh)


def verdict(
    candidate: str, current: str | None, cand_nll: float, cur_nll: float | None, base: float | None, run: bool = False
) -> dict:
    """The plain answer: better by how much (promote it; a ``run`` is published first), or not
    (keep the current one)."""
    promote = "publish it as a version and promote it" if run else "promote it"
    beats_baseline = base is None or cand_nll < base
    if current is None or cur_nll is None:
        text = f"{candidate} would be the genre's first model ({cand_nll:.3f} nats/event)"
        return {"better": True, "delta": None, "text": text + ("." if beats_baseline else ", but the n-gram beats it.")}
    delta = cand_nll - cur_nll
    by = f"by {abs(delta):.3f} nats/event ({abs(delta) / cur_nll * 100 if cur_nll else 0.0:.1f} %)"
    if delta <= -SAME and beats_baseline:
        text = f"{candidate} is better than the current {current} {by}: {promote}."
        better = True
    elif delta <= -SAME:
        text = (
            f"{candidate} is better than the current {current} {by}, but the n-gram baseline "
            f"({base:.3f}) beats it: keep the current one."
        )
        better = False
    elif delta < SAME:
        text = f"{candidate} is no better than the current {current} (within {SAME} nats/event): keep the current one."
        better = False
    else:
        text = f"{candidate} is worse than the current {current} {by}: keep the current one."
        better = False
    return {"better": better, "delta": delta, "text": text}


def compare_candidate(
    genre: str,
    name: str,
    models_dir: Path,
    runs_dir: Path,
    cache_dir: Path,
    opts,
    prepared: list[str],
    refresh: bool = False,
) -> dict:
    """The candidate section of the report (plain JSON-ready dict); ``prepared``: the genres whose
    held-out pieces are here to score (the genre itself first)."""
    from composer.nn.model import load_model
    from composer.report.compute import (
        GenreModel,
        _with_bos,
        baseline_figures,
        generate_samples,
        heldout_sequences,
        learning_curves,
        score,
    )
    from composer.sampling.sample import piece_notes
    from composer.training.train import read_metrics

    cache = cache_dir / "report"
    candidate, kind = find_candidate(genre, name, models_dir, runs_dir)
    try:
        current = GenreModel.current(genre, models_dir)
    except NoModelError:
        current = None
    models = {"candidate": candidate, **({"current": current} if current else {})}
    loaded: dict[str, object] = {}

    def model_of(role: str):
        def load():
            if role not in loaded:
                loaded[role] = load_model(models[role].directory, opts.device)[0]
            return loaded[role]

        return load

    heldout = {g: heldout_sequences(cache_dir, g, opts.pieces, opts.events) for g in prepared}
    keys = {g: f"heldout:{g}:{split_fingerprint(cache_dir, g)}:{opts.pieces}:{opts.events}" for g in prepared}
    per_genre = []
    for g in prepared:
        row = {"genre": g}
        for role, model in models.items():
            row[role] = score(model, model_of(role), heldout[g], keys[g], cache, opts, refresh)["nll"]
        row["delta"] = row["candidate"] - row["current"] if current else None
        per_genre.append(row)
    whole = {role: whole_split_nll(m, cache_dir, cache, opts.device, refresh) for role, m in models.items()}
    base = baseline_figures(cache_dir, genre, opts.baseline_orders, heldout[genre], cache, refresh)

    real = [(events.decode(s[1:]), events.duration_steps(s[1:]) / events.STEPS_PER_SECOND) for s in heldout[genre]]
    real_set = set_features(real)
    samples, overlaps, cross = {}, {}, {}
    for role, model in models.items():
        samples[role] = generate_samples(model, opts, cache, refresh)["tokens"]
        gen = [(piece_notes(t), events.duration_steps(t) / events.STEPS_PER_SECOND) for t in samples[role]]
        overlaps[role] = {f: v["overlap"] for f, v in compare_features(real_set, set_features(gen)).items()}
    for role in models:  # each model's samples under the other, and under itself
        seqs = [_with_bos(t) for t in samples[role]]
        data_key = f"samples:{models[role].key}:{opts.samples}:{opts.seconds}:{opts.seed}"
        cross[role] = {other: score(models[other], model_of(other), seqs, data_key, cache, opts, refresh)["nll"]
                       for other in models}  # fmt: skip

    run_dir = candidate.directory.parent if kind == "run" else None
    curve = learning_curves(candidate.directory) if kind == "version" else [_run_curve(read_metrics(run_dir))]
    result = {
        "genre": genre,
        "kind": kind,
        "candidate": candidate.version,
        "candidate_dir": str(candidate.directory),
        "current": current.version if current else None,
        "whole": {role: w["nll"] for role, w in whole.items()},
        "whole_from": {role: w["from"] for role, w in whole.items()},
        "whole_events": whole["candidate"]["events"],
        "per_genre": per_genre,
        "baseline": {"order": base["best_order"], "nll": base["best_whole"]},
        "overlaps": overlaps,
        "features": list(FEATURES),
        "samples_nll": cross,
        "curves": curve,
    }
    result["verdict"] = verdict(
        result["candidate"],
        result["current"],
        result["whole"]["candidate"],
        result["whole"].get("current"),
        base["best_whole"],
        run=kind == "run",
    )
    return result


def _run_curve(records: list[dict]) -> dict:
    """A run's own metrics as one learning-curve stage."""
    return {
        "stage": "candidate run",
        "train": [[r["step"], r["train_loss"]] for r in records if "train_loss" in r],
        "val": [[r["step"], r["val_nll"]] for r in records if "val_nll" in r],
        "val_events": next((r["val_events"] for r in records if "val_events" in r), None),
        "start_from_step": None,
    }
