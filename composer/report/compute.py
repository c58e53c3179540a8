"""The model report's experiments: every figure the page shows, measured and cached.

``compute_report`` measures (and caches under ``<cache>/report/``) everything the page shows:

* the learning curves stored with each model (``training/*metrics.jsonl``: the fine-tune
  and, when recorded, the pre-training run it started from);
* validation NLL against an interpolated Witten-Bell n-gram (``composer.training.baseline``) fitted
  exactly as ``composer baseline`` fits it (all training sequences, every order asked for);
* the genre-fidelity matrices: mean NLL per event of every genre's held-out pieces (capped
  to N pieces x M events) and of every model's samples (K seeds x S seconds), scored by
  every genre model; rows are the data's genre, columns the scoring model;
* histograms of pitch, velocity, inter-onset interval, note density and polyphony in the
  samples against the same held-out excerpts, with the overlapping area of the two
  normalized histograms (sum of min(p, q); a simpler stand-in for Yang & Lerch 2018's KDE);
* piano rolls of a few samples;
* the training studies kept under ``data/studies/`` (``composer study``): several runs of
  one genre with their validation and training-piece NLL, read fresh on every render.

The music measures live in ``composer.analysis.measures``, the cache in ``composer.report.cache``;
``composer.report.page`` turns the plain dict into the HTML page and ``composer.report.text``
prints its tables for the CLI.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from composer.analysis.measures import compare_features, set_features
from composer.codec import events
from composer.config import settings
from composer.corpus.data import split_fingerprint
from composer.models.registry import genres_with_models
from composer.report.cache import cached, digest, file_sha1, sampler_code
from composer.training.baseline import BASELINE_ORDERS
from composer.training.study import load_studies

log = logging.getLogger(__name__)

REPORT_FORMAT = 2  # bump when the report's own figures (features, bins) change: the report cache key


@dataclass(frozen=True)
class ReportOptions:
    pieces: int = 16
    """Held-out pieces per genre for the fidelity matrix and the histograms."""
    events: int = 2000
    """Events from the start of each held-out piece."""
    samples: int = 8
    """Samples per genre model (seeds seed, seed + 1, ...)."""
    seconds: float = 30.0
    """Length of each sample."""
    seed: int = 1000
    temperature: float = 1.0
    baseline_orders: tuple[int, ...] = BASELINE_ORDERS
    rolls: int = 2
    """Piano rolls (with their audio) per genre."""
    structure_samples: int = 12
    """30 s pieces per genre, and per way of composing, for the keys and themes section (0: none)."""
    device: str = "cpu"
    engine: str = "auto"

    def validate(self) -> None:
        if self.pieces < 1 or self.events < 16 or self.samples < 1 or self.rolls < 0 or self.structure_samples < 0:
            raise ValueError(
                "pieces and samples must be at least 1, events at least 16, rolls and structure samples not negative"
            )
        if not 0 < self.seconds <= 600:
            raise ValueError(f"seconds must be in (0, 600], got {self.seconds:g}")
        if not self.baseline_orders or min(self.baseline_orders) < 1 or max(self.baseline_orders) > 7:
            raise ValueError("baseline orders must lie in 1..7")


# ---------------------------------------------------------------- models and data


@dataclass
class GenreModel:
    genre: str
    version: str
    directory: Path
    card: dict
    key: str  # genre/version@weights-sha1: what every cached figure of this model is keyed on

    @classmethod
    def current(cls, genre: str, models_dir: Path) -> GenreModel:
        from composer.models.registry import model_dir
        from composer.nn.model import WEIGHTS_FILE, read_card

        directory = model_dir(genre, None, models_dir)
        card = read_card(directory)
        key = f"{genre}/{directory.name}@{file_sha1(directory / WEIGHTS_FILE)[:16]}"
        return cls(genre, directory.name, directory, card, key)


def is_prepared(cache_dir: Path, genre: str) -> bool:
    """Whether the genre's validation split is in the token cache (the report can score it)."""
    from composer.corpus.data import genre_cache_dir

    folder = genre_cache_dir(cache_dir, genre)
    return (folder / "index.json").is_file() and (folder / "validation.npz").is_file()


def heldout_sequences(cache_dir: Path, genre: str, pieces: int, max_events: int) -> list[np.ndarray]:
    """BOS + the first ``max_events`` events of ``pieces`` validation pieces spread evenly over the split."""
    from composer.corpus.data import TokenBundle

    bundle = TokenBundle.load(cache_dir, genre, "validation")
    if len(bundle) == 0:
        raise ValueError(f"genre {genre!r} has no validation pieces in {cache_dir}")
    picks = np.unique(np.linspace(0, len(bundle) - 1, min(pieces, len(bundle))).round().astype(int))
    out = []
    for i in picks:
        seq = bundle.sequence(int(i)).astype(np.int64)
        body = seq[1:][seq[1:] < events.NUM_EVENTS][:max_events]
        if len(body):
            out.append(np.concatenate([[events.BOS], body]))
    return out


