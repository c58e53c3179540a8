"""The GPU run (composer.training.gpu_run, scripts/gpu_run.sh), rehearsed on the CPU with tiny data.

The same script as on the GPU machine, with a budget of seconds and a tiny model: what it
writes must be a model directory that promotion accepts, with the figures a GPU run reports.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from composer.codec import controls, events
from composer.corpus.data import STRETCHES, TokenBundle, _bundle
from composer.models.registry import current_version, promote, set_current
from composer.nn.model import ModelConfig, PerformanceRNN, load_model, save_model
from composer.training import gpu_run
from composer.training.evaluate import sequences_nll

ROOT = Path(__file__).resolve().parents[1]
GENRES = ("folk", "pop")


def synthetic_piece(rng: np.random.Generator, notes: int) -> list[events.Note]:
    """A short random performance: a scale-bound melody with chords now and then."""
    out, t = [], 0.0
    scale = [0, 2, 4, 5, 7, 9, 11]
    for _ in range(notes):
        pitch = 60 + scale[int(rng.integers(7))] + 12 * int(rng.integers(-1, 2))
        length = float(rng.choice([0.12, 0.25, 0.5, 1.2]))
        out.append(events.Note(pitch, int(rng.integers(40, 110)), t, t + length))
        if rng.random() < 0.2:
            out.append(events.Note(pitch - 12, 60, t, t + 2 * length))
        t += float(rng.choice([0.0, 0.12, 0.25, 0.5, 2.5]))
    return out


def write_genre(cache: Path, genre: str, train_files: int, val_files: int, seed: int) -> None:
    """A prepared genre as ``composer prepare`` lays it out: each training file in every stretch."""
    rng = np.random.default_rng(seed)
    out = cache / "genres" / genre
    out.mkdir(parents=True, exist_ok=True)
    index = {"fingerprint": f"fp-{genre}", "genre": genre, "files": [], "skipped": []}
    for split, count in (("train", train_files), ("validation", val_files)):
        streams = []
        for i in range(count):
            notes = synthetic_piece(rng, int(rng.integers(15, 60)))
            stretches = STRETCHES if split == "train" else (1.0,)
            file_streams = [events.encode(notes, s) for s in stretches]
            streams.extend(file_streams)
            plain = file_streams[stretches.index(1.0)]
            index["files"].append(
                {
                    "path": f"/x/{genre}/{split}{i}.mid",
                    "piece": f"{split}{i}",
                    "split": split,
                    "seconds": 10.0,
                    "events": len(plain),
                }
            )
        tokens, offsets = _bundle(streams)
        np.savez(out / f"{split}.npz", tokens=tokens, offsets=offsets)
    (out / "index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gpu")
    cache = root / "cache"
    for i, genre in enumerate(GENRES):
        write_genre(cache, genre, train_files=10, val_files=3, seed=i)
    models = root / "models"
    torch.manual_seed(0)
    shipped = PerformanceRNN(ModelConfig(embed_dim=16, hidden_size=32, num_layers=2))
    save_model(shipped, models / "folk" / "v1", {"genre": "folk", "validation_nll": 9.9, "version": "v1"}, half=True)
    set_current("folk", "v1", models)
    return {"root": root, "cache": cache, "models": models}


def test_bundle_controls_match_piece_controls(tiny):
    bundle = TokenBundle.load(tiny["cache"], "folk", "train")
    got = gpu_run.bundle_controls(bundle.tokens, bundle.offsets, "cpu", max_cells=3000).float().numpy()
    for i in range(len(bundle)):
        lo, hi = bundle.offsets[i], bundle.offsets[i + 1]
        want = controls.piece_controls(bundle.tokens[lo:hi])
        np.testing.assert_allclose(got[lo:hi], want, atol=2e-3)  # float16 storage


def test_device_crops_are_crop_sampler_crops(tiny):
    bundle = TokenBundle.load(tiny["cache"], "pop", "train")
    ctrl = gpu_run.bundle_controls(bundle.tokens, bundle.offsets, "cpu")
    crops = gpu_run.DeviceCrops(bundle, 48, 3, seed=1, start_fraction=0.3, device="cpu", ctrl=ctrl)
    tokens, crop_controls = crops.batch(64)
    assert tokens.shape == (64, 49) and crop_controls.shape == (64, 48, controls.CONTROL_DIM)
    starts = set(bundle.offsets[:-1].tolist())
    openings = 0
    for row in range(64):
        window = tokens[row].numpy()
        real = window[window != events.PAD]
        # the crop is a window of some piece, shifted by one transposition within the pitch range
        found = False
        for i in range(len(bundle)):
            piece = bundle.tokens[bundle.offsets[i] : bundle.offsets[i + 1]].astype(np.int64)
            for shift in range(-3, 4):
                moved = np.where(piece < events.TIME_SHIFT, piece + shift, piece)
                hits = [s for s in range(len(piece) - len(real) + 1) if np.array_equal(moved[s : s + len(real)], real)]
                if hits:
                    found = True
                    openings += hits[0] == 0 and bundle.offsets[i] in starts
                    pitches = real[real < events.TIME_SHIFT] % 128
                    assert pitches.size == 0 or (pitches.min() >= 0 and pitches.max() <= 127)
                    untransposed = piece[hits[0] : hits[0] + len(real)]
                    want = controls.piece_controls(piece)[hits[0] + 1 : hits[0] + len(real)]
                    want = controls.transpose_controls(want, shift)
                    if np.array_equal(untransposed, real) or shift:
                        np.testing.assert_allclose(crop_controls[row, : len(want)].numpy(), want, atol=2e-3)
                    break
            if found:
                break
        assert found, f"crop {row} is no window of any piece"
    assert openings >= 5  # start_fraction 0.3 of 64 crops
    dropped = crops.batch(256, control_dropout=0.5)[1]
    no_key = dropped[:, 0, controls.NO_KEY] == 1
    assert 0.3 < float(no_key.float().mean()) < 0.7
    assert torch.all(dropped[no_key][..., controls.PITCH] == 0)


def test_pieces_nll_with_precomputed_gpu_controls_is_sequences_nll(tiny):
    bundle = TokenBundle.load(tiny["cache"], "folk", "validation")
    seqs = [bundle.sequence(i).astype(np.int64) for i in range(len(bundle))]
    torch.manual_seed(1)
    model = PerformanceRNN(ModelConfig(embed_dim=8, hidden_size=16, num_layers=2, control_dim=controls.CONTROL_DIM))
    total, count, complete = gpu_run.pieces_nll(model, seqs, "cpu", batch_size=2, chunk=40)
    assert complete and (total, count) == pytest.approx(sequences_nll(model, seqs, batch_size=2, chunk=40))
    ctrl = gpu_run.bundle_controls(bundle.tokens, bundle.offsets, "cpu")
    per_piece = [ctrl[bundle.offsets[i] : bundle.offsets[i + 1]] for i in range(len(bundle))]
    total, count, _ = gpu_run.pieces_nll(model, seqs, "cpu", piece_controls=per_piece, batch_size=2, chunk=40)
    want = sequences_nll(model, seqs, batch_size=2, chunk=40, controlled=True)
    assert total == pytest.approx(want[0], rel=1e-3) and count == want[1]


def test_thinning_keeps_whole_files_the_same_way_each_time(tiny):
    folder = tiny["cache"] / "genres" / "pop"
    first = gpu_run.thin_train(folder, 0.5)
    assert first == gpu_run.thin_train(folder, 0.5)
    npz, index, kept, total = first
    assert 0 < kept < total == 10
    assert len([f for f in json.loads(index)["files"] if f["split"] == "train"]) == kept
    with np.load(io.BytesIO(npz)) as data:
        assert len(data["offsets"]) - 1 == kept * len(STRETCHES)
    npz, index, kept, _ = gpu_run.thin_train(folder, 1.0, stretches=(1.0,))
    plain = TokenBundle.load(tiny["cache"], "pop", "train")
    with np.load(io.BytesIO(npz)) as data:
        thinned = TokenBundle(data["tokens"], data["offsets"])
    assert kept == 10 and len(thinned) == 10
    middle = STRETCHES.index(1.0)
    for i in range(10):
        assert np.array_equal(thinned.sequence(i), plain.sequence(i * len(STRETCHES) + middle))


def test_the_training_path_imports_without_pretty_midi():
    """The GPU machine has none of pretty_midi, mido, music21, typer: the run needs none of them
    (a MIDI read still fails loudly)."""
    code = (
        "import sys\n"
        "for name in ('pretty_midi', 'mido', 'music21', 'typer', 'fastapi', 'uvicorn'):\n"
        "    sys.modules[name] = None  # absent on the GPU machine\n"
        "from composer.training import gpu_run\n"
        "assert gpu_run._stand_in_for_pretty_midi()\n"
        "import composer.training.train, composer.sampling.sample, composer.models.registry, benchmarks.sampling\n"
        "from composer.codec import midi\n"
        "try:\n    midi.read_midi(b'x')\nexcept midi.MidiError as e:\n    print('refused', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused" in done.stdout and "cannot be read on this machine" in done.stdout


def test_the_gpu_run_on_the_cpu_writes_models_that_promotion_accepts(tiny, tmp_path):
    carry = tmp_path / "gpu-carry"
    manifest = gpu_run.pack(tiny["cache"], list(GENRES), carry, wheels=False)
    assert manifest["data_bytes"] > 0 and manifest["subsampled"] == {} and (carry / ".gitignore").is_file()

    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "GPU_CARRY": str(carry),
        "GPU_WORK": str(tmp_path / "work"),
        "GPU_RUN_BUDGET": "24",
        "OMP_NUM_THREADS": "1",
    }
    args = [
        "--genres",
        ",".join(GENRES),
        "--init",
        "folk",
        "--models-dir",
        str(tiny["models"]),
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--pretrain-lr",
        "0.01",
        "--finetune-lr",
        "0.005",
        "--warmup-steps",
        "2",
        "--finetune-warmup-steps",
        "2",
        "--evals-per-stage",
        "2",
        "--train-eval-pieces",
        "2",
        "--sampling-s",
        "4",
        "--sample-seconds",
        "2",
        "--sample-batches",
        "1,4",
        "--engine-batches",
        "8",
        "--final-reserve-s",
        "1.5",
        "--margin-s",
        "1",
    ]
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_run.sh"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    names = sorted(p.name for p in out.iterdir())
    assert names == ["figures.json", "folk.tar", "pop.tar", "pretrain.tar", "run.log"]
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    figures = json.loads((out / "figures.json").read_text())
    assert figures["finished"] and figures["errors"] == []
    for key in ("device", "data", "settings", "training", "plan_s", "stages", "genres", "sampling", "outputs"):
        assert key in figures, key
    assert figures["training"]["precision"] == "fp32"
    assert set(figures["stages"]) == {"pretrain", "finetune-folk", "finetune-pop"}
    assert figures["stages"]["pretrain"]["steps"] > 0 and figures["stages"]["pretrain"]["curve"]
    for genre in GENRES:
        entry = figures["genres"][genre]
        assert entry["validation_complete"] and entry["validation_nll"] < 5.5 and entry["file"] == f"{genre}.tar"
    sampling = figures["sampling"]
    for key in (
        "piece_s",
        "piece_events",
        "piece_with_load_s",
        "seed_replay",
        "events_per_s",
        "best_batch",
        "best_events_per_s",
        "half_vs_float",
        "cuda_graphs",
        "engine_only_events_per_s",
        "targets",
    ):
        assert key in sampling, key
    # measured first, on the model the run starts from, so that every second after it trains
    assert sampling["model"] == str(tiny["models"] / "folk" / "v1") and figures["sampling_s"] >= 0
    assert list(figures).index("sampling") < list(figures).index("stages")
    assert sampling["seed_replay"]["same_seed_twice_identical"]
    profiled = sampling["piece_profile"]
    assert profiled and {"op", "calls", "self_cpu_us", "self_device_us"} <= set(profiled[0])
    assert any(r["op"].startswith("aten::") for r in profiled)
    assert sampling["seed_replay"]["alone_and_in_batch_of_4_identical"]  # on a CPU every engine guarantees it

    # a returned model directory is one that promotion accepts, in place of the shipped one
    with tarfile.open(out / "folk.tar") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    best = tmp_path / "back" / "folk" / "best"
    model, card = load_model(best)
    assert next(model.parameters()).dtype == torch.float32 and card["genre"] == "folk"
    assert card["validation"]["split"] == "fp-folk" and card["training"]["init_from"]
    assert (tmp_path / "back" / "folk" / "metrics.jsonl").is_file()
    models = tmp_path / "models"
    shutil.copytree(tiny["models"], models)
    shutil.copytree(best, models / "folk" / "v2")
    done = promote("folk", "v2", cache_dir=tiny["cache"], models_dir=models)
    assert done.changed and done.scores["v2"] < done.scores["v1"] and current_version("folk", models) == "v2"

    # publish: every returned genre as a version, scored here, with its curves
    published = gpu_run.publish_results(
        out, "v3", promote=True, work=tmp_path / "runs", cache_dir=tiny["cache"], models_dir=tmp_path / "models"
    )
    assert {p["genre"] for p in published} == set(GENRES)
    assert current_version("pop", tmp_path / "models") == "v3"  # pop had no version: its first is current
    training = sorted(p.name for p in (tmp_path / "models" / "folk" / "v3" / "training").iterdir())
    assert "finetune-metrics.jsonl" in training and "gpu-pretrain-metrics.jsonl" in training


def test_a_conditioned_run_trains_models_that_take_controls(tiny, tmp_path):
    carry = tmp_path / "gpu-carry"
    gpu_run.pack(tiny["cache"], ["folk"], carry, wheels=False)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "GPU_CARRY": str(carry),
        "GPU_WORK": str(tmp_path / "work"),
        "GPU_RUN_BUDGET": "14",
        "OMP_NUM_THREADS": "1",
    }
    args = [
        "--conditioned",
        "--genres",
        "folk",
        "--init",
        "fresh",
        "--models-dir",
        str(tiny["models"]),
        "--device",
        "cpu",
        "--hidden-size",
        "16",
        "--num-layers",
        "1",
        "--embed-dim",
        "8",
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--evals-per-stage",
        "2",
        "--train-eval-pieces",
        "0",
        "--sampling-s",
        "0",
        "--final-reserve-s",
        "3",
        "--margin-s",
        "0.5",
        "--pretrain-share",
        "0.3",
    ]
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_run.sh"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((out / "figures.json").read_text())
    assert figures["errors"] == [] and figures["conditioned"] and figures["controls_s"] >= 0
    with tarfile.open(out / "folk.tar") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    model, card = load_model(tmp_path / "back" / "folk" / "best")
    assert model.config.control_dim == controls.CONTROL_DIM and card["training"]["controls"]
    assert "validation_nll_controlled" in figures["genres"]["folk"]
    assert any("val_nll_controlled" in r for r in figures["stages"]["finetune-folk"]["curve"])


def test_a_model_that_never_beat_its_shipped_start_is_not_published_again(tiny, tmp_path):
    torch.manual_seed(2)
    model = PerformanceRNN(ModelConfig(embed_dim=16, hidden_size=32, num_layers=2))
    card = {"genre": "folk", "training": {"init_from": "data/models/folk/v1"}, "gpu_run": {"kept_start": True}}
    save_model(model, tmp_path / "returned" / "folk" / "best", card)
    out = tmp_path / "out"
    out.mkdir()
    with tarfile.open(out / "folk.tar", "w") as tar:
        tar.add(tmp_path / "returned" / "folk", "folk")
    models = tmp_path / "models"
    shutil.copytree(tiny["models"], models)
    done = gpu_run.publish_results(out, "v9", work=tmp_path / "runs", cache_dir=tiny["cache"], models_dir=models)
    assert done == [{"genre": "folk", "skipped": "the fine-tune never beat its start, data/models/folk/v1"}]
    assert not (models / "folk" / "v9").exists()
