"""Audio for the report: a sample as an MP3 data URI, so a person can listen to what the numbers say."""

from __future__ import annotations

import base64
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def audio_uri(tokens: Sequence[int]) -> str | None:
    """The piece rendered (FluidSynth, the bot's own sound) as ``data:audio/mpeg;base64,...``;
    None when it has no notes or this machine cannot render (the page then says so)."""
    from composer.sampling.sample import piece_notes

    notes = piece_notes(np.asarray(tokens, dtype=np.int64))
    if not notes:
        return None
    try:
        from composer.audio.render import RenderError, render_audio
    except ImportError as exc:
        log.warning("no audio in the report: %s", exc)
        return None
    with tempfile.TemporaryDirectory(prefix="composer-report-") as tmp:
        try:
            result = render_audio(notes, Path(tmp) / "sample.mp3", format="mp3")
        except RenderError as exc:
            log.warning("no audio in the report: %s", exc)
            return None
        return "data:audio/mpeg;base64," + base64.b64encode(Path(result.path).read_bytes()).decode("ascii")
