"""Training loop: random 512-event crops, AdamW, clipping, warmup + cosine schedule.

One process trains on the CPU or a GPU; ``torchrun --nproc-per-node N -m composer.cli
train ...`` trains data-parallel (DDP; NCCL on GPUs, gloo on CPUs). A run directory
holds a resumable checkpoint, a JSONL metrics log, a PNG learning curve and the best
model so far; a killed run picks up where its last checkpoint left it, its log cut back to
that checkpoint so no step is logged twice. One process at a time owns a run directory
(``run_lock``: ``composer train`` holds it for the training and the publication).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from composer.codec import controls, events
from composer.config import pick_device
from composer.corpus.data import CropSampler, TokenBundle, split_files
from composer.corpus.genres import Genre
from composer.nn.model import PerformanceRNN, load_model, save_model, with_controls
from composer.nn.pointer import with_pointer
from composer.training.config import ModelConfig, TrainConfig
from composer.training.evaluate import crop_loss, sequences_nll

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "curve.png"
BEST_DIR = "best"
LOCK_FILE = "run.lock"


class RunBusyError(ValueError):
    """Another process is training in this run directory."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory for this process; a second holder is refused at once, named.

    An advisory ``flock`` on ``run.lock``: the kernel drops it when the holder dies (even by
    kill -9), so a crashed run never leaves a stale lock and resumes at once."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = (run_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise RunBusyError(
            f"run {run_dir} is in use by {holder}: wait for it to end, stop it, or pick another --run-name"
        ) from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock


