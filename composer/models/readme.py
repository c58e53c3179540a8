"""A published version's model card for people: a Hugging Face style ``README.md`` beside ``card.json``.

The YAML header carries what hubs index (an SPDX license expression over every corpus the
model learned from, the datasets, the metric with its value); the body says what the model
is for, how it was measured and what it does not know. Everything comes from ``card.json``,
so the two never disagree: ``publish`` writes both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

README_FILE = "README.md"

SPDX_IDS = {
    "MIT": "MIT",
    "GPL-3.0": "GPL-3.0-only",  # SPDX's deprecated short form means "only"
    "GPL-3.0-only": "GPL-3.0-only",
    "GPL-3.0-or-later": "GPL-3.0-or-later",
    "CC BY-NC-SA 4.0": "CC-BY-NC-SA-4.0",
    "CC-BY-NC-SA-4.0": "CC-BY-NC-SA-4.0",
    "CC BY 4.0": "CC-BY-4.0",
    "CC-BY-4.0": "CC-BY-4.0",
    "CC0-1.0": "CC0-1.0",
    "CC0": "CC0-1.0",
    "BSD-3-Clause": "BSD-3-Clause",
    "Apache-2.0": "Apache-2.0",
    "PD": "LicenseRef-public-domain",
}


def spdx_id(license_text: str, genre: str) -> str:
    """A manifest's license as an SPDX identifier; free text becomes ``LicenseRef-<genre>-corpus``
    (SPDX's form for a license it does not list; the text itself is in the README's body)."""
    text = license_text.strip()
    return SPDX_IDS.get(text) or f"LicenseRef-{re.sub(r'[^A-Za-z0-9.-]+', '-', genre).strip('-')}-corpus"


def license_expression(data: list[dict]) -> str:
    """Every corpus's license, joined with AND: the model is derived from all of them."""
    ids = sorted({spdx_id(d.get("license", ""), d.get("genre", "data")) for d in data})
    return " AND ".join(ids) or "NOASSERTION"


def _yaml(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def model_readme(card: dict) -> str:
    """The README.md text for a model card."""
    genre, version = card.get("genre", "?"), card.get("version", "?")
    training = card.get("training", {})
    data = [d for d in training.get("data", []) if isinstance(d, dict)] or [
        {"genre": genre, "sources": [], "license": card.get("license", ""), "attribution": ""}
    ]
    own = [s for d in data if d.get("genre") == genre for s in d.get("sources", [])]
    datasets = own + sorted({s for d in data for s in d.get("sources", [])} - set(own))
    nll = card.get("validation_nll")
    validation = card.get("validation", {})
    config = card.get("config", {})
    lines = [
        "---",
        f"license: {_yaml(license_expression(data))}",
        "library_name: pytorch",
        "tags:",
        *(f"- {t}" for t in ("music-generation", "symbolic-music", "midi", "piano", "performance-rnn", genre)),
        "datasets:",
        *(f"- {_yaml(d)}" for d in datasets),
        "metrics:",
        "- negative-log-likelihood",
        "model-index:",
        f"- name: {_yaml(f'{genre}-{version}')}",
        "  results:",
        "  - task:",
        "      type: music-generation",
        '      name: "Expressive piano performance events (Performance RNN)"',
        "    dataset:",
        f"      name: {_yaml(f'{genre} validation split')}",
        f"      type: {_yaml(datasets[0] if datasets else genre)}",
        "    metrics:",
        "    - type: negative-log-likelihood",
        f"      value: {round(nll, 4) if isinstance(nll, (int, float)) else 'null'}",
        '      name: "validation NLL, nats per event (whole held-out pieces)"',
        "---",
        "",
        f"# {genre} {version}",
        "",
        card.get("description", ""),
        "",
        "A Performance-RNN-style LSTM (Simon & Oore, 2017) over note-on, note-off, time-shift (10 ms) and",
        f"velocity events: {config.get('num_layers', '?')} x {config.get('hidden_size', '?')} LSTM, "
        f"{card.get('parameters', 0):,} parameters"
        + (", conditioned on key and density." if config.get("control_dim") else "."),
        *(
            [
                "A pointer head copies from the piece's own past: each event's probability mixes the LSTM's",
                "with a learned attention over the earlier events of the piece (`composer/nn/pointer.py`).",
            ]
            if config.get("pointer")
            else []
        ),
        "",
        "## Intended use",
        "",
        f"Composing short solo piano pieces in the style of its {genre} corpus for the band bot (a mention on",
        "Mastodon or X gets a piece back), and studying symbolic music models. Not for passing its output off",
        "as a person's performance, nor for imitating a particular living musician.",
        "",
        "## Training data",
        "",
        *(
            f"- {d.get('genre', '?')}: {', '.join(d.get('sources', [])) or '?'} — license: {d.get('license', '?')}"
            + (f"; {d['attribution']}" if d.get("attribution") else "")
            for d in data
        ),
        "",
        f"{training.get('step', '?')} optimizer steps"
        + (f", fine-tuned from `{training['init_from']}`" if training.get("init_from") else ", from scratch")
        + (f", {training['events_seen']:,} events seen." if training.get("events_seen") else "."),
        "",
        "## Evaluation",
        "",
        f"Validation NLL {nll:.4f} nats per event" if isinstance(nll, (int, float)) else "Validation NLL: not measured",
        f"over {validation.get('pieces', '?')} whole held-out pieces ({validation.get('events') or 0:,} events) "
        "of the genre, none of which it trained on. `composer report --genre "
        f"{genre}` sets it beside the n-gram baseline and the other genres' models.",
        "",
        "## Limitations",
        "",
        f"- It is meant for {genre} ({card.get('description') or genre}) and learned from the corpora above",
        "  only. Music they do not hold —",
        "  other traditions, periods and styles, other instruments, singing, lyrics — is not covered, and",
        "  asking for it gets the corpus's style anyway.",
        "- Solo piano only: one instrument, no drums, no dynamics beyond 32 velocity levels, no sustain pedal",
        "  beyond what is folded into note lengths.",
        "- Long-range form is weak: themes seldom return by themselves (the composer imposes a form plan)"
        + ("; the pointer head copies phrases back, but no form of its own." if config.get("pointer") else "."),
    ]
    if any("NC" in d.get("license", "") for d in data):
        lines.append("- A corpus is licensed for non-commercial use only (NC): so is what the model learned from it.")
    return "\n".join(lines) + "\n"


def write_model_readme(directory: Path) -> Path:
    """Write ``README.md`` beside the version's ``card.json``."""
    card = json.loads((directory / "card.json").read_text())
    path = directory / README_FILE
    path.write_text(model_readme(card), encoding="utf-8")
    return path