def _with_bos(tokens: Sequence[int]) -> np.ndarray:
    return np.concatenate([[events.BOS], np.asarray(tokens, dtype=np.int64)]).astype(np.int64)


# ---------------------------------------------------------------- learning curves


def learning_curves(directory: Path) -> list[dict]:
    """The training runs recorded with a model: ``training/<stage>-metrics.jsonl``, pre-training first."""
    folder = directory / "training"
    files = sorted(folder.glob("*metrics.jsonl")) if folder.is_dir() else []
    # pre-training, then the fine-tunes of the models it descends from (``folk-v1-finetune-...``), then its own
    files.sort(key=lambda p: (0 if p.name.startswith("pre") else 2 if p.name.startswith("finetune") else 1, p.name))
    init_from = _init_from(directory)
    stages = []
    for path in files:
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        stage = path.name.removesuffix("metrics.jsonl").rstrip("-_") or "training"
        curve = {
            "stage": stage,
            "train": [[r["step"], r["train_loss"]] for r in records if "train_loss" in r],
            "val": [[r["step"], r["val_nll"]] for r in records if "val_nll" in r],
            "val_events": next((r["val_events"] for r in records if "val_events" in r), None),
            "start_from_step": None,
        }
        stages.append(curve)
    if len(stages) > 1 and stages[0]["stage"].startswith("pre"):
        # Which point of the pre-training run the fine-tune started from: a step in the name, else the best.
        match = re.search(r"step(\d+)", init_from)
        if match:
            stages[0]["start_from_step"] = int(match.group(1))
        elif stages[0]["val"]:
            stages[0]["start_from_step"] = min(stages[0]["val"], key=lambda sv: sv[1])[0]
    return stages


def _init_from(directory: Path) -> str:
    try:
        return json.loads((directory / "card.json").read_text()).get("training", {}).get("init_from", "") or ""
    except (OSError, ValueError):
        return ""


# ---------------------------------------------------------------- the n-gram baseline


def baseline_figures(
    cache_dir: Path, genre: str, orders: Sequence[int], subset: Sequence[np.ndarray], cache: Path | None, refresh=False
) -> dict:
    """n-gram NLL (nats/event) on the genre's whole validation split and on the fidelity subset, per
    order: ``composer.training.baseline.genre_baseline`` (the one baseline every command shows), cached."""
    from composer.training.baseline import genre_baseline

    orders = sorted(set(orders))
    subset_key = digest([s.tolist() for s in subset])

    def compute() -> dict:
        return genre_baseline(cache_dir, genre, orders, subset)

    key = [genre, split_fingerprint(cache_dir, genre), orders, subset_key]
    return cached(cache, "baseline", key, compute, refresh)


# ---------------------------------------------------------------- sampling and scoring


def generate_samples(model: GenreModel, opts: ReportOptions, cache: Path | None, refresh=False) -> dict:
    """``{"tokens": [...], "engine": ...}``: ``opts.samples`` pieces from the model, seeds ``opts.seed + i``."""
    from composer.sampling.sample import Sampler, SampleRequest

    def compute() -> dict:
        log.info("%s: sampling %d x %g s", model.genre, opts.samples, opts.seconds)
        sampler = Sampler.from_dir(model.directory, opts.device, opts.engine)
        requests = [SampleRequest(opts.seconds, opts.seed + i, opts.temperature) for i in range(opts.samples)]
        return {"tokens": [t.astype(int).tolist() for t in sampler.generate(requests)], "engine": sampler.engine}

    key = [
        model.key,
        opts.samples,
        opts.seconds,
        opts.seed,
        opts.temperature,
        opts.device,
        opts.engine,
        sampler_code(),
    ]
    return cached(cache, "samples", key, compute, refresh)


def score(model: GenreModel, loaded, sequences: Sequence[np.ndarray], data_key: str, cache, opts, refresh=False):
    """Mean NLL per event of ``sequences`` under a model (cached per model and data)."""
    from composer.training.evaluate import sequences_nll

    def compute() -> dict:
        total, count = sequences_nll(loaded(), list(sequences), opts.device)
        return {"nll": total / count if count else float("nan"), "events": count}

    return cached(cache, "nll", [model.key, data_key, opts.device], compute, refresh)


