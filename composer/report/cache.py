"""The report's result cache: JSON files under ``<cache>/report/`` named by a digest of what they depend on.

Every measurement of the report (a baseline, a model's samples, one NLL cell, the whole report)
is a plain JSON dict kept at ``<cache>/report/<kind>-<digest>.json``. The digest covers
``CELL_FORMAT``, the kind and a key payload naming everything the result depends on (model
weights, the split, the options, the sampling code), so a stale file is never read: it is
just no longer asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

CELL_FORMAT = 1  # bump when baselines, samples or NLL cells are measured differently: their cache keys


def digest(payload) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached(cache: Path | None, kind: str, key_payload, compute: Callable[[], dict], refresh: bool = False) -> dict:
    """A JSON result kept at ``cache/kind-<sha1 of key>.json``; written atomically."""
    if cache is None:
        return json.loads(json.dumps(compute()))
    path = cache / f"{kind}-{digest([CELL_FORMAT, kind, key_payload])}.json"
    if path.is_file() and not refresh:
        try:
            return json.loads(path.read_text())
        except ValueError:
            log.warning("ignoring a broken cache file %s", path)
    text = json.dumps(compute())
    cache.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    part.write_text(text)
    os.replace(part, path)
    return json.loads(text)  # the same plain types whether computed now or read back


def file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sampler_code() -> str:
    """The sampling code's own fingerprint: samples are only reused while it is unchanged."""
    package = Path(__file__).parents[1]
    sources = ("sampling/sample.py", "nn/fastlstm.py", "codec/events.py")
    return digest([(package / name).read_text() for name in sources])
