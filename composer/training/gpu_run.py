"""The GPU run, prepared before a GPU comes: pack here, train and measure there, publish back here.

A lent GPU machine comes rarely, for 15 minutes in all, with one command of at most 10
minutes; it has torch and numpy but not this project's other dependencies, and what travels
to it is capped. So the run is one prepared command (``scripts/gpu_run.sh``) with three
sub-commands of this module:

- ``pack`` (here, on the CPU): every genre's prepared token arrays (``.cache/genres/<g>/``)
  into one xz archive under ``gpu-carry/`` (ignored by git), plus wheels of what the
  training path imports and that machine lacks (pydantic-settings and its needs); reports
  what would travel. ``--stretches 1.0`` carries one time stretch of each training file
  instead of five (half the size); training files are subsampled, deterministically and by
  file, only when the archive would not fit (``--max-mib``, or what the travel limit leaves).
- ``run`` (there): unpacks the arrays, measures GPU sampling on the model it starts from
  (first: speed does not depend on training, so every second after it trains), pre-trains one
  model on all genres (from the shipped classical model by default), fine-tunes each genre
  from whichever of that model and the genre's own shipped model scores better on its
  validation pieces, each stage to a time budget under one hard deadline, with crops cut on
  the GPU, bf16 autocast (or TF32, whichever a short probe finds faster) and cuDNN's LSTM;
  scores each model on its whole validation split in its half-precision weights; and writes
  everything to ``--out``: one tar per genre (the model directory, its curves), the
  pre-train's curves, the log and ``figures.json``. Each genre's tar and the figures are
  written as soon as they exist, so a run stopped by its deadline still returns them.
- ``publish`` (back here): unpacks the tars, adds each model as a version with
  ``registry.publish_run`` (scored again on the whole validation split prepared here, its
  curves kept) and, with ``--promote``, promotes it when it is not worse.

``--conditioned`` trains key/density-conditioned models (TrainConfig.controls): controls
are computed once per piece on the GPU (``bundle_controls``, the same numbers as
``composer.codec.controls.piece_controls``) and cut with the crops.

The same code runs on a CPU with a tiny budget and tiny models (tests/test_gpu_run.py).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import importlib.metadata
import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
import types
import zlib
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

log = logging.getLogger("gpu_run")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CARRY_DIR = "gpu-carry"
DATA_ARCHIVE = "data.tar.xz"
WHEELS_DIR = "wheels"
MANIFEST = "manifest.json"
FIGURES = "figures.json"
PRETRAIN_TAR = "pretrain.tar"
TRAVEL_LIMIT_MIB = 64
SHIPPED_GENRES = ("classical", "pop", "folk", "chorale")
WHEELS = (
    "pydantic-settings",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "python-dotenv",
    "typing-extensions",
    "array-api-compat",
)
"""What ``composer.config`` and the sampler need and the GPU machine lacks (its image has torch, numpy,
safetensors, tqdm and matplotlib). pretty_midi is not carried: see ``_stand_in_for_pretty_midi``."""
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


# ---------------------------------------------------------------- pack (CPU side)


def _git_tracked_bytes(root: Path) -> int | None:
    """Bytes of the files git tracks under ``root`` (what travels besides the carried paths)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    total = 0
    for name in filter(None, names):
        path = root / os.fsdecode(name)
        if path.is_file():
            total += path.stat().st_size
    return total


def _stable_fraction(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2**32


def thin_train(
    genre_dir: Path, fraction: float = 1.0, stretches: tuple[float, ...] | None = None
) -> tuple[bytes, bytes, int, int]:
    """The genre's train.npz and index.json with about ``fraction`` of its training files (chosen
    by a hash of each path: the same files every time), each in the time ``stretches`` named
    (None: every one ``prepare`` made). Returns (npz bytes, index bytes, files kept, files in all)."""
    from composer.corpus.data import STRETCHES

    index = json.loads((genre_dir / "index.json").read_text())
    with np.load(genre_dir / "train.npz") as data:
        tokens, offsets = data["tokens"], data["offsets"]
    train_files = [f for f in index["files"] if f["split"] == "train"]
    per_file = len(STRETCHES)
    if per_file * len(train_files) != len(offsets) - 1:
        raise ValueError(f"{genre_dir}: train.npz does not hold {per_file} time stretches of every training file")
    picked = [STRETCHES.index(s) for s in stretches] if stretches else list(range(per_file))
    keep = [i for i, f in enumerate(train_files) if _stable_fraction(f["path"]) < fraction] or [0]
    streams = [i * per_file + j for i in keep for j in picked]
    lengths = np.diff(offsets)[streams]
    new_tokens = np.concatenate([tokens[offsets[k] : offsets[k + 1]] for k in streams])
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(offsets.dtype)
    kept_paths = {train_files[i]["path"] for i in keep}
    index["files"] = [f for f in index["files"] if f["split"] != "train" or f["path"] in kept_paths]
    index["thinned"] = {"train_files": [len(keep), len(train_files)], "stretches": [STRETCHES[j] for j in picked]}
    buf = io.BytesIO()
    np.savez(buf, tokens=new_tokens, offsets=new_offsets)
    return buf.getvalue(), json.dumps(index, indent=1).encode(), len(keep), len(train_files)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_data_archive(
    cache_dir: Path, genres: list[str], target: Path, fraction: float = 1.0, stretches: tuple[float, ...] | None = None
) -> None:
    """``genres/<g>/{train.npz,validation.npz,index.json}`` of each genre, xz-compressed; the
    training split thinned as ``thin_train`` does, the validation split whole."""
    from composer.corpus.data import genre_cache_dir

    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=6) as tar:
        for genre in genres:
            src = genre_cache_dir(cache_dir, genre)
            if fraction < 1.0 or stretches:
                npz, index, _, _ = thin_train(src, fraction, stretches)
                _add_bytes(tar, f"genres/{genre}/train.npz", npz)
                _add_bytes(tar, f"genres/{genre}/index.json", index)
            else:
                tar.add(src / "train.npz", f"genres/{genre}/train.npz")
                tar.add(src / "index.json", f"genres/{genre}/index.json")
            tar.add(src / "validation.npz", f"genres/{genre}/validation.npz")
    tmp.replace(target)


def download_wheels(target: Path) -> list[str]:
    """Wheels (CPython 3.12, x86-64 Linux) of ``WHEELS`` at the versions installed here."""
    target.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    command += ["--implementation", "cp", *platforms, "-d", str(target), *pins]
    subprocess.run(command, check=True, capture_output=True)
    return sorted(p.name for p in target.glob("*.whl"))