def fidelity_matrix(
    rows: dict[str, list[np.ndarray]],
    row_keys: dict[str, str],
    models: dict[str, GenreModel],
    cache: Path | None,
    opts: ReportOptions,
    refresh: bool = False,
) -> dict:
    """rows: data genre -> sequences; columns: every model. Cell = mean NLL per event."""
    from composer.nn.model import load_model

    loaded_models: dict[str, object] = {}
    cols = list(models)
    nll = [[0.0] * len(cols) for _ in rows]
    counts = [[0] * len(cols) for _ in rows]
    for j, genre in enumerate(cols):

        def loaded(genre=genre):
            if genre not in loaded_models:
                loaded_models[genre] = load_model(models[genre].directory, opts.device)[0]
            return loaded_models[genre]

        for i, row in enumerate(rows):
            cell = score(models[genre], loaded, rows[row], row_keys[row], cache, opts, refresh)
            nll[i][j], counts[i][j] = cell["nll"], cell["events"]
        loaded_models.pop(genre, None)
    return matrix_summary(list(rows), cols, nll, counts)


def matrix_summary(rows: list[str], cols: list[str], nll: list[list[float]], counts: list[list[int]]) -> dict:
    row_min = [int(np.nanargmin(r)) for r in nll]
    diagonal = [cols[m] == rows[i] if rows[i] in cols else None for i, m in enumerate(row_min)]
    judged = [d for d in diagonal if d is not None]
    return {
        "rows": rows,
        "cols": cols,
        "nll": nll,
        "events": counts,
        "row_min": row_min,
        "diagonal_wins": diagonal,
        "diagonal_wins_all": bool(judged) and all(judged),
    }


# ---------------------------------------------------------------- the whole report


def _model_info(model: GenreModel, cache_dir: Path) -> dict:
    card = model.card
    validation = card.get("validation", {})
    from composer.corpus.data import genre_cache_dir

    index_file = genre_cache_dir(cache_dir, model.genre) / "index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    held = [f for f in index.get("files", []) if f["split"] == "validation"]
    # The fingerprint names cache files by path, so a cache prepared elsewhere differs; the same
    # number of pieces and events is the same split for this purpose.
    same_split = bool(validation.get("split")) and validation.get("split") == index.get("fingerprint")
    same_split = same_split or (
        validation.get("pieces") == len(held) and validation.get("events") == sum(f["events"] for f in held)
    )
    training = card.get("training", {})
    return {
        "genre": model.genre,
        "version": model.version,
        "key": model.key,
        "description": card.get("description", ""),
        "date": card.get("date", ""),
        "parameters": card.get("parameters"),
        "config": card.get("config", {}),
        "validation_nll": card.get("validation_nll"),
        "validation_pieces": validation.get("pieces"),
        "validation_events": validation.get("events"),
        "split_matches_cache": same_split,
        "init_from": training.get("init_from", ""),
        "steps": training.get("step"),
    }


def compute_fidelity(
    models_dir: Path, cache_dir: Path, opts: ReportOptions, genres: Sequence[str] | None = None, refresh=False
) -> dict:
    """Both fidelity matrices over ``genres`` (default: every genre with a current model)."""
    opts.validate()
    cache = cache_dir / "report"
    genres = list(genres or genres_with_models(models_dir, loadable=True))
    if not genres:
        raise FileNotFoundError(f"no genre in {models_dir} has a current model")
    models = {g: GenreModel.current(g, models_dir) for g in genres}
    heldout = {g: heldout_sequences(cache_dir, g, opts.pieces, opts.events) for g in genres}
    heldout_keys = {g: f"heldout:{g}:{split_fingerprint(cache_dir, g)}:{opts.pieces}:{opts.events}" for g in genres}
    sampled = {g: generate_samples(models[g], opts, cache, refresh) for g in genres}
    samples = {g: sampled[g]["tokens"] for g in genres}
    sample_seqs = {g: [_with_bos(t) for t in samples[g]] for g in genres}
    sample_keys = {g: "samples:" + digest(samples[g]) for g in genres}
    log.info("scoring held-out pieces with every model")
    real = fidelity_matrix(heldout, heldout_keys, models, cache, opts, refresh)
    log.info("scoring samples with every model")
    generated = fidelity_matrix(sample_seqs, sample_keys, models, cache, opts, refresh)
    return {
        "genres": genres,
        "models": models,
        "heldout": heldout,
        "samples": samples,
        "engines": {g: sampled[g]["engine"] for g in genres},
        "matrices": {"heldout": real, "samples": generated},
    }


