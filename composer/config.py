"""Where the composer finds corpora, caches, runs and models: one typed place.

Every setting can be overridden by an environment variable with the ``COMPOSER_`` prefix
(for example ``COMPOSER_DATA_ROOT=/srv/midi``) or by a ``.env`` file in the working
directory.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ComposerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMPOSER_", env_file=".env", extra="ignore")

    data_root: Path = PROJECT_ROOT.parent / "shared" / "data"
    """Root of the MIDI corpora that genre manifests name as sources."""
    genres_dir: Path = PROJECT_ROOT / "data" / "genres"
    """Genre manifests (one TOML file per genre)."""
    models_dir: Path = PROJECT_ROOT / "data" / "models"
    """Trained models: ``<genre>/<version>/`` with a ``CURRENT`` file per genre."""
    studies_dir: Path = PROJECT_ROOT / "data" / "studies"
    """Training studies kept with the project (``composer study``), drawn in the model report."""
    cache_dir: Path = PROJECT_ROOT / ".cache"
    """Encoded token arrays made by ``composer prepare``."""
    runs_dir: Path = PROJECT_ROOT / "runs"
    """Training runs: checkpoints, metrics logs and learning curves."""
    sample_threads: int = 1
    """torch threads for sampling on a CPU (one step is too small to share; 0: torch's default)."""
    device: str = "auto"
    """``auto`` picks CUDA when present, else the CPU; or name one (``cpu``, ``cuda:1``)."""
    soundfont: Path | None = None
    """The .sf2 used to render audio; unset: Debian's FluidR3 GM (``apt-get install fluid-soundfont-gm``)."""

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE.match(value.strip() or "auto"):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value.strip() or "auto"


@lru_cache(maxsize=1)
def settings() -> ComposerSettings:
    return ComposerSettings()


def pick_device(name: str = "auto"):
    """A torch device from a setting: ``auto`` (or empty) is CUDA when present, else the CPU."""
    import torch  # here, so reading settings does not load torch

    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