def pack(
    cache_dir: Path,
    genres: list[str],
    out: Path,
    max_mib: float = 0.0,
    wheels: bool = True,
    stretches: tuple[float, ...] | None = None,
    repo: Path = PROJECT_ROOT,
) -> dict:
    """Write the carry folder; returns (and writes as manifest.json) what it holds and its sizes.

    ``stretches``: carry only these time stretches of the training files (None: all five).
    ``max_mib``: the most the data archive may take (0: what is left of the travel limit
    after the tracked files and the wheels); over it, training files are subsampled, every
    genre alike, validation whole."""
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text("*\n")  # the whole folder stays out of git; the device tool carries it by name
    wheel_names: list[str] = []
    if wheels:
        wheel_names = download_wheels(out / WHEELS_DIR)
    wheel_bytes = sum(p.stat().st_size for p in (out / WHEELS_DIR).glob("*.whl")) if wheels else 0
    tracked = _git_tracked_bytes(repo)
    budget = max_mib * 2**20 if max_mib else TRAVEL_LIMIT_MIB * 2**20 - (tracked or 0) - wheel_bytes - 2**20
    archive = out / DATA_ARCHIVE
    fraction = 1.0
    write_data_archive(cache_dir, genres, archive, fraction, stretches)
    size = archive.stat().st_size
    if budget > 0 and size > budget:
        val = sum((cache_dir / "genres" / g / "validation.npz").stat().st_size for g in genres) / 8  # rough xz ratio
        fraction = max(0.02, min(1.0, (budget - val) / max(size - val, 1) * 0.95))
        write_data_archive(cache_dir, genres, archive, fraction, stretches)
        size = archive.stat().st_size
    elif budget <= 0:
        log.warning(
            "the tracked files alone (%.1f MiB) leave no room under %d MiB", (tracked or 0) / 2**20, TRAVEL_LIMIT_MIB
        )
    carry_bytes = size + wheel_bytes
    manifest = {
        "genres": genres,
        "data_archive": DATA_ARCHIVE,
        "data_bytes": size,
        "wheels": wheel_names,
        "wheel_bytes": wheel_bytes,
        "carry_bytes": carry_bytes,
        "carry_mib": round(carry_bytes / 2**20, 2),
        "subsampled": {"train_file_fraction": round(fraction, 4)} if fraction < 1 else {},
        "stretches": list(stretches) if stretches else "all",
        "tracked_bytes": tracked,
        "travels_mib": round(((tracked or 0) + carry_bytes) / 2**20, 2),
        "travel_limit_mib": TRAVEL_LIMIT_MIB,
        "fits": (tracked or 0) + carry_bytes <= TRAVEL_LIMIT_MIB * 2**20,
        "events": {g: _genre_events(cache_dir, g) for g in genres},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _genre_events(cache_dir: Path, genre: str) -> dict[str, int]:
    index = json.loads((cache_dir / "genres" / genre / "index.json").read_text())
    counts = {"train": 0, "validation": 0}
    for f in index["files"]:
        counts[f["split"]] += f["events"]
    return counts


# ---------------------------------------------------------------- the GPU machine's environment


def _stand_in_for_pretty_midi() -> bool:
    """Let ``composer.codec.midi`` import where pretty_midi is missing (the GPU machine).

    The run reads prepared token arrays only and never a MIDI file, so carrying pretty_midi
    (5.6 MB, most of it a sound font) would spend a third of what may travel on nothing. The
    stand-in's attributes raise ImportError, so a MIDI read would still fail loudly.
    Returns whether it was needed."""
    try:
        import pretty_midi  # noqa: F401
    except ImportError:
        stub = types.ModuleType(
            "pretty_midi", "Stand-in: pretty_midi is not installed here (see composer.training.gpu_run)."
        )

        def __getattr__(name: str):
            if name.startswith("__"):  # introspection (inspect, hasattr) asks for these
                raise AttributeError(name)
            raise ImportError(f"pretty_midi.{name}: pretty_midi is not installed on this machine")

        stub.__getattr__ = __getattr__
        sys.modules["pretty_midi"] = stub
        return True
    return False


def unpack_data(carry: Path, cache_dir: Path) -> list[str]:
    """Unpack the carried arrays into ``cache_dir`` (the layout ``composer prepare`` writes); their genres."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(carry / DATA_ARCHIVE) as tar:
        tar.extractall(cache_dir, filter="data")
    return sorted(p.name for p in (cache_dir / "genres").iterdir() if (p / "train.npz").is_file())


# ---------------------------------------------------------------- crops and controls on the device


def bundle_controls(tokens, offsets, device, max_cells: int = 1 << 24):
    """(len(tokens), CONTROL_DIM) float16: every piece's ``controls.piece_controls``, on ``device``.

    The pieces of a flat bundle are laid side by side on one time grid (each piece its own
    ``end + 2`` cells), so a few dozen tensor operations compute a whole chunk of pieces;
    the running sums that piece_controls starts at zero per piece are differences between
    two points of the same piece here, so what came before cancels."""
    import torch

    from composer.codec import controls, events

    tokens = torch.as_tensor(np.asarray(tokens), device=device).long()
    offsets = torch.as_tensor(np.asarray(offsets), device=device).long()
    out = torch.empty((tokens.numel(), controls.CONTROL_DIM), dtype=torch.float16, device=device)
    lengths = offsets[1:] - offsets[:-1]
    shift_all = torch.where(
        (tokens >= events.TIME_SHIFT) & (tokens < events.VELOCITY), tokens - events.TIME_SHIFT + 1, 0
    )
    piece_steps = torch.zeros(len(lengths), dtype=torch.long, device=device)
    nonempty = lengths > 0
    piece_ids = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
    piece_steps.index_add_(0, piece_ids, shift_all)
    cells = (piece_steps + 2).tolist()
    edges = torch.as_tensor(controls.DENSITY_EDGES, device=device, dtype=torch.float64)
    start = 0
    while start < len(cells):
        stop, total = start, 0
        while stop < len(cells) and (stop == start or total + cells[stop] <= max_cells):
            total += cells[stop]
            stop += 1
        a, b = int(offsets[start]), int(offsets[stop])
        if b > a:
            out[a:b] = _chunk_controls(tokens[a:b], lengths[start:stop], nonempty[start:stop], edges)
        start = stop
    return out


def _chunk_controls(tok, lengths, nonempty, density_edges):
    import torch

    from composer.codec import controls, events

    device = tok.device
    n = len(lengths)
    pid = torch.repeat_interleave(torch.arange(n, device=device), lengths)
    shift = torch.where((tok >= events.TIME_SHIFT) & (tok < events.VELOCITY), tok - events.TIME_SHIFT + 1, 0)
    inclusive = torch.cumsum(shift, 0)
    exclusive = inclusive - shift
    first = torch.cumsum(lengths, 0) - lengths
    last = first + lengths - 1
    first_c, last_c = first.clamp(max=len(tok) - 1), last.clamp(min=0)
    start_time = exclusive[first_c]
    end = torch.where(nonempty, inclusive[last_c] - start_time, 0)  # steps of each piece
    times = exclusive - start_time[pid]
    region = end + 2
    base = torch.cumsum(region, 0) - region
    grid = int(region.sum())
    cell = base[pid] + times
    on = tok < events.NOTE_OFF
    off = (tok >= events.NOTE_OFF) & (tok < events.TIME_SHIFT)
    change = torch.zeros((12, grid), dtype=torch.long, device=device)
    change.index_put_((tok[on] % 12, cell[on]), torch.ones_like(cell[on]), accumulate=True)
    change.index_put_(((tok[off] - events.NOTE_OFF) % 12, cell[off]), -torch.ones_like(cell[off]), accumulate=True)
    running = torch.cumsum(change, 1)
    del change
    before = torch.where(base > 0, running[:, (base - 1).clamp(min=0)], 0)  # (12, n): the sum carried in
    cell_piece = torch.repeat_interleave(torch.arange(n, device=device), region)
    sounding = (running - before[:, cell_piece]).clamp_(min=0)
    del running
    occupied = torch.cumsum(sounding, 1) - sounding  # occupied[c]: sounding summed over cells before c
    del sounding
    piece_end, piece_base = end[pid], base[pid]
    key_end = torch.minimum(times + controls.KEY_WINDOW_STEPS, piece_end)
    seconds = (occupied[:, piece_base + key_end] - occupied[:, cell]).T.double() / events.STEPS_PER_SECOND
    del occupied
    histogram = seconds + controls.HISTOGRAM_PRIOR
    onsets = torch.bincount(cell[on], minlength=grid)
    struck = torch.cumsum(onsets, 0) - onsets
    reach = torch.minimum(times + controls.DENSITY_WINDOW_STEPS, piece_end + 1)
    count = struck[piece_base + reach] - struck[cell]
    per_second = count.double() / (controls.DENSITY_WINDOW_STEPS / events.STEPS_PER_SECOND)
    bins = torch.searchsorted(density_edges, per_second, right=True)
    out = torch.zeros((len(tok), controls.CONTROL_DIM), dtype=torch.float32, device=device)
    out[:, controls.PITCH] = (histogram / histogram.sum(1, keepdim=True)).float()
    out[torch.arange(len(tok), device=device), controls.DENSITY.start + bins] = 1.0
    return out.half()


class DeviceCrops:
    """``composer.corpus.data.CropSampler`` with its data on the device: the same crops (uniform
    windows, a ``start_fraction`` of openings, PAD past a short piece's end, a transposition
    within the window's pitch range) and, for a conditioned model, their controls with
    ``controls.drop_controls``' dropout, cut with one gather each, so the GPU never waits
    for the CPU."""

    def __init__(self, bundle, length: int, transpose: int, seed: int, start_fraction: float, device, ctrl=None):
        import torch

        self.torch = torch
        self.device = device
        self.length = length
        self.transpose = transpose
        self.start_fraction = start_fraction
        self.tokens = torch.as_tensor(bundle.tokens.astype(np.int16), device=device)
        self.offsets = torch.as_tensor(bundle.offsets.astype(np.int64), device=device)
        lengths = self.offsets[1:] - self.offsets[:-1]
        self.windows = torch.clamp(lengths - length, min=1)
        self.cumulative = torch.cumsum(self.windows, 0)
        self.total = int(self.cumulative[-1])
        self.span = torch.arange(length + 1, device=device)
        self.ctrl = ctrl
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def batch(self, size: int, control_dropout: float = 0.0):
        """(size, length + 1) int64 tokens, and (size, length, CONTROL_DIM) float32 controls or None."""
        from composer.codec import controls, events

        torch, g, dev = self.torch, self.generator, self.device
        picks = torch.randint(0, self.total, (size,), generator=g, device=dev)
        seqs = torch.searchsorted(self.cumulative, picks, right=True)
        opening = torch.rand(size, generator=g, device=dev) < self.start_fraction
        start = torch.where(opening, 0, picks - (self.cumulative[seqs] - self.windows[seqs]))
        lo = self.offsets[seqs] + start
        hi = torch.minimum(lo + self.length + 1, self.offsets[seqs + 1])
        index = lo[:, None] + self.span
        valid = index < hi[:, None]
        index = index.clamp_(max=len(self.tokens) - 1)
        tokens = torch.where(valid, self.tokens[index].long(), events.PAD)
        semitones = None
        if self.transpose:
            note = valid & (tokens < events.TIME_SHIFT)
            pitch = tokens % events.NUM_PITCHES
            low = torch.where(note, pitch, events.NUM_PITCHES - 1).amin(1)
            high = torch.where(note, pitch, 0).amax(1)
            down = torch.clamp(-low, min=-self.transpose)
            up = torch.clamp(events.NUM_PITCHES - 1 - high, max=self.transpose)
            draw = torch.rand(size, generator=g, device=dev)
            semitones = down + torch.minimum((draw * (up - down + 1)).long(), up - down)
            semitones = torch.where(note.any(1), semitones, 0)
            tokens = torch.where(note, tokens + semitones[:, None], tokens)
        if self.ctrl is None:
            return tokens, None
        # controls[:, j] is the control of token j + 1 (the one predicted from input j)
        crop = self.ctrl[index[:, 1:]].float()
        none = torch.as_tensor(controls.NO_CONTROL, device=dev)
        crop = torch.where(valid[:, 1:, None], crop, none)
        if semitones is not None:
            classes = (torch.arange(12, device=dev)[None, :] - semitones[:, None]) % 12
            pitch_part = torch.gather(crop[..., controls.PITCH], 2, classes[:, None, :].expand(-1, self.length, -1))
            crop = torch.cat([pitch_part, crop[..., controls.PITCH.stop :]], dim=-1)
        if control_dropout:
            no_key = torch.rand(size, generator=g, device=dev) < control_dropout
            no_density = torch.rand(size, generator=g, device=dev) < control_dropout
            key_off = torch.zeros(controls.CONTROL_DIM, device=dev)
            key_off[controls.NO_KEY] = 1.0
            density_off = torch.zeros(controls.CONTROL_DIM, device=dev)
            density_off[controls.NO_DENSITY] = 1.0
            key_cols = torch.zeros(controls.CONTROL_DIM, dtype=torch.bool, device=dev)
            key_cols[controls.PITCH] = True
            key_cols[controls.NO_KEY] = True
            crop = torch.where(no_key[:, None, None] & key_cols, key_off, crop)
            crop = torch.where(no_density[:, None, None] & ~key_cols, density_off, crop)
        return tokens, crop


# ---------------------------------------------------------------- evaluation


def pieces_nll(*args, **kwargs):
    """``composer.training.evaluate.pieces_nll``, imported when first scored, like the rest of the run."""
    from composer.training.evaluate import pieces_nll as score

    return score(*args, **kwargs)


# ---------------------------------------------------------------- the run (GPU side)


@dataclass
class RunOptions:
    carry: Path
    work: Path
    out: Path
    started: float = 0.0
    """Wall-clock time (epoch seconds) the command began; the budget counts from it."""
    budget_s: float = 510.0
    genres: tuple[str, ...] = ()
    device: str = "auto"
    conditioned: bool = False
    init: str = "classical"
    """A genre whose current shipped model the pre-train starts from, or ``fresh``."""
    models_dir: Path = PROJECT_ROOT / "data" / "models"
    genres_dir: Path = PROJECT_ROOT / "data" / "genres"
    finetune_from: str = "best"
    """Where each genre's fine-tune starts: ``pretrain`` (the pre-trained model), ``current`` (the
    genre's shipped model; no pre-training then), ``best`` (whichever of the two scores better
    on the genre's validation subset when the fine-tune starts)."""
    pretrain_share: float = 0.45
    batch_size: int = 512
    seq_len: int = 512
    pretrain_lr: float = 1e-3
    finetune_lr: float = 5e-4
    warmup_steps: int = 100
    finetune_warmup_steps: int = 30
    min_lr_ratio: float = 0.05
    precision: str = "probe"
    """``probe`` (a few steps of each, the faster wins), ``bf16`` or ``fp32`` (TF32 on a GPU)."""
    evals_per_stage: int = 8
    patience: int = 3
    val_pieces: int = 24
    """Pieces of each genre scored at each evaluation during training (the whole split at the end)."""
    train_eval_pieces: int = 8
    hidden_size: int = 512
    num_layers: int = 3
    embed_dim: int = 256
    seed: int = 0
    sampling_s: float = 75.0
    sample_batches: tuple[int, ...] = (64, 256, 1024, 4096)
    engine_batches: tuple[int, ...] = (1024, 4096, 16384, 65536)
    sample_seconds: float = 30.0
    final_reserve_s: float = 20.0
    """For each genre's last evaluation and its tar (the first run: 1-4 s each)."""
    margin_s: float = 12.0
    extra: dict = field(default_factory=dict)


class Deadline:
    def __init__(self, opts: RunOptions):
        started = opts.started or time.time()
        self.end = time.monotonic() + opts.budget_s - (time.time() - started)
        self.t0 = time.monotonic() - (time.time() - started)

    def left(self) -> float:
        return self.end - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


class Figures:
    """figures.json, rewritten whole after each stage so that a stopped run still returns it."""

    def __init__(self, out: Path, deadline: Deadline):
        self.path = out / FIGURES
        self.deadline = deadline
        self.data: dict = {"schema": 1, "finished": False, "errors": [], "genres": {}, "outputs": {}}

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.deadline.elapsed(), 1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=_jsonable) + "\n")
        tmp.replace(self.path)

    def error(self, where: str, exc: BaseException) -> None:
        log.exception("%s failed", where)
        self.data["errors"].append({"where": where, "error": f"{type(exc).__name__}: {exc}"})
        self.save()


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


