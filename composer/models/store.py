"""Loading a genre's current model for serving, and noticing when a new one is promoted.

The service and the in-process client both load models through here, so the same seed
gives the same piece from either: same engine, same batch-invariant stepping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from composer.config import pick_device
from composer.models.registry import CURRENT_FILE, current_version, genre_dir
from composer.models.registry import model_dir as find_model_dir
from composer.sampling.sample import Sampler

SERVING_ENGINE = "auto"
"""int8 on x86 CPUs (batch-invariant, so a seed replayed alone gives the piece it gave in
a batch), float16 products on CUDA, float32 elsewhere (see composer.nn.fastlstm)."""


@dataclass(frozen=True)
class LoadedModel:
    genre: str
    version: str
    sampler: Sampler
    key: tuple[int, str]
    """What CURRENT said when this was loaded (mtime, version): a change means a promotion."""


def current_key(genre: str, models_dir: Path) -> tuple[int, str]:
    """(mtime in ns, version) of the genre's CURRENT file; (0, "") when there is none."""
    pointer = genre_dir(genre, models_dir) / CURRENT_FILE
    try:
        mtime = pointer.stat().st_mtime_ns
    except FileNotFoundError:
        return 0, ""
    return mtime, current_version(genre, models_dir) or ""


def load_current(
    genre: str, models_dir: Path, device: str | torch.device = "auto", engine: str = SERVING_ENGINE
) -> LoadedModel:
    """Load the genre's current version. Raises registry.NoModelError when there is none."""
    key = current_key(genre, models_dir)
    directory = find_model_dir(genre, key[1] or None, models_dir)
    dev = pick_device(device) if isinstance(device, str) else device
    sampler = Sampler.from_dir(directory, dev, engine)
    return LoadedModel(genre, directory.name, sampler, key)