class TimeBudget:
    """``--max-minutes`` as a deadline that also counts the evaluation after training (a publish
    scores the whole validation split): training stops when what is left would not cover it.

    The evaluation's time is estimated from the latest measured rate (seconds per event) times
    ``reserve_events``; ``clock`` is injectable for tests."""

    def __init__(self, minutes: float, reserve_events: int = 0, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.deadline = clock() + minutes * 60 if minutes > 0 else None
        self.reserve_events = reserve_events
        self.seconds_per_event = 0.0

    def measured(self, seconds: float, n_events: int) -> None:
        if n_events > 0:
            self.seconds_per_event = seconds / n_events

    @property
    def reserve_s(self) -> float:
        return self.seconds_per_event * self.reserve_events

    @property
    def needs_rate(self) -> bool:
        return self.deadline is not None and self.reserve_events > 0 and not self.seconds_per_event

    def spent(self) -> bool:
        return self.deadline is not None and self.clock() + self.reserve_s >= self.deadline


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the peak."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError("precision must be auto, bf16 or fp32")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    # oneDNN runs bf16 LSTMs on AMX/AVX512-BF16 at over twice the float32 speed; elsewhere it would be slower.
    return device.type == "cpu" and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


class _Distributed:
    """Rank bookkeeping; a no-op when not launched by torchrun."""

    def __init__(self, device: torch.device):
        self.enabled = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.device = device
        if self.enabled and not dist.is_initialized():
            if device.type == "cuda":
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
            # Rank 0 validates whole pieces while the others wait in a collective: give it an hour,
            # not NCCL's default ten minutes.
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo", timeout=timedelta(hours=1))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (so all ranks stop together)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def parameters_agree(self, model: torch.nn.Module) -> bool:
        """Whether every rank holds the same weights (DDP's promise, checked at the end)."""
        if not self.enabled:
            return True
        digest = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(self.device)
        gathered = [torch.empty_like(digest) for _ in range(self.world)]
        dist.all_gather(gathered, digest)
        return all(torch.equal(gathered[0], g) for g in gathered[1:])

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def train(
    genre: Genre,
    cache_dir: Path,
    run_dir: Path,
    cfg: TrainConfig,
    device_name: str = "auto",
    progress: bool = True,
    reserve_events: int = 0,
) -> dict:
    """Train (or resume) a genre model in ``run_dir``; returns the final summary.

    ``reserve_events``: the events of an evaluation that follows (``--publish``), whose time
    ``cfg.max_minutes`` keeps back. The caller holds ``run_lock(run_dir)``."""
    ddp = _Distributed(pick_device(device_name))
    device = ddp.device
    torch.manual_seed(cfg.seed + ddp.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True

    data_genres = list(cfg.data_genres) or [genre.name]
    train_data = TokenBundle.load_many(cache_dir, data_genres, "train")
    val_data = TokenBundle.load_many(cache_dir, data_genres, "validation")
    if len(train_data) == 0 or len(val_data) == 0:
        counts = {g: split_files(cache_dir, g) for g in data_genres}
        shown = "; ".join(f"{g}: {c['train']} training, {c['validation']} validation" for g, c in counts.items())
        raise ValueError(
            f"both splits need pieces, and the files prepared are {shown}: add files or change "
            "validation_fraction, then run `composer prepare` again"
        )
    val_sequences = [val_data.sequence(i).astype(np.int64) for i in _fixed_subset(len(val_data), cfg.val_max_sequences)]
    train_sequences = (
        [train_data.sequence(i).astype(np.int64) for i in _fixed_subset(len(train_data), cfg.train_eval_sequences)]
        if cfg.train_eval_sequences
        else []
    )
    sampler = CropSampler(
        train_data, cfg.seq_len, cfg.transpose, seed=cfg.seed * 1000 + ddp.rank, start_fraction=cfg.start_fraction
    )

    lineage = [_data_entry(g) for g in data_specs(genre, cfg)]
    if cfg.init_from:
        model, init_card = load_model(Path(cfg.init_from))
        for entry in init_card.get("training", {}).get("data", []):
            if isinstance(entry, dict) and entry not in lineage:
                lineage.append(entry)
        model.train()
        if model.config.dropout != cfg.model.dropout:
            model = _with_dropout(model, cfg.model.dropout)
    else:
        model = PerformanceRNN(cfg.model)
    if cfg.controls and not model.config.control_dim:
        model = with_controls(model, controls.CONTROL_DIM)
    if cfg.pointer and not model.config.pointer:
        model = with_pointer(model)
    if cfg.pointer_only:
        if not model.config.pointer:
            raise ValueError("--pointer-only trains a pointer head: add --pointer")
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith("pointer."))
    cfg.model = model.config
    conditioned = bool(model.config.control_dim)
    control_rng = np.random.default_rng(cfg.seed * 1000 + ddp.rank + 1)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema)) if cfg.ema else None
    kept = average.module if average is not None else model  # the weights validated and saved as the best

    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"step": 0, "best_nll": float("inf"), "best_step": -1, "evals_since_best": 0, "events_seen": 0}
    checkpoint = run_dir / CHECKPOINT_FILE
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if average is not None and "average" in saved:  # else (averaging just turned on) it starts here
            average.load_state_dict(saved["average"])
        state = saved["state"]
        sampler.rng = np.random.default_rng(state["step"] * 7919 + cfg.seed * 1000 + ddp.rank)
        control_rng = np.random.default_rng(state["step"] * 7919 + cfg.seed * 1000 + ddp.rank + 1)
        if ddp.main:
            log.info("resumed %s at step %d (best NLL %.4f)", run_dir, state["step"], state["best_nll"])
    if ddp.main:  # what a killed run logged after its last checkpoint is done again: log it once
        _continue_metrics(run_dir, state["step"])
    if ddp.main:  # the settings of the latest start: a resume may change steps, dropout or transposition
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    net = model
    if ddp.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    stop_requested = {"flag": False}

    def _request_stop(signum, frame):  # finish the step, checkpoint, then exit
        stop_requested["flag"] = True

    old_handlers = {s: signal.signal(s, _request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    budget = TimeBudget(cfg.max_minutes, reserve_events if ddp.main else 0)
    if ddp.main and budget.needs_rate and val_sequences:  # a first rate, before the first evaluation
        begun = time.monotonic()
        _, probed = sequences_nll(model, [min(val_sequences, key=len)[:2048]], device)
        budget.measured(time.monotonic() - begun, probed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(cfg.precision, device))
    metrics = (run_dir / METRICS_FILE).open("a") if ddp.main else None
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"train {genre.name}", disable=not (progress and ddp.main))
    window_loss, window_n, window_events, window_t = 0.0, 0, 0, time.monotonic()

    def evaluate_and_keep_best() -> None:
        begun = time.monotonic()
        total, count = sequences_nll(kept, val_sequences, device)
        budget.measured(time.monotonic() - begun, count)
        nll = total / max(count, 1)
        improved = nll < state["best_nll"]
        if improved:
            state.update(best_nll=nll, best_step=state["step"], evals_since_best=0)
            save_model(kept, run_dir / BEST_DIR, _card(genre, cfg, state, train_data, val_data, lineage), half=False)
        else:
            state["evals_since_best"] += 1
        record = {"step": state["step"], "val_nll": nll, "val_events": count, "best": improved}
        if average is not None:  # what the average gains over the latest weights
            total, count = sequences_nll(model, val_sequences, device)
            record["val_nll_latest"] = total / max(count, 1)
        if conditioned:  # val_nll is without controls, comparable with unconditioned models; this with them
            total, count = sequences_nll(kept, val_sequences, device, controlled=True)
            record["val_nll_controlled"] = total / max(count, 1)
        if train_sequences:
            train_total, train_count = sequences_nll(kept, train_sequences, device)
            record.update(train_nll=train_total / max(train_count, 1), train_events=train_count)
        _log(metrics, record)
        bar.set_postfix(val=f"{nll:.3f}", best=f"{state['best_nll']:.3f}")

    try:
        while state["step"] < cfg.steps:
            crop_controls = None
            if conditioned:
                tokens, crop_controls = sampler.batch_with_controls(cfg.batch_size)
                crop_controls = controls.drop_controls(
                    crop_controls, control_rng, cfg.control_dropout, cfg.control_dropout
                )
                crop_controls = torch.from_numpy(crop_controls).to(device, non_blocking=True)
            else:
                tokens = sampler.batch(cfg.batch_size)
            batch = torch.from_numpy(tokens).to(device, non_blocking=True)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            with autocast:
                log_probs, _, _ = net(inputs, controls=crop_controls, targets=targets)
            loss = crop_loss(log_probs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update_parameters(model)
            state["step"] += 1
            n_events = int((targets != events.PAD).sum()) * ddp.world
            state["events_seen"] += n_events
            window_loss += loss.item()
            window_n += 1
            window_events += n_events
            bar.update()

            if ddp.main and state["step"] % 50 == 0:
                elapsed = time.monotonic() - window_t
                _log(
                    metrics,
                    {
                        "step": state["step"],
                        "train_loss": window_loss / window_n,
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm),
                        "events_per_s": window_events / max(elapsed, 1e-9),
                    },
                )
                bar.set_postfix(loss=f"{window_loss / window_n:.3f}", best=f"{state['best_nll']:.3f}")
                window_loss, window_n, window_events, window_t = 0.0, 0, 0, time.monotonic()

            last = state["step"] >= cfg.steps
            if ddp.main and (state["step"] % cfg.eval_every == 0 or last):
                evaluate_and_keep_best()
            out_of_time = budget.spent()
            patience_spent = cfg.patience > 0 and state["evals_since_best"] >= cfg.patience
            stop = ddp.any(stop_requested["flag"] or out_of_time or patience_spent)
            if ddp.main and (state["step"] % cfg.checkpoint_every == 0 or last or stop):
                _save_checkpoint(checkpoint, model, optimizer, scheduler, state, average)
            if stop:
                if ddp.main and state["best_step"] < 0:
                    evaluate_and_keep_best()
                reason = "signal" if stop_requested["flag"] else "time limit" if out_of_time else "early stop"
                log.info("stopping at step %d (%s)", state["step"], reason)
                break
        if ddp.enabled:
            in_sync = ddp.parameters_agree(model)
            _log(metrics, {"step": state["step"], "ranks": ddp.world, "ranks_in_sync": in_sync})
            if not in_sync:
                raise RuntimeError("data-parallel ranks ended with different weights")
    finally:
        bar.close()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if metrics:
            metrics.close()
        ddp.close()
    if ddp.main:
        plot_curve(run_dir)
        if reserve_events and budget.deadline is not None:
            log.info("kept %.0f s of the time budget for the evaluation after training", budget.reserve_s)
    return {
        **state,
        "run_dir": str(run_dir),
        "finished": state["step"] >= cfg.steps,
        "reserved_s": round(budget.reserve_s, 3),
    }


def _continue_metrics(run_dir: Path, step: int) -> None:
    """Cut the metrics log back to the records of steps up to ``step`` (the checkpoint resumed
    from): a run killed after logging later steps does them again, and logs them once. A line
    cut short by the kill goes too. Rewritten atomically."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            dropped += bool(line.strip())
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)
        log.info("metrics log cut back to step %d (%d later record(s) will be logged again)", step, dropped)


def _fixed_subset(count: int, limit: int) -> list[int]:
    """Indices of the same ``limit`` of ``count`` pieces on every run and resume (all when ``limit`` is 0)."""
    if not limit or limit >= count:
        return list(range(count))
    return sorted(int(i) for i in np.random.default_rng(1234).permutation(count)[:limit])


def _with_dropout(model: PerformanceRNN, dropout: float) -> PerformanceRNN:
    fresh = PerformanceRNN(ModelConfig(**{**asdict(model.config), "dropout": dropout}))
    fresh.load_state_dict(model.state_dict())
    return fresh


def data_specs(genre: Genre, cfg: TrainConfig) -> list[Genre]:
    from composer.corpus.genres import load_genre

    return [genre if g == genre.name else load_genre(g) for g in (cfg.data_genres or (genre.name,))]


def _data_entry(g: Genre) -> dict:
    return {"genre": g.name, "sources": list(g.sources), "license": g.license, "attribution": g.attribution}


def _card(
    genre: Genre, cfg: TrainConfig, state: dict, train_data: TokenBundle, val_data: TokenBundle, lineage: list[dict]
) -> dict:
    return {
        "genre": genre.name,
        "description": genre.description,
        "vocabulary": {
            "events": events.NUM_EVENTS,
            "size": events.VOCAB_SIZE,
            "layout": "note_on 0-127, note_off 128-255, time_shift 256-355 (10 ms steps), velocity 356-387 (32 bins)",
            "special": {"pad": events.PAD, "bos": events.BOS, "eos": events.EOS},
            "steps_per_second": events.STEPS_PER_SECOND,
        },
        "training": {
            **{k: v for k, v in asdict(cfg).items() if k != "model"},
            "data": lineage,
            "train_events": train_data.num_events,
            "validation_events": val_data.num_events,
            "validation_pieces": len(val_data),
            "step": state["step"],
            "events_seen": state["events_seen"],
        },
        "license": "; ".join(sorted({d["license"] for d in lineage})),
        "validation_nll": state["best_nll"],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _save_checkpoint(path: Path, model, optimizer, scheduler, state: dict, average=None) -> None:
    tmp = path.with_suffix(".tmp")
    saved = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": state,
    }
    if average is not None:
        saved["average"] = average.state_dict()
    torch.save(saved, tmp)
    tmp.replace(path)


def _log(fh, record: dict) -> None:
    if fh is not None:
        fh.write(json.dumps({**record, "time": time.time()}) + "\n")
        fh.flush()


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curve(run_dir: Path) -> Path | None:
    """Training loss and validation NLL against step, as a PNG beside the metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    train_pts = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val_pts = [(r["step"], r["val_nll"]) for r in records if "val_nll" in r]
    train_eval_pts = [(r["step"], r["train_nll"]) for r in records if "train_nll" in r]
    latest_pts = [(r["step"], r["val_nll_latest"]) for r in records if "val_nll_latest" in r]
    if not train_pts and not val_pts:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train_pts:
        ax.plot(*zip(*train_pts), label="training loss (crops)", color="#8aa", linewidth=1)
    if train_eval_pts:
        ax.plot(*zip(*train_eval_pts), label="training NLL (whole pieces)", color="#36c", linestyle="--", marker=".")
    if latest_pts:  # with --ema, val_pts are the average's and these the latest weights'
        ax.plot(*zip(*latest_pts), label="validation NLL, latest weights", color="#e99", linestyle=":", marker=".")
    if val_pts:
        label = "validation NLL (whole pieces)" + (", weight average" if latest_pts else "")
        ax.plot(*zip(*val_pts), label=label, color="#c33", marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("nats / event")
    ax.set_title(f"Learning curve: {run_dir.parent.name}/{run_dir.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = run_dir / CURVE_FILE
    fig.savefig(out)
    plt.close(fig)
    return out