@dataclass
class Stage:
    name: str
    genres: list[str]
    lr: float
    warmup_steps: int
    transpose: int
    start_fraction: float
    dropout: float
    seconds: float
    init_from: str = ""
    steps: int = 0
    events_seen: int = 0
    best_nll: float = float("inf")
    best_step: int = -1
    stopped: str = ""
    metrics: list = field(default_factory=list)


class Trainer:
    """Everything the stages share: the device, the data on it, the precision, the options."""

    def __init__(self, opts: RunOptions, deadline: Deadline, figures: Figures):
        import torch

        from composer.config import pick_device

        self.torch = torch
        self.opts = opts
        self.deadline = deadline
        self.figures = figures
        self.device = pick_device(opts.device)
        torch.manual_seed(opts.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.cache = opts.work / "cache"
        self.bf16 = False
        self.bundles: dict[tuple[str, str], object] = {}
        self.controls: dict[tuple[str, str], object] = {}
        self.conditioned = False

    # -- data

    def bundle(self, genre: str, split: str):
        from composer.corpus.data import TokenBundle

        key = (genre, split)
        if key not in self.bundles:
            self.bundles[key] = TokenBundle.load(self.cache, genre, split)
        return self.bundles[key]

    def combined(self, genres: list[str], split: str):
        from composer.corpus.data import TokenBundle

        if len(genres) == 1:
            return self.bundle(genres[0], split)
        parts = [self.bundle(g, split) for g in genres]
        tokens = np.concatenate([p.tokens for p in parts])
        starts = np.cumsum([0] + [len(p.tokens) for p in parts[:-1]])
        offsets = np.concatenate([p.offsets[:-1] + s for p, s in zip(parts, starts)] + [[len(tokens)]])
        return TokenBundle(tokens, offsets)

    def bundle_ctrl(self, genre: str, split: str):
        key = (genre, split)
        if key not in self.controls:
            b = self.bundle(genre, split)
            self.controls[key] = bundle_controls(b.tokens, b.offsets, self.device)
        return self.controls[key]

    def piece_subset(self, genre: str, split: str, limit: int):
        from composer.training.train import _fixed_subset

        b = self.bundle(genre, split)
        picked = _fixed_subset(len(b), limit)
        seqs = [b.sequence(i).astype(np.int64) for i in picked]
        ctrl = None
        if self.conditioned:
            c = self.bundle_ctrl(genre, split)
            ctrl = [c[int(b.offsets[i]) : int(b.offsets[i + 1])] for i in picked]
        return seqs, ctrl

    # -- models

    def initial_model(self):
        from composer.models.registry import model_dir
        from composer.nn.model import PerformanceRNN, load_model
        from composer.training.config import ModelConfig

        o = self.opts
        if o.init == "fresh":
            model = PerformanceRNN(
                ModelConfig(embed_dim=o.embed_dim, hidden_size=o.hidden_size, num_layers=o.num_layers)
            )
            return model, "", {}
        directory = model_dir(o.init, models_dir=o.models_dir)
        model, card = load_model(directory)
        return model, _relative(directory), card

    def prepare_model(self, model, dropout: float):
        from composer.codec import controls
        from composer.nn.model import PerformanceRNN, with_controls
        from composer.training.config import ModelConfig

        if model.config.dropout != dropout:
            fresh = PerformanceRNN(ModelConfig(**{**asdict(model.config), "dropout": dropout}))
            fresh.load_state_dict(model.state_dict())
            model = fresh
        if self.conditioned and not model.config.control_dim:
            model = with_controls(model, controls.CONTROL_DIM)
        return model.to(self.device).train()

    # -- precision

    def choose_precision(self, model, crops) -> dict:
        """bf16 autocast or float32 (TF32): a few steps of each on a throwaway copy, the faster wins."""
        o = self.opts
        if o.precision in ("bf16", "fp32"):
            self.bf16 = o.precision == "bf16"
            return {"precision": o.precision}
        if self.device.type != "cuda":
            self.bf16 = False
            return {"precision": "fp32", "probe": "skipped on the CPU"}
        rates: dict = {}
        for name in ("bf16", "fp32"):
            probe = copy.deepcopy(model)
            probe.lstm.flatten_parameters()  # a deep copy leaves cuDNN's weights in pieces, re-packed every step
            opt = self.optimizer(probe, o.pretrain_lr * 0.01)
            self.bf16 = name == "bf16"
            try:
                for _ in range(3):
                    self.train_step(probe, opt, crops, 0.0)
                self.sync()
                t = time.perf_counter()
                events = 0
                for _ in range(5):
                    events += self.train_step(probe, opt, crops, 0.0)[1]
                self.sync()
                rates[name] = int(events) / (time.perf_counter() - t)
            except Exception as exc:  # e.g. no bf16 LSTM in this cuDNN: the other one
                log.exception("%s probe failed", name)
                rates[name] = f"{type(exc).__name__}: {exc}"[:300]
            del probe, opt
            self.torch.cuda.empty_cache()
        speed = {k: v for k, v in rates.items() if isinstance(v, float)}
        if not speed:
            raise RuntimeError(f"no precision trains here: {rates}")
        self.bf16 = max(speed, key=speed.get) == "bf16"
        return {"precision": "bf16" if self.bf16 else "fp32", "probe_events_per_s": rates}

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def optimizer(self, model, lr: float):
        kwargs = {"fused": True} if self.device.type == "cuda" else {}
        return self.torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, **kwargs)

    def train_step(self, model, opt, crops, control_dropout: float):
        """One optimizer step; returns (loss, events) as device tensors (no wait for the GPU).
        Scored through the model, as ``composer train`` scores, so a pointer head trains too."""
        from composer.codec import events
        from composer.training.evaluate import crop_loss

        torch = self.torch
        tokens, ctrl = crops.batch(self.opts.batch_size, control_dropout)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            log_probs, _, _ = model(inputs, controls=ctrl, targets=targets)
        loss = crop_loss(log_probs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        return loss.detach(), (targets != events.PAD).sum()

    # -- one stage

    def run_stage(self, stage: Stage, model, eval_genres: list[str], stage_end: float, run_dir: Path):
        """Train ``model`` on ``stage.genres`` until ``stage_end`` (monotonic), keeping the weights
        with the best validation NLL (events-weighted over ``eval_genres``' fixed subsets)."""
        torch = self.torch
        o = self.opts
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_file = (run_dir / "metrics.jsonl").open("w")
        bundle = self.combined(stage.genres, "train")
        ctrl = None
        if self.conditioned:
            ctrl = (
                torch.cat([self.bundle_ctrl(g, "train") for g in stage.genres])
                if len(stage.genres) > 1
                else (self.bundle_ctrl(stage.genres[0], "train"))
            )
        seed = o.seed * 1000 + zlib.crc32(stage.name.encode()) % 1000
        crops = DeviceCrops(bundle, o.seq_len, stage.transpose, seed, stage.start_fraction, self.device, ctrl)
        if stage.name == "pretrain":
            self.figures.data["training"] = self.choose_precision(model, crops)
            self.figures.save()
        val = {g: self.piece_subset(g, "validation", o.val_pieces) for g in eval_genres}
        train_eval = self.piece_subset(stage.genres[0], "train", o.train_eval_pieces) if o.train_eval_pieces else None
        opt = self.optimizer(model, stage.lr)
        started = time.monotonic()
        budget = max(1e-3, stage_end - started)
        eval_every = budget / max(1, o.evals_per_stage)
        best_state, evals_since_best, evaluated_at = None, 0, -1
        window_loss = torch.zeros((), device=self.device)
        window_events = torch.zeros((), dtype=torch.long, device=self.device)
        window_steps, window_t = 0, time.monotonic()
        control_dropout = 0.5 if self.conditioned else 0.0

        def evaluate() -> None:
            nonlocal best_state, evals_since_best, evaluated_at
            evaluated_at = stage.steps
            total = count = 0
            record = {"step": stage.steps}
            for g, (seqs, _) in val.items():
                t, c, _ = pieces_nll(model, seqs, self.device, batch_size=64)
                total, count = total + t, count + c
                if len(val) > 1:
                    record[f"val_nll_{g}"] = t / max(c, 1)
            nll = total / max(count, 1)
            improved = nll < stage.best_nll
            if improved:
                stage.best_nll, stage.best_step, evals_since_best = nll, stage.steps, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                evals_since_best += 1
            record.update(val_nll=nll, val_events=count, best=improved)
            if self.conditioned:
                t = c = 0
                for seqs, pc in val.values():
                    t2, c2, _ = pieces_nll(model, seqs, self.device, piece_controls=pc, batch_size=64)
                    t, c = t + t2, c + c2
                record["val_nll_controlled"] = t / max(c, 1)
            if train_eval is not None:
                t, c, _ = pieces_nll(model, train_eval[0], self.device, batch_size=64)
                record.update(train_nll=t / max(c, 1), train_events=c)
            record["seconds"] = round(time.monotonic() - started, 2)
            self._log(metrics_file, stage, record)
            log.info("%s step %d: validation NLL %.4f%s", stage.name, stage.steps, nll, " (best)" if improved else "")

        t = time.monotonic()
        evaluate()  # where the stage starts: the figure before, and the weights to keep if nothing beats them
        # at most about a tenth of the stage goes to evaluating
        eval_every = max(eval_every, 10 * (time.monotonic() - t))
        next_eval = time.monotonic() + eval_every
        lr_now = stage.lr
        while True:
            now = time.monotonic()
            if now >= stage_end:
                stage.stopped = stage.stopped or "time budget"
                break
            if now >= next_eval:
                evaluate()
                next_eval = time.monotonic() + eval_every
                if o.patience and evals_since_best >= o.patience:
                    stage.stopped = f"no better for {o.patience} evaluations"
                    break
                continue
            progress = min(1.0, (now - started) / budget)
            warm = min(1.0, (stage.steps + 1) / max(1, stage.warmup_steps))
            cosine = o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
            lr_now = stage.lr * warm * cosine
            for group in opt.param_groups:
                group["lr"] = lr_now
            loss, events = self.train_step(model, opt, crops, control_dropout)
            window_loss += loss
            window_events += events
            window_steps += 1
            stage.steps += 1
            if window_steps == 25:
                n = int(window_events)  # waits for the GPU: the clock stays honest
                stage.events_seen += n
                elapsed = time.monotonic() - window_t
                self._log(
                    metrics_file,
                    stage,
                    {
                        "step": stage.steps,
                        "train_loss": float(window_loss) / window_steps,
                        "lr": lr_now,
                        "events_per_s": n / max(elapsed, 1e-9),
                    },
                )
                window_loss.zero_()
                window_events.zero_()
                window_steps, window_t = 0, time.monotonic()
        if window_steps:
            stage.events_seen += int(window_events)
        if evaluated_at != stage.steps and time.monotonic() < self.deadline.end - o.margin_s:
            evaluate()  # the last weights too: cosine decay usually makes them the best
        if best_state is not None:
            model.load_state_dict(best_state)
        metrics_file.close()
        with contextlib.suppress(Exception):
            from composer.training.train import plot_curve

            plot_curve(run_dir)
        return model

    def _log(self, fh, stage: Stage, record: dict) -> None:
        record = {**record, "time": time.time()}
        stage.metrics.append(record)
        fh.write(json.dumps(record) + "\n")
        fh.flush()


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _shipped_training(models_dir: Path, genre: str) -> dict:
    """The training settings of the genre's current shipped model (to continue as it was trained)."""
    from composer.models.registry import model_dir
    from composer.nn.model import read_card

    try:
        return read_card(model_dir(genre, models_dir=models_dir))
    except Exception:  # no shipped model: the defaults
        return {}


def finetune_weights(events: dict[str, int]) -> dict[str, float]:
    """Each genre's share of the fine-tuning time: by the square root of its training events,
    so the large corpora get more time and the small ones (which overfit within seconds on a
    GPU and stop early) still get some."""
    roots = {g: math.sqrt(max(n, 1)) for g, n in events.items()}
    total = sum(roots.values())
    return {g: r / total for g, r in roots.items()}


def run(opts: RunOptions) -> dict:
    """The GPU run: train every genre, score it, measure sampling, write it all to ``opts.out``."""
    deadline = Deadline(opts)
    opts.out.mkdir(parents=True, exist_ok=True)
    figures = Figures(opts.out, deadline)
    figures.data["budget_s"] = opts.budget_s
    figures.data["conditioned"] = opts.conditioned
    figures.data["stand_in_for_pretty_midi"] = _stand_in_for_pretty_midi()
    import torch

    from composer.corpus.data import split_fingerprint
    from composer.corpus.genres import load_genre

    available = unpack_data(opts.carry, opts.work / "cache")
    genres = [g for g in (opts.genres or SHIPPED_GENRES) if g in available]
    manifest = json.loads((opts.carry / MANIFEST).read_text()) if (opts.carry / MANIFEST).is_file() else {}
    trainer = Trainer(opts, deadline, figures)
    dev = trainer.device
    figures.data["device"] = {
        "type": dev.type,
        "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
    }
    figures.data["data"] = {
        "genres": genres,
        "missing": [g for g in (opts.genres or SHIPPED_GENRES) if g not in available],
        "train_tokens": {g: len(trainer.bundle(g, "train").tokens) for g in genres},
        "validation_events": {g: trainer.bundle(g, "validation").num_events for g in genres},
        "subsampled": manifest.get("subsampled", {}),
        "carry_mib": manifest.get("carry_mib"),
    }
    settings = {k: v for k, v in asdict(opts).items() if k not in ("carry", "work", "out", "extra")}
    figures.data["settings"] = settings
    figures.save()
    log.info("genres %s on %s (%s); %.0f s left", genres, dev, figures.data["device"]["name"], deadline.left())

    model, init_dir, init_card = trainer.initial_model()
    trainer.conditioned = opts.conditioned or bool(model.config.control_dim)
    figures.data["conditioned"] = trainer.conditioned
    manifests = {g: load_genre(g, opts.genres_dir) for g in genres}
    lineage = _lineage([manifests[g] for g in genres], init_card)

    if trainer.conditioned:
        t = time.monotonic()
        for g in genres:
            for split in ("train", "validation"):
                trainer.bundle_ctrl(g, split)
        trainer.sync()
        figures.data["controls_s"] = round(time.monotonic() - t, 2)

    # Sampling speed does not depend on how trained a model is, so it is measured first, on the
    # model the run starts from, and every second after it goes to training. (Measured last, as the
    # first run did, its 75 s reserve took 17 s and the GPU sat idle for the rest.)
    sampling_later = opts.sampling_s > 0 and not init_dir  # a fresh model: measured on what was trained
    if opts.sampling_s > 0 and not sampling_later:
        _measure_sampling_into(figures, trainer, genres, PROJECT_ROOT / init_dir)
    reserve = (opts.sampling_s if sampling_later else 0.0) + opts.final_reserve_s + opts.margin_s
    train_left = max(0.0, deadline.left() - reserve)
    pretrain_s = train_left * opts.pretrain_share if opts.finetune_from != "current" else 0.0
    shares = finetune_weights(figures.data["data"]["train_tokens"])
    figures.data["plan_s"] = {
        "pretrain": round(pretrain_s, 1),
        "finetune": round(train_left - pretrain_s, 1),
        "reserved": round(reserve, 1),
        "shares": shares,
    }
    stages: dict = {}
    figures.data["stages"] = stages

    pretrained = None
    if pretrain_s > 1:
        stage = Stage(
            "pretrain",
            genres,
            opts.pretrain_lr,
            opts.warmup_steps,
            transpose=3,
            start_fraction=0.1,
            dropout=0.0,
            seconds=pretrain_s,
            init_from=init_dir,
        )
        try:
            net = trainer.prepare_model(model, 0.0)
            net = trainer.run_stage(stage, net, genres, time.monotonic() + pretrain_s, opts.work / "pretrain")
            pretrained = (net.config, {k: v.detach().clone() for k, v in net.state_dict().items()})
        except Exception as exc:  # the fine-tunes can still start from the initial model
            figures.error("pretrain", exc)
        stages["pretrain"] = _stage_summary(stage)
        _pack_pretrain(opts.work / "pretrain", opts.out)
        figures.save()

    for i, genre in enumerate(genres):
        if deadline.left() < opts.margin_s:
            figures.data["genres"][genre] = {"skipped": "no time left"}
            figures.save()
            continue
        shipped = _shipped_training(opts.models_dir, genre)
        trained = shipped.get("training", {})
        stage = Stage(
            f"finetune-{genre}",
            [genre],
            opts.finetune_lr,
            opts.finetune_warmup_steps,
            transpose=int(trained.get("transpose", 3)),
            start_fraction=float(trained.get("start_fraction", 0.1)),
            dropout=float(shipped.get("config", {}).get("dropout", 0.0)),
            seconds=0.0,
        )
        try:
            start_model, stage.init_from, start = starting_point(
                trainer, genre, opts, shipped, model, init_dir, pretrained
            )
            genre_lineage = lineage if start["chosen"] != "current" else _lineage([manifests[genre]], shipped)
            net = trainer.prepare_model(start_model, stage.dropout)
            run_dir = opts.work / "runs" / genre
            # What is left, less sampling, the margin and the final evaluations of this genre and those
            # after it, shared by the genres still to come. With no time to train, the stage only scores
            # where it starts, and that model is written.
            left = deadline.left() - reserve + opts.final_reserve_s * (i / max(1, len(genres)))
            rest = sum(shares[g] for g in genres[i:])
            seconds = stage.seconds = max(0.0, left * shares[genre] / rest)
            net = trainer.run_stage(stage, net, [genre], time.monotonic() + seconds, run_dir)
            stages[stage.name] = _stage_summary(stage)
            entry = finish_genre(trainer, net, genre, manifests[genre], stage, stages, genre_lineage, run_dir)
            entry["start"] = start
            entry["shipped"] = {"version": shipped.get("version"), "validation_nll": shipped.get("validation_nll")}
            with contextlib.suppress(FileNotFoundError):
                fingerprint = split_fingerprint(trainer.cache, genre)
                entry["validation"]["split_matches_shipped"] = shipped.get("validation", {}).get("split") == fingerprint
            figures.data["genres"][genre] = entry
        except Exception as exc:  # the other genres go on
            stages[stage.name] = _stage_summary(stage)
            figures.error(f"finetune {genre}", exc)
        figures.save()

    if sampling_later:
        _measure_sampling_into(figures, trainer, genres)
    figures.data["finished"] = True
    figures.data["outputs"] = {p.name: p.stat().st_size for p in sorted(opts.out.iterdir()) if p.is_file()}
    figures.save()
    return figures.data


def _lineage(data_genres: list, card: dict) -> list[dict]:
    """The data a model's weights have seen: these genres', then what its starting model's card lists."""
    from composer.training.train import _data_entry

    lineage = [_data_entry(g) for g in data_genres]
    for entry in card.get("training", {}).get("data", []):
        if isinstance(entry, dict) and entry not in lineage:
            lineage.append(entry)
    return lineage


def starting_point(trainer: Trainer, genre: str, opts: RunOptions, shipped: dict, initial, init_dir: str, pretrained):
    """The model a genre's fine-tune starts from: the pre-trained one, the genre's own shipped
    model, or (``best``) whichever of the two scores better on the genre's validation subset.
    Returns (model on the CPU, its origin for the card, what was chosen and why)."""
    from composer.models.registry import model_dir
    from composer.nn.model import PerformanceRNN, load_model

    candidates: dict[str, tuple] = {}
    if opts.finetune_from in ("pretrain", "best") or not shipped:
        if pretrained is not None:
            config, state = pretrained
            start = PerformanceRNN(config)
            start.load_state_dict(state)
        else:
            start = copy.deepcopy(initial).cpu()
        candidates["pretrain" if pretrained is not None else "initial"] = (start, init_dir)
    if opts.finetune_from in ("current", "best") and shipped:
        directory = model_dir(genre, models_dir=opts.models_dir)
        candidates["current"] = (load_model(directory)[0], _relative(directory))
    if len(candidates) == 1:
        ((name, (start, origin)),) = candidates.items()
        return start, origin, {"chosen": name}
    seqs, _ = trainer.piece_subset(genre, "validation", opts.val_pieces)
    scores = {}
    for name, (candidate, _) in candidates.items():
        total, count, _ = pieces_nll(candidate.to(trainer.device), seqs, trainer.device, batch_size=64)
        candidate.cpu()
        scores[name] = total / max(count, 1)
    chosen = min(scores, key=scores.get)
    log.info("%s starts from %s (validation subset NLL %s)", genre, chosen, {k: round(v, 4) for k, v in scores.items()})
    start, origin = candidates[chosen]
    return start, origin, {"chosen": chosen, "validation_subset_nll": scores}


def _stage_summary(stage: Stage) -> dict:
    out = {k: v for k, v in asdict(stage).items() if k != "metrics"}
    speeds = [r["events_per_s"] for r in stage.metrics if "events_per_s" in r]
    out["events_per_s"] = float(np.median(speeds)) if speeds else None
    out["curve"] = [
        {k: r[k] for k in ("step", "seconds", "val_nll", "train_nll", "val_nll_controlled") if k in r}
        for r in stage.metrics
        if "val_nll" in r
    ]
    return out


def _pack_pretrain(run_dir: Path, out: Path) -> None:
    with tarfile.open(out / PRETRAIN_TAR, "w") as tar:
        for name in ("metrics.jsonl", "curve.png"):
            if (run_dir / name).is_file():
                tar.add(run_dir / name, f"pretrain/{name}")


def finish_genre(trainer: Trainer, net, genre: str, manifest, stage: Stage, stages: dict, lineage, run_dir):
    """Save the genre's model in half precision with its card, score the saved weights on the whole
    validation split, and write ``<genre>.tar`` to the output folder. Returns its figures."""
    from composer.corpus.data import split_fingerprint
    from composer.nn.model import load_model, save_model
    from composer.training.config import TrainConfig
    from composer.training.train import _card

    torch = trainer.torch
    o = trainer.opts
    cfg = TrainConfig(
        steps=stage.steps,
        batch_size=o.batch_size,
        seq_len=o.seq_len,
        lr=stage.lr,
        warmup_steps=stage.warmup_steps,
        min_lr_ratio=o.min_lr_ratio,
        transpose=stage.transpose,
        start_fraction=stage.start_fraction,
        eval_every=0,
        val_max_sequences=o.val_pieces,
        train_eval_sequences=o.train_eval_pieces,
        patience=o.patience,
        max_minutes=round(stage.seconds / 60, 3),
        seed=o.seed,
        precision="bf16" if trainer.bf16 else "fp32",
        init_from=stage.init_from,
        controls=trainer.conditioned,
        model=net.config,
    )
    state = {"step": stage.steps, "best_nll": stage.best_nll, "events_seen": stage.events_seen}
    train_data, val_data = trainer.bundle(genre, "train"), trainer.bundle(genre, "validation")
    card = _card(manifest, cfg, state, train_data, val_data, lineage)
    card["gpu_run"] = {
        "device": trainer.figures.data.get("device", {}).get("name"),
        "stages": {
            k: {f: v.get(f) for f in ("genres", "steps", "events_seen", "seconds", "lr", "best_nll", "init_from")}
            for k, v in stages.items()
            if k in ("pretrain", stage.name)
        },
        "note": "training.init_from names the shipped model the GPU run began from; stages lists what it did",
        "kept_start": stage.best_step == 0,
    }
    best = run_dir / "best"
    save_model(net.cpu(), best, card, half=True)
    saved, _ = load_model(best, trainer.device)
    t0 = time.monotonic()
    val = trainer.bundle(genre, "validation")
    seqs = [val.sequence(i).astype(np.int64) for i in range(len(val))]
    with _exact_fp32(torch):
        total, count, complete = pieces_nll(
            saved, seqs, trainer.device, batch_size=64, deadline=trainer.deadline.end - o.margin_s
        )
    nll = total / max(count, 1)
    entry = {
        "steps": stage.steps,
        "events_seen": stage.events_seen,
        "train_seconds": round(stage.seconds, 1),
        "stopped": stage.stopped,
        "kept_start": stage.best_step == 0,
        "training_validation_nll": stage.best_nll,
        "validation_nll": nll,
        "validation_events": count,
        "validation_complete": complete,
        "eval_s": round(time.monotonic() - t0, 2),
    }
    fingerprint = ""
    with contextlib.suppress(FileNotFoundError):
        fingerprint = split_fingerprint(trainer.cache, genre)
    card = json.loads((best / "card.json").read_text())
    card["training_validation_nll"] = stage.best_nll
    if complete:
        card["validation_nll"] = nll
        card["validation"] = {"genre": genre, "pieces": len(seqs), "events": count, "split": fingerprint}
    if trainer.conditioned and trainer.deadline.left() > o.margin_s:  # stopped at the deadline if need be
        c = trainer.bundle_ctrl(genre, "validation")
        pcs = [c[int(val.offsets[i]) : int(val.offsets[i + 1])] for i in range(len(val))]
        with _exact_fp32(torch):
            t2, c2, done = pieces_nll(
                saved,
                seqs,
                trainer.device,
                piece_controls=pcs,
                batch_size=64,
                deadline=trainer.deadline.end - o.margin_s,
            )
        if done:
            entry["validation_nll_controlled"] = t2 / max(c2, 1)
            card["validation_nll_controlled"] = entry["validation_nll_controlled"]
    (best / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    entry["validation"] = {"pieces": len(seqs), "split": fingerprint}
    tar_path = o.out / f"{genre}.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(best, f"{genre}/best")
        for name in ("metrics.jsonl", "curve.png"):
            if (run_dir / name).is_file():
                tar.add(run_dir / name, f"{genre}/{name}")
    entry["file"] = tar_path.name
    entry["bytes"] = tar_path.stat().st_size
    entry["fits_16_mib"] = entry["bytes"] <= 16 * 2**20
    trainer.figures.data.setdefault("models", {})[genre] = str(best)
    log.info("%s: validation NLL %.4f over %d events (%s)", genre, nll, count, tar_path.name)
    return entry


@contextlib.contextmanager
def _exact_fp32(torch):
    """Float32 without TF32 (the figure that promotion compares is measured so on the CPU)."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# ---------------------------------------------------------------- sampling figures


class GraphedEngine:
    """A ``FusedLSTM`` whose step replays a CUDA graph (one per batch size): one launch per
    event instead of a few dozen. Everything else is the engine's own."""

    def __init__(self, fused):
        self.fused = fused
        self.graphs: dict = {}

    def __getattr__(self, name):
        return getattr(self.fused, name)

    def _capture(self, batch: int, with_gates: bool):
        import torch

        f = self.fused
        tokens = torch.zeros(batch, dtype=torch.long, device=f.device)
        h, c = f.zero_state(batch)
        gates = torch.zeros(batch, 4 * f.hidden, device=f.device) if with_gates else None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                f.step(tokens, (h, c), gates)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits, (h2, c2) = f.step(tokens, (h, c), gates)
        captured = types.SimpleNamespace(graph=graph, tokens=tokens, h=h, c=c, gates=gates, logits=logits, h2=h2, c2=c2)
        self.graphs[(batch, with_gates)] = captured
        return captured

    def step(self, tokens, state, control_gates=None):
        import torch

        with torch.inference_mode():
            key = (tokens.shape[0], control_gates is not None)
            g = self.graphs.get(key) or self._capture(*key)
            g.tokens.copy_(tokens)
            g.h.copy_(state[0])
            g.c.copy_(state[1])
            if control_gates is not None:
                g.gates.copy_(control_gates)
            g.graph.replay()
            return g.logits.clone(), (g.h2.clone(), g.c2.clone())


def _measure_sampling_into(
    figures: Figures, trainer: Trainer, genres: list[str], directory: Path | None = None
) -> None:
    t = time.monotonic()
    try:
        figures.data["sampling"] = measure_sampling(trainer, genres, figures, directory)
    except Exception as exc:  # the figures so far are kept, and the run goes on
        figures.error("sampling", exc)
    figures.data["sampling_s"] = round(time.monotonic() - t, 1)
    figures.save()


def measure_sampling(trainer: Trainer, genres: list[str], figures: Figures, directory: Path | None = None) -> dict:
    """GPU sampling with the project's Sampler on the model in ``directory`` (the model the run
    starts from), or else on the first trained genre's model: events/s by batch size (eager and
    CUDA-graphed), a piece's latency, the engine alone at large batches, the half engine's NLL
    against float, and seed replay; within ``sampling_s`` seconds."""
    import torch

    from benchmarks.sampling import events_per_second
    from composer.nn.fastlstm import FusedLSTM
    from composer.nn.model import load_model
    from composer.sampling.sample import Sampler, SampleRequest

    o = trainer.opts
    dev = trainer.device
    end = min(trainer.deadline.end - o.margin_s / 2, time.monotonic() + o.sampling_s)
    if directory is None:
        models = figures.data.get("models", {})
        trained = next((g for g in genres if g in models), None)
        if trained is None:
            return {"skipped": "no trained model"}
        directory = Path(models[trained])
    model, card = load_model(directory, dev)
    genre = card.get("genre", "")
    if genre not in genres:  # the half engine's comparison scores validation pieces of a genre carried here
        genre = genres[0]
    out: dict = {"genre": genre, "model": _relative(directory), "device": figures.data["device"]["name"]}
    sampler = Sampler(model, card, dev)
    out["engine"] = sampler.engine
    figures.data["sampling"] = out

    def time_left(share: float) -> bool:
        """Whether ``share`` of the sampling budget is still left before the deadline."""
        return time.monotonic() + o.sampling_s * share < end

    def timed_piece(s: Sampler, seed: int) -> tuple[float, int]:
        trainer.sync()
        t = time.perf_counter()
        tokens = s.generate([SampleRequest(o.sample_seconds, seed=seed)])[0]
        trainer.sync()
        return time.perf_counter() - t, len(tokens)

    # a piece's latency (after one warm-up piece), and seed replay
    timed_piece(sampler, 99)
    out["piece_s"], out["piece_events"] = timed_piece(sampler, 7)
    out["piece_seconds"] = o.sample_seconds
    t = time.perf_counter()
    loaded = Sampler.from_dir(directory, dev)
    loaded.generate([SampleRequest(o.sample_seconds, seed=7)])
    trainer.sync()
    out["piece_with_load_s"] = time.perf_counter() - t
    if time_left(0.5):  # where a piece's time goes, for the next round of work on the sampler
        out["piece_profile"] = profile_piece(sampler, SampleRequest(o.sample_seconds, seed=7))
        figures.save()
    a = sampler.generate([SampleRequest(o.sample_seconds, seed=11)])[0]
    b = sampler.generate([SampleRequest(o.sample_seconds, seed=11)])[0]
    in_batch = sampler.generate([SampleRequest(o.sample_seconds, seed=s) for s in (5, 11, 17, 23)])[1]
    out["seed_replay"] = {
        "same_seed_twice_identical": bool(np.array_equal(a, b)),
        "alone_and_in_batch_of_4_identical": bool(np.array_equal(a, in_batch)),
        "events": len(a),
    }
    figures.save()

    # events/s by batch size through the Sampler (BatchSampler: per-stream bookkeeping on the CPU)
    rates = {}
    for size in o.sample_batches:
        if not time_left(0.1):
            break
        rates[str(size)] = events_per_second(sampler, size, 20 if dev.type == "cuda" else 3)
    out["events_per_s"] = rates
    if rates:
        best = max(rates, key=rates.get)
        out["best_batch"], out["best_events_per_s"] = int(best), rates[best]
    figures.save()

    # the half engine against float, stepwise on a few validation pieces
    if time_left(0.12):
        out["half_vs_float"] = half_vs_float(trainer, model, genre)
        figures.save()

    # CUDA graphs: the same Sampler with its engine's step replayed from a graph
    if dev.type == "cuda" and sampler.fused is not None and time_left(0.12):
        graphs: dict = {}
        out["cuda_graphs"] = graphs
        try:
            graphed = Sampler(model, card, dev)
            graphed.fused = GraphedEngine(graphed.fused)
            timed_piece(graphed, 99)
            graphs["piece_s"], graphs["piece_events"] = timed_piece(graphed, 7)
            eager_tokens = sampler.generate([SampleRequest(o.sample_seconds, seed=11)])[0]
            graphs["same_tokens_as_eager"] = bool(
                np.array_equal(graphed.generate([SampleRequest(o.sample_seconds, seed=11)])[0], eager_tokens)
            )
            g_rates = {}
            for size in o.sample_batches:
                if not time_left(0.1):
                    break
                g_rates[str(size)] = events_per_second(graphed, size, 20)
            graphs["events_per_s"] = g_rates
        except Exception as exc:  # graphs are optional
            graphs["error"] = f"{type(exc).__name__}: {exc}"
        figures.save()
    elif dev.type != "cuda":
        out["cuda_graphs"] = {"skipped": "not a CUDA device"}

    # the engine alone: a step and a draw per event, every stream on the GPU, no grammar (the ceiling)
    if time_left(0.12):
        engine_rates: dict = {}
        out["engine_only_events_per_s"] = engine_rates
        weights = "half" if dev.type == "cuda" else "fp32"
        fused = FusedLSTM(model, weights)
        for size in o.engine_batches if dev.type == "cuda" else o.engine_batches[:1]:
            if not time_left(0.08):
                break
            try:
                engine_rates[str(size)] = engine_events_per_second(fused, size, dev, graphed=False)
                if dev.type == "cuda":
                    engine_rates[f"{size}_graphed"] = engine_events_per_second(fused, size, dev, graphed=True)
            except torch.cuda.OutOfMemoryError as exc:
                engine_rates[str(size)] = f"out of memory: {exc}"[:200]
                break
        numeric = {k: v for k, v in engine_rates.items() if isinstance(v, float)}
        if numeric:
            best = max(numeric, key=numeric.get)
            out["engine_only_best"] = {"batch": best, "events_per_s": numeric[best]}
        out["engine_only_weights"] = weights
    out["targets"] = sampling_targets(out)
    return out


def profile_piece(sampler, request, rows: int = 15) -> list[dict]:
    """The operators that took a piece's time (torch.profiler), the costliest first: per operator,
    its calls and its own time on the CPU (dispatch included) and on the GPU, in microseconds."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if sampler.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        sampler.generate([request])
        if sampler.device.type == "cuda":
            torch.cuda.synchronize()
    table = []
    for entry in prof.key_averages():
        device_us = getattr(entry, "self_device_time_total", getattr(entry, "self_cuda_time_total", 0.0))
        table.append(
            {
                "op": entry.key,
                "calls": int(entry.count),
                "self_cpu_us": round(float(entry.self_cpu_time_total), 1),
                "self_device_us": round(float(device_us), 1),
            }
        )
    table.sort(key=lambda r: -(r["self_cpu_us"] + r["self_device_us"]))
    return table[:rows]


def sampling_targets(out: dict) -> dict:
    """The issue's GPU targets against what was measured: >= 5 M events/s in a large batch
    (through the Sampler, and for the engine alone) and a 30 s piece in under 0.3 s."""
    graphs = out.get("cuda_graphs", {})
    pieces = [v for v in (out.get("piece_s"), graphs.get("piece_s")) if isinstance(v, float)]
    engine = out.get("engine_only_best", {}).get("events_per_s")
    return {
        "sampler_5M_events_per_s": out.get("best_events_per_s", 0) >= 5e6,
        "engine_only_5M_events_per_s": bool(engine and engine >= 5e6),
        "piece_30s_under_0.3s": bool(pieces) and out.get("piece_seconds") == 30 and min(pieces) < 0.3,
    }


def engine_events_per_second(fused, batch: int, device, graphed: bool, steps: int = 50) -> float:
    """Events/s of ``batch`` streams when a step is the engine's step plus a draw on the device
    (softmax, inverse CDF): what sampling costs once the per-stream bookkeeping leaves Python."""
    import torch

    with torch.inference_mode():
        tokens = torch.zeros(batch, dtype=torch.long, device=device)
        h, c = fused.zero_state(batch)

        def one():
            logits, (h2, c2) = fused.step(tokens, (h, c))
            probs = torch.softmax(logits[:, :388].float(), -1)
            cdf = probs.cumsum(-1)
            u = torch.rand(batch, 1, device=device) * cdf[:, -1:]
            tokens.copy_(torch.searchsorted(cdf, u).squeeze(1).clamp_(max=387))
            h.copy_(h2)
            c.copy_(c2)

        run_step = one
        if graphed:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    one()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                one()
            run_step = graph.replay
        for _ in range(3):
            run_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            run_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return batch * steps / (time.perf_counter() - t)


def half_vs_float(trainer: Trainer, model, genre: str, pieces: int = 8, length: int = 2048) -> dict:
    """NLL of the first ``length`` events of ``pieces`` validation pieces: the network in float32
    over whole sequences, and the sampling engines one step at a time (float32 and half). The
    engines step the LSTM: a pointer head is left out of all three."""
    import copy

    import torch
    import torch.nn.functional as F

    from composer.codec import events
    from composer.nn.fastlstm import FusedLSTM

    dev = trainer.device
    val = trainer.bundle(genre, "validation")
    seqs = [val.sequence(i)[:length].astype(np.int64) for i in range(min(pieces, len(val)))]
    if model.pointer is not None:
        model = copy.deepcopy(model)
        model.pointer = None
    with _exact_fp32(torch):
        total, count, _ = pieces_nll(model, seqs, dev, batch_size=64)
    out = {"pieces": len(seqs), "events": count, "float": total / max(count, 1)}
    width = max(len(s) for s in seqs)
    grid = np.full((len(seqs), width), events.PAD, dtype=np.int64)
    for row, s in enumerate(seqs):
        grid[row, : len(s)] = s
    tokens = torch.from_numpy(grid).to(dev)
    engines = ("fp32", "half") if dev.type == "cuda" else ("fp32",)
    with _exact_fp32(torch):
        for weights in engines:
            engine = FusedLSTM(model, weights)
            state = engine.zero_state(len(seqs))
            t = torch.zeros((), dtype=torch.float64, device=dev)
            n = torch.zeros((), dtype=torch.long, device=dev)
            for i in range(width - 1):
                logits, state = engine.step(tokens[:, i], state)
                target = tokens[:, i + 1]
                scored = target < events.NUM_EVENTS
                loss = F.cross_entropy(logits.float(), target, reduction="none")
                t += (loss * scored).sum(dtype=torch.float64)
                n += scored.sum()
            out[f"stepwise_{weights}"] = float(t) / max(int(n), 1)
    if "stepwise_half" in out:
        out["half_minus_float"] = out["stepwise_half"] - out["float"]
    return out


# ---------------------------------------------------------------- publish (CPU side)


def publish_results(
    source: Path,
    version: str,
    genres: list[str] | None = None,
    promote: bool = False,
    work: Path | None = None,
    cache_dir: Path | None = None,
    models_dir: Path | None = None,
) -> list[dict]:
    """Add each returned genre model as ``version`` (scored on the whole validation split
    prepared here, its curves kept with the GPU pre-train's) and, with ``promote``, make it
    current when its NLL is not worse than the current version's. A genre whose fine-tune
    never beat the shipped model it started from is passed over: it is that model."""
    from composer.config import settings
    from composer.models.registry import NotBetterError, RegistryError, publish_run
    from composer.models.registry import promote as make_current

    cache_dir = cache_dir or settings().cache_dir
    work = work or settings().runs_dir / "gpu" / source.name
    work.mkdir(parents=True, exist_ok=True)
    if (source / PRETRAIN_TAR).is_file():
        with tarfile.open(source / PRETRAIN_TAR) as tar:
            tar.extractall(work, filter="data")
    results = []
    for tar_path in sorted(source.glob("*.tar")):
        genre = tar_path.stem
        if tar_path.name == PRETRAIN_TAR or (genres and genre not in genres):
            continue
        with tarfile.open(tar_path) as tar:
            tar.extractall(work, filter="data")
        returned = json.loads((work / genre / "best" / "card.json").read_text())
        origin = returned.get("training", {}).get("init_from", "")
        if returned.get("gpu_run", {}).get("kept_start") and origin.startswith("data/models/"):
            results.append({"genre": genre, "skipped": f"the fine-tune never beat its start, {origin}"})
            continue
        try:
            target = publish_run(work / genre / "best", genre, version, cache_dir, models_dir)
        except RegistryError as exc:  # one genre's refusal (its version exists, ...) must not stop the others
            results.append({"genre": genre, "refused": str(exc)})
            continue
        for name in ("metrics.jsonl", "curve.png"):
            if (work / "pretrain" / name).is_file():
                shutil.copyfile(work / "pretrain" / name, target / "training" / f"gpu-pretrain-{name}")
        card = json.loads((target / "card.json").read_text())
        entry = {"genre": genre, "version": version, "directory": str(target), "validation_nll": card["validation_nll"]}
        if promote:
            try:
                done = make_current(genre, version, cache_dir=cache_dir, models_dir=models_dir)
                entry.update(promoted=done.changed, scores=done.scores)
            except NotBetterError as exc:
                entry.update(promoted=False, scores=exc.scores, refused=str(exc))
            except RegistryError as exc:
                entry.update(promoted=False, refused=str(exc))
        results.append(entry)
    return results


# ---------------------------------------------------------------- command line


def _csv(text: str) -> tuple[str, ...]:
    return tuple(filter(None, (t.strip() for t in text.split(","))))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in _csv(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m composer.training.gpu_run", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pack", help="(CPU) pack the prepared arrays and wheels into gpu-carry/")
    p.add_argument("--genres", default=",".join(SHIPPED_GENRES))
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / CARRY_DIR)
    p.add_argument(
        "--max-mib", type=float, default=0.0, help="cap on the data archive (0: what the travel limit leaves)"
    )
    p.add_argument("--stretches", default="", help="carry only these time stretches, e.g. 1.0 (default: all five)")
    p.add_argument("--no-wheels", action="store_true")

    r = sub.add_parser("run", help="(GPU) train, evaluate, measure; write to --out")
    defaults = RunOptions(Path(), Path(), Path())
    r.add_argument("--carry", type=Path, default=PROJECT_ROOT / CARRY_DIR)
    r.add_argument("--work", type=Path, default=Path("/tmp/gpu-run"))
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--genres", default="", help="comma-separated (default: every shipped genre carried)")
    r.add_argument(
        "--conditioned", action="store_true", help="train key/density-conditioned models (TrainConfig.controls)"
    )
    r.add_argument(
        "--init", default=defaults.init, help="genre whose current model the pre-train starts from, or 'fresh'"
    )
    r.add_argument("--finetune-from", choices=("best", "pretrain", "current"), default=defaults.finetune_from)
    r.add_argument("--models-dir", type=Path, default=defaults.models_dir)
    r.add_argument("--genres-dir", type=Path, default=defaults.genres_dir)
    for f in fields(RunOptions):
        if f.type in ("int", "float"):
            kind = int if f.type == "int" else float
            r.add_argument("--" + f.name.replace("_", "-"), type=kind, default=getattr(defaults, f.name))
    r.add_argument("--precision", choices=("probe", "bf16", "fp32"), default=defaults.precision)
    r.add_argument("--device", default=defaults.device)
    r.add_argument("--sample-batches", default=",".join(map(str, defaults.sample_batches)))
    r.add_argument("--engine-batches", default=",".join(map(str, defaults.engine_batches)))

    q = sub.add_parser("publish", help="(CPU) add the returned models as versions; --promote when not worse")
    q.add_argument("--from", dest="source", type=Path, required=True, help="the folder the run's files came back to")
    q.add_argument("--version", required=True)
    q.add_argument("--genres", default="")
    q.add_argument("--promote", action="store_true")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    if args.command == "pack":
        from composer.config import settings

        manifest = pack(
            args.cache_dir or settings().cache_dir,
            list(_csv(args.genres)),
            args.out,
            args.max_mib,
            wheels=not args.no_wheels,
            stretches=tuple(float(x) for x in _csv(args.stretches)) or None,
        )
        print(json.dumps(manifest, indent=2))
        return 0 if manifest["fits"] else 1
    if args.command == "publish":
        results = publish_results(args.source, args.version, list(_csv(args.genres)) or None, args.promote)
        print(json.dumps(results, indent=2, default=str))
        return 0
    numbers = {f.name: getattr(args, f.name) for f in fields(RunOptions) if f.type in ("int", "float")}
    opts = RunOptions(
        carry=args.carry,
        work=args.work,
        out=args.out,
        genres=_csv(args.genres),
        conditioned=args.conditioned,
        init=args.init,
        finetune_from=args.finetune_from,
        models_dir=args.models_dir,
        genres_dir=args.genres_dir,
        precision=args.precision,
        device=args.device,
        sample_batches=_ints(args.sample_batches),
        engine_batches=_ints(args.engine_batches),
        **numbers,
    )
    result = run(opts)
    summary = {g: e.get("validation_nll") for g, e in result["genres"].items()}
    print(json.dumps({"validation_nll": summary, "errors": result["errors"], "elapsed_s": result.get("elapsed_s")}))
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