def compute_report(
    models_dir: Path,
    cache_dir: Path,
    opts: ReportOptions | None = None,
    genres: Sequence[str] | None = None,
    refresh: bool = False,
    studies_dir: Path | None = None,
    candidate: str | None = None,
    runs_dir: Path | None = None,
) -> dict:
    """Every figure of the report as a plain dict (JSON-ready); cached under ``cache_dir/report``.

    ``genres`` picks the models the curves, baselines, histograms and piano rolls are about;
    the fidelity matrices span every genre that has a current model and is prepared here
    (``fidelity_missing`` names the others). ``candidate``: a run (under ``runs_dir``) or a
    version of the one genre asked, set beside its current version with a verdict
    (``composer.report.candidate``).
    """
    opts = opts or ReportOptions()
    opts.validate()
    cache = cache_dir / "report"
    with_models = genres_with_models(models_dir, loadable=True)
    everyone = [g for g in with_models if is_prepared(cache_dir, g)]
    chosen = list(genres or everyone)
    unknown = [g for g in chosen if g not in with_models]
    if unknown:
        raise FileNotFoundError(f"no current model for {', '.join(unknown)} in {models_dir}")
    unprepared = [g for g in chosen if g not in everyone]
    if unprepared:
        first = unprepared[0]
        raise FileNotFoundError(f"{', '.join(unprepared)} not prepared here: run `composer prepare --genre {first}`")
    if not chosen:
        raise FileNotFoundError(f"no genre in {models_dir} has a current model and a prepared corpus")
    if candidate and len(chosen) != 1:
        raise ValueError("a candidate is compared within one genre: name it with --genre")
    if candidate:  # refused now, not after the report's minutes of work
        from composer.report.candidate import find_candidate

        find_candidate(chosen[0], candidate, models_dir, runs_dir or settings().runs_dir)
    models = {g: GenreModel.current(g, models_dir) for g in everyone}
    key = [
        {g: m.key for g, m in models.items()},
        {g: split_fingerprint(cache_dir, g) for g in everyone},
        chosen,
        asdict(opts),
        sampler_code(),
    ]

    def compute() -> dict:
        fid = compute_fidelity(models_dir, cache_dir, opts, everyone, refresh)
        report: dict = {
            "format": REPORT_FORMAT,
            "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "options": asdict(opts),
            "genres": chosen,
            "fidelity_genres": everyone,
            "models": {g: _model_info(models[g], cache_dir) for g in chosen},
            "curves": {g: learning_curves(models[g].directory) for g in chosen},
            "baseline": {},
            "fidelity": fid["matrices"],
            "sample_engines": fid["engines"],
            "features": {},
            "rolls": {},
        }
        real_idx = fid["matrices"]["heldout"]
        for g in chosen:
            base = baseline_figures(cache_dir, g, opts.baseline_orders, fid["heldout"][g], cache, refresh)
            i, j = real_idx["rows"].index(g), real_idx["cols"].index(g)
            base["model_subset"] = real_idx["nll"][i][j]
            base["model_whole"] = models[g].card.get("validation_nll")
            report["baseline"][g] = base
            real_pieces = []
            for seq in fid["heldout"][g]:
                body = seq[1:]
                real_pieces.append((events.decode(body), events.duration_steps(body) / events.STEPS_PER_SECOND))
            from composer.sampling.sample import piece_notes

            gen_pieces = [
                (piece_notes(np.asarray(t)), events.duration_steps(t) / events.STEPS_PER_SECOND)
                for t in fid["samples"][g]
            ]
            report["features"][g] = compare_features(set_features(real_pieces), set_features(gen_pieces))
            report["rolls"][g] = [
                {"seed": opts.seed + k, "tokens": fid["samples"][g][k]} for k in range(min(opts.rolls, opts.samples))
            ]
        return report

    report = cached(cache, "report", [REPORT_FORMAT, key], compute, refresh)
    report["structure"] = {}
    if opts.structure_samples:
        from composer.report.form_and_key import structure_section
        from composer.serving.composition import genre_style

        def keys_and_themes() -> dict:
            directories = {g: models[g].directory for g in chosen}
            return structure_section(
                directories, models_dir, cache_dir, opts.structure_samples, opts.seed, opts.device, opts.engine
            )

        # How each genre composes (its manifest's form, restate, key hold, echo, profile) changes
        # these figures without changing a model: part of their key.
        styles = {g: asdict(genre_style(g, settings().genres_dir)) for g in chosen}
        report["structure"] = cached(cache, "structure", [REPORT_FORMAT, key, styles], keys_and_themes, refresh)
    report["fidelity_missing"] = [g for g in with_models if g not in everyone]
    report["candidate"] = None
    if candidate:
        from composer.report.candidate import compare_candidate

        genre = chosen[0]
        report["candidate"] = compare_candidate(
            genre, candidate, models_dir, runs_dir or settings().runs_dir, cache_dir, opts,
            [genre, *(g for g in everyone if g != genre)], refresh,
        )  # fmt: skip
    # Studies are small files read as they are now, not part of the cached measurements.
    studies = load_studies(studies_dir) if studies_dir is not None else []
    report["studies"] = [st for st in studies if st.get("genre") in chosen]
    return report
