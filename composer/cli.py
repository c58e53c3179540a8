"""The ``composer`` command line: encode, decode, prepare, train, eval, sample, structure, report, serve.

Each command parses its options, calls the library and prints; the rules live in the
library (versions: composer.models.registry; training settings: TrainConfig in
composer.training.config, one ``composer train`` option per field). A refusal is one line
on stderr and exit code 2 (a promotion refused because the candidate is worse: exit code 1).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import typer

from composer.config import settings

app = typer.Typer(
    help="Compose expressive piano music with Performance RNN models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> NoReturn:
    """A one-line error on stderr and a non-zero exit; no traceback for user errors."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _out_folder(out: Path) -> None:
    """Refuse, before any work, to write into a folder that does not exist (a typo, not a place to create)."""
    if not out.parent.is_dir():
        fail(f"{out.parent}: no such folder (for --out {out})")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="More logging.")) -> None:
    from pydantic import ValidationError

    _setup_logging(verbose)
    try:  # every command reads the settings: a wrong COMPOSER_* value is one line here, not a traceback later
        settings()
    except ValidationError as exc:
        problems = [f"COMPOSER_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        fail("configuration: " + "; ".join(p.replace("Value error, ", "") for p in problems))


def _find_model(genre: str, version: str = "", directory: Path | None = None) -> Path:
    """The model a command uses: ``directory`` when given, else the genre's version (default: the current one)."""
    from composer.corpus.genres import UnknownGenreError, load_genre
    from composer.models.registry import NoModelError, model_dir

    try:
        load_genre(genre)
        return directory or model_dir(genre, version or None)
    except (UnknownGenreError, NoModelError) as exc:
        fail(str(exc))


def _known_genre(genre: str) -> None:
    """Refuse a genre without a manifest (a typo) with the list of known ones, before any work."""
    from composer.corpus.genres import UnknownGenreError, load_genre

    try:
        load_genre(genre)
    except (UnknownGenreError, ValueError) as exc:
        fail(str(exc))


def _os_error(exc: OSError) -> str:
    """An OSError as one line: what failed and where, without the Python repr."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _with_train_options(after: str):
    """Give a command one option per training hyper-parameter, placed after its parameter
    ``after``: flag, default, help and bounds come from TrainConfig (composer.training.config),
    and the command receives them in its ``**hyperparameters``."""

    def decorate(command):
        from composer.training.config import train_options

        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(command, eval_str=True).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        generated = [
            inspect.Parameter(
                o.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(o.default, o.flag, help=o.help, min=o.min, max=o.max),
                annotation=o.type,
            )
            for o in train_options()
        ]
        clash = {p.name for p in own} & {p.name for p in generated}
        assert not clash, f"{command.__name__}'s own options shadow TrainConfig's: {clash}"
        at = [p.name for p in own].index(after) + 1
        command.__signature__ = inspect.Signature([*own[:at], *generated, *own[at:]])
        return command

    return decorate


@app.command()
def encode(
    midi_file: Path = typer.Argument(..., help="A .mid/.midi file."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the token array (.npy)."),
) -> None:
    """Encode a MIDI file into Performance RNN event tokens (a .npy int16 array)."""
    import numpy as np

    from composer.codec import events
    from composer.codec.midi import MidiError, load_notes

    _out_folder(out)
    try:
        notes = load_notes(midi_file)
    except MidiError as exc:
        fail(str(exc))
    tokens = events.encode(notes)
    np.save(out, tokens)
    typer.echo(f"{midi_file}: {len(notes)} notes -> {len(tokens)} events -> {out}")


@app.command()
def decode(
    token_file: Path = typer.Argument(..., help="A .npy array of event tokens."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the MIDI file."),
) -> None:
    """Decode event tokens (.npy) back into a MIDI file."""
    import numpy as np

    from composer.codec import events
    from composer.codec.midi import save_notes

    if not token_file.is_file():
        fail(f"{token_file}: no such file")
    _out_folder(out)
    try:
        tokens = np.load(token_file, allow_pickle=False)
    except ValueError as exc:
        fail(f"{token_file}: not a .npy token array ({exc})")
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        fail(f"{token_file}: expected a 1-D integer array, got {tokens.dtype} {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= events.VOCAB_SIZE):
        fail(f"{token_file}: token ids must lie in 0..{events.VOCAB_SIZE - 1}")
    notes = events.decode(tokens)
    save_notes(notes, out)
    typer.echo(f"{token_file}: {len(tokens)} events -> {len(notes)} notes -> {out}")


@app.command()
def roundtrip(
    folders: list[Path] = typer.Argument(..., help="Folders of MIDI files (searched recursively)."),
    limit: int = typer.Option(0, help="Check at most this many files per folder, spread evenly (0: all)."),
) -> None:
    """Check the codec on real files: share of notes whose pitch, onset and velocity bin survive."""
    from composer.codec import events
    from composer.codec.midi import MidiError, find_midi_files, load_notes

    for folder in folders:
        if not folder.is_dir():
            fail(f"{folder}: no such folder")

    typer.echo(f"{'folder':<28} {'files':>6} {'notes':>11} {'kept':>11} {'share':>8}")
    for folder in folders:
        paths = find_midi_files(folder)
        if limit and len(paths) > limit:
            paths = paths[:: len(paths) // limit][:limit]
        files = notes_total = kept = 0
        for path in paths:
            try:
                notes = load_notes(path)
            except MidiError as exc:
                typer.echo(f"skipped {exc}", err=True)
                continue
            files += 1
            notes_total += len(notes)
            kept += events.round_trip_kept(notes)
        share = kept / notes_total if notes_total else float("nan")
        typer.echo(f"{folder.name:<28} {files:>6} {notes_total:>11,} {kept:>11,} {share:>8.4%}")


@app.command()
def prepare(
    genre: list[str] | None = typer.Option(None, "--genre", "-g", help="Genre(s) to prepare; default all."),
    data_root: Path | None = typer.Option(None, help="Root of the corpora (default: ../shared/data)."),
    cache_dir: Path | None = typer.Option(None, help="Where encoded tokens go (default: .cache)."),
    workers: int = typer.Option(0, help="Encoding processes (default: one per core)."),
) -> None:
    """Encode the genres' corpora into the token cache and print a summary table."""
    from composer.corpus.data import prepare_genre
    from composer.corpus.genres import UnknownGenreError, list_genres, load_genre

    cfg = settings()
    names = genre or list_genres()
    if not names:
        fail(f"no genre manifests in {cfg.genres_dir}")
    rows = []
    for name in names:
        try:
            spec = load_genre(name)
            report = prepare_genre(spec, data_root or cfg.data_root, cache_dir or cfg.cache_dir, workers or None)
        except (UnknownGenreError, FileNotFoundError, ValueError) as exc:
            fail(str(exc))
        if report.skipped:
            typer.echo(f"{name}: skipped {len(report.skipped)} unreadable or empty file(s)", err=True)
        for split, stats in report.splits.items():
            rows.append(
                (
                    name,
                    split,
                    stats.files,
                    stats.seconds / 3600,
                    stats.events,
                    len(report.skipped) if split == "train" else "",
                )
            )
        if not report.rebuilt:
            typer.echo(f"{name}: up to date, nothing to do", err=True)
    typer.echo(f"{'genre':<10} {'split':<11} {'files':>6} {'hours':>7} {'events':>11} {'skipped':>8}")
    for name, split, files, hours, n_events, skipped in rows:
        typer.echo(f"{name:<10} {split:<11} {files:>6} {hours:>7.2f} {n_events:>11,} {skipped!s:>8}")


@app.command()
@_with_train_options(after="run_name")
def train(
    genre: str = typer.Option(..., "--genre", "-g", help="The genre to train."),
    run_name: str = typer.Option(
        "", "--run-name", help="Run name under runs/<genre>/ (default: a new timestamp); an existing run resumes."
    ),
    publish: str = typer.Option("", help="When done, add the best model as this version under data/models/<genre>/."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
    device: str = typer.Option("", help="cpu, cuda, cuda:N (default: COMPOSER_DEVICE or auto)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    **hyperparameters,
) -> None:
    """Train a genre model (resumable: run it again with the same --run-name to continue)."""
    from contextlib import nullcontext
    from datetime import datetime

    import torch

    from composer.corpus.data import TokenBundle
    from composer.corpus.genres import load_genre
    from composer.models.registry import RegistryError, check_new_version, publish_run
    from composer.training.config import config_from_options
    from composer.training.train import BEST_DIR, data_specs, run_lock
    from composer.training.train import train as run_training

    if threads:
        torch.set_num_threads(threads)
    cfg = settings()
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 speaks for the run
    run_dir = cfg.runs_dir / genre / (run_name or datetime.now().strftime("%Y%m%d-%H%M%S"))
    tc = config_from_options(hyperparameters)
    try:
        spec = load_genre(genre)
        data_specs(spec, tc)  # every --pretrain-on genre exists
        reserve = 0
        if publish:
            check_new_version(genre, publish)  # refused now (taken, not a name, read-only), not after the training
            reserve = TokenBundle.load(cfg.cache_dir, genre, "validation").num_events  # --max-minutes counts it
        with run_lock(run_dir) if main_rank else nullcontext():
            summary = run_training(spec, cfg.cache_dir, run_dir, tc, device or cfg.device, not quiet, reserve)
            if not main_rank:  # the other ranks' view of the run is partial
                return
            shown = ("step", "best_nll", "best_step", "run_dir", "finished", "reserved_s")
            typer.echo(json.dumps({k: summary[k] for k in shown}))
            if publish:
                target = publish_run(run_dir / BEST_DIR, genre, publish, cfg.cache_dir)
                typer.echo(f"published {target}")
    except (RegistryError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(_os_error(exc))


@app.command()
def study(
    genre: str = typer.Option(..., "--genre", "-g"),
    name: str = typer.Option(..., help="The study's folder under data/studies/ (lower-case, dashes)."),
    runs: str = typer.Option(..., help="Comma-separated run names under runs/<genre>/, in the order to show them."),
    question: str = typer.Option(
        "What keeps a small corpus from overfitting?", help="What the study asks, shown in the report."
    ),
) -> None:
    """Keep finished runs' curves side by side as a study (shown by `composer report`)."""
    from composer.training.study import collect_study

    cfg = settings()
    run_dirs = [cfg.runs_dir / genre / r.strip() for r in runs.split(",") if r.strip()]
    missing = [str(d) for d in run_dirs if not d.is_dir()]
    if missing:
        fail(f"no such run: {', '.join(missing)}")
    try:
        result = collect_study(run_dirs, cfg.studies_dir / name, genre, question)
    except ValueError as exc:
        fail(str(exc))
    for run in result["runs"]:
        gap = "–" if run["final_gap"] is None else f"{run['final_gap']:+.3f}"
        typer.echo(
            f"{run['run']:<40} best {run['best_val']:.4f} @ {run['best_step']:>5}  "
            f"end {run['final_val']:.4f}  gap {gap}  ({run['label']})"
        )
    typer.echo(f"wrote {cfg.studies_dir / name}")


@app.command("eval")
def evaluate(
    genre: str = typer.Option(..., "--genre", "-g", help="Genre whose current model to evaluate."),
    data: Path | None = typer.Option(
        None, help="A folder (searched recursively) or file of MIDI; default: the genre's validation split."
    ),
    version: str = typer.Option("", help="Model version (default: the current one)."),
    model_dir: Path | None = typer.Option(None, help="Evaluate this model directory instead."),
    device: str = typer.Option("", help="cpu, cuda, cuda:N (default: auto)."),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line."),
) -> None:
    """Mean negative log-likelihood (nats per event) of a model on MIDI files."""
    from composer.config import pick_device
    from composer.nn.model import load_model
    from composer.training.evaluate import evaluate_model

    cfg = settings()
    dev = pick_device(device or cfg.device)
    directory = _find_model(genre, version, model_dir)
    model, card = load_model(directory, dev)
    try:
        res = evaluate_model(
            model,
            cfg.cache_dir,
            genre,
            data,
            dev,
            on_skip=lambda p, why: typer.echo(f"skipped {why}", err=True),
            progress=f"eval {genre} on {data or 'its validation split'}",
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    result = {"nll_per_event": res.nll_per_event, "files": res.files, "events": res.events}
    result.update(genre=genre, model=str(directory), version=card.get("version", ""), device=str(dev))
    if not as_json:
        typer.echo(f"{genre}: {res.nll_per_event:.4f} nats/event over {res.events:,} events in {res.files} files")
    typer.echo(json.dumps(result))


@app.command()
def sample(
    genre: str = typer.Option(..., "--genre", "-g", help="Genre to compose in."),
    seconds: float = typer.Option(30.0, help="Length of the piece in seconds (0 < s <= 600)."),
    seed: int | None = typer.Option(None, help="Random seed; the same seed gives the same piece."),
    temperature: float = typer.Option(1.0, help="Above 1: wilder; below 1: tamer."),
    top_p: float = typer.Option(
        1.0, help="Nucleus sampling: keep the smallest set of events with this much probability."
    ),
    primer: Path | None = typer.Option(None, help="A MIDI file to continue from."),
    primer_seconds: float = typer.Option(10.0, help="How much of the primer's end to continue from."),
    key: str = typer.Option("", help='A key for a conditioned model: "D minor", "F# major", "B flat minor".'),
    density: str = typer.Option("", help="Notes per second for a conditioned model, or calm, moderate or busy."),
    form: str = typer.Option("", help="A form plan (ABAB, AABB, AABA, AA) or free; default: the genre's."),
    candidates: int = typer.Option(
        1, help="Compose this many candidates per piece and keep the most musical (the composer service: 4)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the MIDI file."),
    count: int = typer.Option(1, help="Compose this many pieces in one batch (seeds seed, seed+1, ...)."),
    version: str = typer.Option("", help="Model version (default: the current one)."),
    model_dir: Path | None = typer.Option(None, help="Sample from this model directory instead (auditioning)."),
    device: str = typer.Option("", help="cpu, cuda, cuda:N (default: auto)."),
    engine: str = typer.Option(
        "auto", help="auto (int8 on x86 CPUs, half on CUDA, else fused), int8, int8w, fp16, half, fused or naive."
    ),
) -> None:
    """Compose a new piece and write it as MIDI."""
    import random
    import time

    from composer.codec import events
    from composer.codec.controls import control_vector, parse_density
    from composer.codec.keys import estimate_key, parse_key
    from composer.codec.midi import MidiError, load_notes, save_notes
    from composer.config import pick_device
    from composer.contract import CompositionError
    from composer.sampling.sample import MAX_SECONDS, Sampler, SampleRequest, piece_notes, primer_tokens
    from composer.serving.composition import (
        candidate_requests,
        genre_style,
        keep_and_place,
        piece_form,
        raced,
    )

    started = time.perf_counter()
    if not 0 < seconds <= MAX_SECONDS:
        fail(f"--seconds must be in (0, {MAX_SECONDS:g}], got {seconds:g}")
    if count < 1:
        fail("--count must be at least 1")
    _out_folder(out)
    directory = _find_model(genre, version, model_dir)
    prime = None
    if primer is not None:
        try:
            prime = primer_tokens(events.encode(load_notes(primer)), primer_seconds)
        except MidiError as exc:
            fail(str(exc))
    try:
        asked = control_vector(parse_key(key) if key else None, parse_density(density) if density else None)
    except ValueError as exc:
        fail(str(exc))
    controls = asked if key or density else None
    try:
        style = genre_style(genre, settings().genres_dir)
        plan = piece_form(form or None, style)
        seed = random.randrange(2**31) if seed is None else seed
        requests = [
            SampleRequest(
                seconds,
                seed + i,
                temperature,
                top_p,
                prime,
                controls,
                plan,
                **style.sampling_options(),
            )
            for i in range(count)
        ]
        groups = [candidate_requests(r, candidates) for r in requests]
    except CompositionError as exc:
        fail(exc.message)
    try:
        sampler = Sampler.from_dir(directory, pick_device(device or settings().device), engine)
    except ValueError as exc:
        fail(str(exc))
    try:
        scored = sampler.generate_scored([c for group in groups for c in group])
    except ValueError as exc:
        fail(str(exc))
    per_piece = [raced(scored[i * candidates : (i + 1) * candidates]) for i in range(count)]
    pieces = [
        keep_and_place(group, key or None, r.seed, style, primed=prime is not None)[1]
        for group, r in zip(per_piece, requests)
    ]
    outputs = [out] if count == 1 else [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(count)]
    for path, tokens, req in zip(outputs, pieces, requests):
        notes = piece_notes(tokens)
        save_notes(notes, path)
        heard = estimate_key(notes)
        typer.echo(
            f"{path}: {genre}, seed {req.seed}, {len(tokens)} events, {len(notes)} notes, "
            f"{events.duration_steps(tokens) / events.STEPS_PER_SECOND:.1f} s"
            + (f", sounds in {heard[0].name} (clarity {heard[1]:.2f})" if heard else "")
        )
    typer.echo(
        f"composed in {time.perf_counter() - started:.2f} s with {directory.parent.name}/{directory.name} "
        f"on {sampler.device}",
        err=True,
    )


BASELINE_ORDERS_OPTION = "2,3,4,5,6,7"
"""composer.training.baseline.BASELINE_ORDERS as an option's default (the CLI imports no numpy to start)."""


def _weights(text: str, option: str) -> list[float]:
    """The comma-separated numbers of a weights option such as ``--caches 0,0.3``; a one-line error otherwise."""
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        fail(f"{option}: {text!r} is not a list of numbers separated by commas")


def _orders(text: str) -> tuple[int, ...]:
    try:
        orders = tuple(sorted({int(o) for o in text.split(",") if o.strip()}))
    except ValueError:
        fail(f"n-gram orders must be numbers separated by commas, got '{text}'")
    if not orders or orders[0] < 1 or orders[-1] > 7:
        fail("n-gram orders must lie in 1..7")
    return orders


@app.command()
def baseline(
    genre: str = typer.Option(..., "--genre", "-g"),
    orders: str = typer.Option(
        BASELINE_ORDERS_OPTION,
        "--orders",
        "--order",
        help="n-gram orders to try (1..7, comma-separated); the best on validation is the baseline.",
    ),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line."),
) -> None:
    """The bar to beat: an n-gram model (Witten-Bell) fitted on the genre's training split, at the
    order that does best on its validation split (the same baseline the report shows)."""
    from composer.training.baseline import genre_baseline

    _known_genre(genre)
    tried = _orders(orders)
    try:
        res = genre_baseline(settings().cache_dir, genre, tried)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    per_order = {int(o): v["whole"] for o, v in res["orders"].items()}
    result = {
        "genre": genre,
        "order": res["best_order"],
        "nll_per_event": res["best_whole"],
        "events": res["events"],
        "orders": per_order,
    }
    if not as_json:
        for order, nll in per_order.items():
            typer.echo(f"  {order}-gram {nll:.4f}" + ("  <- best" if order == res["best_order"] else ""))
        typer.echo(
            f"{genre}: baseline {res['best_whole']:.4f} nats/event, {res['best_order']}-gram "
            f"(the best of orders {', '.join(map(str, tried))} on {res['events']:,} validation events)"
        )
    typer.echo(json.dumps(result))


def _report_options(pieces, events_per_piece, samples, seconds, seed, orders, rolls, device, threads, structure=0):
    import torch

    from composer.report.compute import ReportOptions

    torch.set_num_threads(max(threads, 1))
    try:
        opts = ReportOptions(
            pieces=pieces,
            events=events_per_piece,
            samples=samples,
            seconds=seconds,
            seed=seed,
            baseline_orders=tuple(int(o) for o in orders.split(",") if o.strip()),
            rolls=rolls,
            structure_samples=structure,
            device=device,
        )
        opts.validate()
    except ValueError as exc:
        fail(str(exc))
    return opts


@app.command()
def report(
    genre: list[str] | None = typer.Option(None, "--genre", "-g", help="Genre(s) to report on; default: --all."),
    all_genres: bool = typer.Option(False, "--all", help="Every genre that has a current model (the default)."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write (self-contained)."),
    candidate: str = typer.Option(
        "", help="A run under runs/<genre>/ or a version to set beside the genre's current one, with a verdict."
    ),
    pieces: int = typer.Option(16, help="Held-out pieces per genre (fidelity matrix, histograms)."),
    events_per_piece: int = typer.Option(2000, "--events", help="Events from the start of each held-out piece."),
    samples: int = typer.Option(8, help="Samples per genre model (seeds SEED, SEED+1, ...)."),
    seconds: float = typer.Option(30.0, help="Length of each sample in seconds."),
    seed: int = typer.Option(1000, help="Seed of the first sample."),
    baseline_orders: str = typer.Option(
        BASELINE_ORDERS_OPTION, help="n-gram orders to try for the baseline (1..7); the best on validation is shown."
    ),
    rolls: int = typer.Option(2, help="Piano rolls per genre, each with its audio."),
    structure_samples: int = typer.Option(
        12, help="30 s pieces per genre and way of composing for the keys and themes section (0: none)."
    ),
    refresh: bool = typer.Option(False, help="Recompute everything instead of reading .cache/report/."),
    threads: int = typer.Option(1, help="CPU threads for torch."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N."),
) -> None:
    """One self-contained HTML page: learning curves, n-gram baseline, genre fidelity, sample statistics,
    keys and themes, piano rolls with their audio."""
    from composer.report.compute import compute_report
    from composer.report.page import write_report
    from composer.report.text import format_candidate, format_matrix, format_overlaps

    cfg = settings()
    opts = _report_options(
        pieces, events_per_piece, samples, seconds, seed, baseline_orders, rolls, device, threads, structure_samples
    )
    try:
        data = compute_report(
            cfg.models_dir,
            cfg.cache_dir,
            opts,
            None if all_genres else genre,
            refresh,
            studies_dir=cfg.studies_dir,
            candidate=candidate or None,
            runs_dir=cfg.runs_dir,
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if data.get("candidate"):
        typer.echo(format_candidate(data["candidate"]))
    typer.echo(format_matrix(data["fidelity"]["heldout"], "held-out pieces: mean NLL per event"))
    typer.echo(format_matrix(data["fidelity"]["samples"], "samples: mean NLL per event"))
    typer.echo(format_overlaps(data["features"]))
    typer.echo(f"wrote {write_report(data, out)}")


@app.command()
def fidelity(
    pieces: int = typer.Option(16, help="Held-out pieces per genre."),
    events_per_piece: int = typer.Option(2000, "--events", help="Events from the start of each held-out piece."),
    samples: int = typer.Option(8, help="Samples per genre model."),
    seconds: float = typer.Option(30.0, help="Length of each sample in seconds."),
    seed: int = typer.Option(1000, help="Seed of the first sample."),
    refresh: bool = typer.Option(False, help="Recompute instead of reading .cache/report/."),
    threads: int = typer.Option(1, help="CPU threads for torch."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Only the JSON line."),
) -> None:
    """Genre-fidelity matrices: NLL of every genre's held-out pieces and samples under every genre model."""
    from composer.report.compute import compute_fidelity
    from composer.report.text import format_matrix

    cfg = settings()
    opts = _report_options(pieces, events_per_piece, samples, seconds, seed, "3", 0, device, threads)
    try:
        result = compute_fidelity(cfg.models_dir, cfg.cache_dir, opts, refresh=refresh)["matrices"]
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if not as_json:
        typer.echo(format_matrix(result["heldout"], "held-out pieces: mean NLL per event"))
        typer.echo(format_matrix(result["samples"], "samples: mean NLL per event"))
    typer.echo(json.dumps(result))


@app.command()
def structure(
    genre: str = typer.Option(..., "--genre", "-g", help="Genre whose current model to measure."),
    samples: int = typer.Option(24, help="30 s samples per form plan (seeds SEED, SEED+1, ...)."),
    forms: str = typer.Option(
        "", help="Comma-separated plans to compare: free, ABAB, AABB, AABA, AA (default: free and the genre's)."
    ),
    seed: int = typer.Option(2000, help="Seed of the first sample."),
    caches: str = typer.Option(
        "",
        help="Comma-separated neural-cache weights to compare under each plan "
        "(0: the model alone; default: 0 and the genre's own, if it names one).",
    ),
    echoes: str = typer.Option(
        "",
        help="Comma-separated echo lengths in seconds to compare under each plan (each new phrase played "
        "twice, with the genre's echo_gap between; 0: none; default: 0 and the genre's own, if it names one).",
    ),
    version: str = typer.Option("", help="Model version (default: the current one)."),
    model_dir: Path | None = typer.Option(None, help="Measure this model directory instead."),
    threads: int = typer.Option(1, help="CPU threads for torch."),
    served: bool = typer.Option(
        True,
        help="Also measure pieces as the composer serves them (current model only): best of its "
        "candidates, the genre's form, and every key asked in turn.",
    ),
    profile: bool = typer.Option(
        False, "--profile", help="Only measure the genre's training pieces and print its manifest's [structure]."
    ),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line."),
) -> None:
    """Keys and themes: key clarity and steadiness, melodic recurrence and stuck loops of real pieces
    against samples (free and to a form plan) and served pieces, and how often a piece is in the key asked."""
    import dataclasses

    import torch

    from composer.contract import FORMS, FREE_FORM, MAX_ECHO_SECONDS
    from composer.report.form_and_key import format_structure, structure_report
    from composer.sampling.sample import Sampler
    from composer.serving.composition import genre_style

    if profile:
        from composer.report.form_and_key import profile_toml, training_keys, training_pieces, training_profile

        try:
            played = training_pieces(settings().cache_dir, genre)
        except FileNotFoundError as exc:
            fail(f"{exc} (run `composer prepare --genre {genre}` first)")
        measured, keys = training_profile(played), training_keys(played)
        typer.echo(json.dumps({"structure": measured, "keys": keys}) if as_json else profile_toml(measured, keys))
        return
    directory = _find_model(genre, version, model_dir)
    style = genre_style(genre, settings().genres_dir)
    plans = [p.strip() for p in forms.split(",") if p.strip()] or None
    unknown = [p for p in plans or () if p not in (*FORMS, FREE_FORM)]
    if unknown:
        fail(f"--forms: {', '.join(unknown)} not among {', '.join((FREE_FORM, *FORMS))}")
    weights = _weights(caches, "--caches") or None
    if weights and (not all(0 <= w < 1 for w in weights) or len(set(weights)) < len(weights)):
        fail("--caches: each weight must be in [0, 1), each once")
    echo_lengths = _weights(echoes, "--echoes") or None
    if echo_lengths and (
        not all(0 <= e <= MAX_ECHO_SECONDS for e in echo_lengths) or len(set(echo_lengths)) < len(echo_lengths)
    ):
        fail(f"--echoes: each length must be in [0, {MAX_ECHO_SECONDS:g}] seconds, each once")
    torch.set_num_threads(threads)
    sampler = Sampler.from_dir(directory, "cpu")
    try:
        chosen = [None if p == FREE_FORM else p for p in plans] if plans else None
        result = structure_report(
            sampler, settings().cache_dir, genre, style, samples, seed, chosen, weights, echo_lengths
        )
    except FileNotFoundError as exc:
        fail(f"{exc} (run `composer prepare --genre {genre}` first)")
    if served and not version and model_dir is None:
        from composer.report.form_and_key import served_report
        from composer.serving.local import LocalComposerClient

        served_report(result, LocalComposerClient(device="cpu"), sampler, samples, seed)
    if not as_json:
        typer.echo(format_structure(result))
    typer.echo(json.dumps(dataclasses.asdict(result)))


@app.command("neural-cache")
def neural_cache(
    genre: str = typer.Option(..., "--genre", "-g", help="Genre whose current model to measure."),
    split: str = typer.Option("train", help="Pieces to measure on: train (to choose by) or validation (to check)."),
    pieces: int = typer.Option(30, help="Pieces drawn at random (seeded) from the split; 0: all."),
    max_events: int = typer.Option(3000, help="Events per piece at most."),
    weights: str = typer.Option("0.1,0.2,0.3,0.5", help="Comma-separated cache weights."),
    sharpness: float = typer.Option(0.0, help="The cosine similarity's inverse temperature (0: the default)."),
    version: str = typer.Option("", help="Model version (default: the current one)."),
    model_dir: Path | None = typer.Option(None, help="Measure this model directory instead."),
    threads: int = typer.Option(1, help="CPU threads for torch."),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line."),
) -> None:
    """How much a piece's own past predicts it: NLL of real pieces under the model alone and mixed
    with its neural cache (a pointer over the piece's earlier moments) at each weight."""
    import numpy as np
    import torch

    from composer.corpus.data import SPLIT_NAMES, TokenBundle
    from composer.nn.model import load_model
    from composer.sampling.cache import SHARPNESS, pieces_cached_nll
    from composer.training.evaluate import with_markers

    if split not in SPLIT_NAMES:
        fail(f"--split must be one of {', '.join(SPLIT_NAMES)}")
    mixes = _weights(weights, "--weights")
    if not mixes or not all(0 < w < 1 for w in mixes):
        fail("--weights: each weight must be above 0 and below 1")
    if sharpness < 0 or max_events < 2:
        fail("--sharpness must be at least 0 and --max-events at least 2")
    torch.set_num_threads(threads)
    model, card = load_model(_find_model(genre, version, model_dir))
    model.float()
    try:
        bundle = TokenBundle.load(settings().cache_dir, genre, split)
    except FileNotFoundError as exc:
        fail(f"{exc} (run `composer prepare --genre {genre}` first)")
    chosen = range(len(bundle))
    if 0 < pieces < len(bundle):
        chosen = sorted(np.random.default_rng(0).choice(len(bundle), pieces, replace=False).tolist())
    sequences = [with_markers(bundle.sequence(i).astype(np.int64)) for i in chosen]
    theta = sharpness or SHARPNESS
    nll, count = pieces_cached_nll(model, sequences, mixes, theta, max_events)
    result = {
        "genre": genre,
        "version": card.get("version", ""),
        "split": split,
        "pieces": len(sequences),
        "events": count,
        "sharpness": theta,
        "model_alone": nll[0],
        "with_cache": dict(zip(map(str, mixes), nll[1:])),
    }
    if not as_json:
        typer.echo(
            f"{genre} {result['version']}, {len(sequences)} {split} pieces, {count:,} events, sharpness {theta:g}"
        )
        typer.echo(f"model alone      {nll[0]:.4f} nats/event")
        for weight, value in zip(mixes, nll[1:]):
            typer.echo(f"cache weight {weight:<4g} {value:.4f} ({(value - nll[0]) / nll[0]:+.1%})")
    typer.echo(json.dumps(result))


@app.command()
def versions(genre: str = typer.Option(..., "--genre", "-g")) -> None:
    """List a genre's model versions with their validation NLL; * marks the current one."""
    from composer.models.registry import RegistryError, current_version, version_cards

    _known_genre(genre)
    try:
        cards = version_cards(genre)
    except RegistryError as exc:
        fail(str(exc))
    current = current_version(genre)
    for version, card in cards.items():
        mark = "*" if version == current else " "
        typer.echo(f"{mark} {version:<24} NLL {card.get('validation_nll', float('nan')):.4f}  {card.get('date', '')}")


@app.command()
def promote(
    genre: str = typer.Option(..., "--genre", "-g"),
    version: str = typer.Option(..., "--version", help="The candidate version to make current."),
    force: bool = typer.Option(False, help="Promote even if its validation NLL is worse."),
) -> None:
    """Make a version current, if its validation NLL is not worse than the current one's."""
    from composer.models.registry import NotBetterError, RegistryError
    from composer.models.registry import promote as make_current

    def show(scores: dict[str, float]) -> None:  # the current version's, then the candidate's
        typer.echo(f"{genre}: validation NLL " + ", ".join(f"{v} {nll:.4f}" for v, nll in scores.items()))

    _known_genre(genre)
    try:
        done = make_current(genre, version, force=force)
    except NotBetterError as exc:
        show(exc.scores)
        fail(str(exc), code=1)
    except RegistryError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(_os_error(exc))
    if not done.changed:
        typer.echo(f"{genre}: {version} is already current")
        return
    if done.scores:
        show(done.scores)
    typer.echo(f"{genre}: {version} is now current ({done.directory})")


@app.command()
def rollback(genre: str = typer.Option(..., "--genre", "-g")) -> None:
    """Make the previously current version current again."""
    from composer.models.registry import RegistryError
    from composer.models.registry import rollback as roll_back

    _known_genre(genre)
    try:
        version = roll_back(genre)
    except RegistryError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(_os_error(exc))
    typer.echo(f"{genre}: rolled back to {version}")


@app.command()
def bench(
    genre: str = typer.Option("folk", "--genre", "-g", help="Genre whose current model to time."),
    model_dir: Path | None = typer.Option(None, help="Time this model directory instead."),
    steps: int = typer.Option(400, help="Sampling steps per measurement."),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
    device: str = typer.Option("", help="cpu, cuda, cuda:N (default: auto)."),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line."),
) -> None:
    """Sampling speed: one stream, 64 streams, the plain nn.LSTM reference, a 30 s piece."""
    import torch

    from benchmarks.sampling import run_bench
    from composer.config import pick_device

    if threads:
        torch.set_num_threads(threads)
    directory = model_dir or _find_model(genre)
    result = run_bench(directory, pick_device(device or settings().device), steps)
    if not as_json:
        for key, value in result.items():
            typer.echo(f"{key:<32} {value:,.1f}" if isinstance(value, float) else f"{key:<32} {value}")
    typer.echo(json.dumps(result))


@app.command()
def render(
    midi_file: Path = typer.Argument(..., help="A .mid/.midi file."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write: .mp3, .ogg, .mp4 (with piano roll) or .wav."),
    soundfont: Path | None = typer.Option(None, help="A .sf2 SoundFont (default: COMPOSER_SOUNDFONT or FluidR3 GM)."),
    fmt: str | None = typer.Option(None, "--format", "-f", help="mp3, ogg, mp4 or wav (default: from --out)."),
    pianoroll: Path | None = typer.Option(None, help="Also write the piano roll as this PNG."),
    title: str | None = typer.Option(None, help="Title on the piano roll (default: the MIDI file's name)."),
) -> None:
    """Render a MIDI file to audio: FluidSynth piano with a little reverb, -16 LUFS, peaks under -1 dBFS."""
    from composer.audio.render import RenderError, render_audio

    if not midi_file.is_file():
        fail(f"{midi_file}: no such file")
    try:
        result = render_audio(midi_file, out, fmt, soundfont, title=title or midi_file.stem, pianoroll=pianoroll)
    except RenderError as exc:
        fail(str(exc))
    typer.echo(
        f"{result.path}: {result.format}, {result.duration_s:.1f} s, {result.loudness_lufs:.1f} LUFS, "
        f"peak {result.peak_dbfs:.1f} dBFS"
    )


@app.command("bench-render")
def bench_render(
    seconds: float = typer.Option(30.0, help="Length of the piece to render."),
    as_json: bool = typer.Option(False, "--json", help="Only the JSON line."),
) -> None:
    """Rendering speed: a piece (from the corpora when present) to WAV, MP3 and MP4, after a warm-up."""
    import tempfile
    import time

    from composer.audio.render import RenderError, bench_piece, render_audio

    if not 0 < seconds <= 600:
        fail(f"--seconds must be in (0, 600], got {seconds:g}")
    notes, source = bench_piece(seconds, settings().data_root)
    result: dict[str, float | int | str] = {}
    with tempfile.TemporaryDirectory(prefix="composer-bench-") as tmp:
        try:
            render_audio(notes[:8], Path(tmp) / "warmup.wav")  # imports and the SoundFont's page cache
            for fmt in ("wav", "mp3", "mp4"):
                started = time.perf_counter()
                render_audio(notes, Path(tmp) / f"piece.{fmt}", title="bench")
                result[f"{fmt}_s"] = round(time.perf_counter() - started, 3)
                if not as_json:
                    typer.echo(f"{fmt:<4} {result[f'{fmt}_s']:6.2f} s")
        except RenderError as exc:
            fail(str(exc))
    result.update(piece_s=seconds, notes=len(notes), source=source)
    typer.echo(json.dumps(result))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, help="TCP port."),
    models_dir: Path | None = typer.Option(None, help="Models to serve (default: COMPOSER_MODELS_DIR)."),
    max_batch: int = typer.Option(64, help="Most pieces sampled together per genre; 1 turns batching off."),
    queue_limit: int = typer.Option(256, help="Requests that may wait per genre; beyond that, 503."),
    timeout: float = typer.Option(300.0, help="Seconds a composition may take before the answer is 504."),
    max_seconds: float = typer.Option(600.0, help="Longest piece served, in seconds (at most 600)."),
    device: str = typer.Option("", help="cpu, cuda, cuda:N (default: COMPOSER_DEVICE or auto)."),
    engine: str = typer.Option(
        "auto", help="auto (int8 on x86 CPUs, half on CUDA, else fused), int8, int8w, fp16, half or fused."
    ),
    threads: int = typer.Option(0, help="CPU threads for torch (0: torch's default)."),
    log_level: str = typer.Option("info", help="uvicorn's log level."),
) -> None:
    """Run the composer HTTP service: docs at /docs, /healthz, /metrics; SIGHUP reloads promoted models."""
    from composer.sampling.sample import ENGINES, MAX_SECONDS
    from composer.serving.service import serve as run_service

    if max_batch < 1 or queue_limit < 0 or timeout <= 0:
        fail("--max-batch must be at least 1, --queue-limit at least 0 and --timeout positive")
    if not 0 < max_seconds <= MAX_SECONDS:
        fail(f"--max-seconds must be in (0, {MAX_SECONDS:g}]")
    if engine not in ENGINES:
        fail(f"--engine must be one of {', '.join(ENGINES)}")
    if models_dir is not None and not models_dir.is_dir():
        fail(f"{models_dir}: no such folder")
    run_service(
        host,
        port,
        log_level,
        threads,
        models_dir=models_dir,
        max_batch=max_batch,
        queue_limit=queue_limit,
        request_timeout_s=timeout,
        max_seconds=max_seconds,
        device=device or None,
        engine=engine,
    )


@app.command("bench-service")
def bench_service(
    clients: str = typer.Option("1,8,64", help="Comma-separated numbers of concurrent clients."),
    seconds: float = typer.Option(30.0, help="Length of each piece."),
    requests: int = typer.Option(0, help="Requests per run (0: twice the clients, at least 8)."),
    genre: str = typer.Option("folk", "--genre", "-g", help="Genre whose shipped model to serve."),
    max_batch: int = typer.Option(64, help="The batch cap when batching is on."),
    threads: int = typer.Option(1, help="CPU threads for the server's torch."),
    device: str = typer.Option("", help="cpu, cuda, cuda:N (default: auto)."),
) -> None:
    """Service throughput and latency with batching on and off; the last line is JSON."""
    from benchmarks.service import run_service_bench, table

    try:
        counts = [int(c) for c in clients.split(",") if c.strip()]
    except ValueError:
        fail(f"--clients must be numbers separated by commas, got {clients!r}")
    if not counts or min(counts) < 1 or not 0 < seconds <= 600 or requests < 0 or max_batch < 1:
        fail("--clients must be positive, --seconds in (0, 600], --requests and --max-batch not negative")
    result = run_service_bench(counts, seconds, requests, genre, max_batch, threads, device, echo=typer.echo)
    typer.echo(table(result))
    typer.echo(json.dumps(result))


if __name__ == "__main__":
    app()
