"""Primers and requests built to cost the composer: refused at once with a 4xx, or cut to what is read."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer.codec import events
from composer.codec.midi import load_notes
from composer.contract import SILENT_PIECE, CompositionRejected, SilentPiece
from composer.sampling.sample import primer_tokens
from composer.serving.composition import (
    MAX_PRIMER_EVENTS,
    MAX_PRIMER_SPAN_SECONDS,
    primer_from,
    primer_window,
)
from composer.serving.local import LocalComposerClient
from tests.test_service import compose, make_models, running


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def two_note_midi(ticks_per_beat: int, tempo_us: int, gap_ticks: int) -> bytes:
    """A type-0 file of ~51 bytes: a tempo, a one-tick note, then another ``gap_ticks`` later."""
    track = (
        b"\x00\xff\x51\x03"
        + tempo_us.to_bytes(3, "big")
        + b"\x00\x90\x3c\x40\x01\x80\x3c\x40"
        + _vlq(gap_ticks)
        + b"\x90\x3e\x40\x01\x80\x3e\x40\x00\xff\x2f\x00"
    )
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_beat) + b"MTrk" + struct.pack(">I", len(track)) + track


def test_the_51_byte_primer_of_millions_of_seconds_is_refused_before_encoding():
    primer = two_note_midi(1, 0xFFFFFF, 100_000)  # one tick a beat, the slowest tempo: 1.7 million seconds
    assert len(primer) == 51
    with pytest.raises(CompositionRejected, match=r"primer lasts \d+ s, more than 3600 s"):
        primer_from(primer, 10.0)
    with pytest.raises(CompositionRejected, match="beyond"):  # the largest tick pretty_midi takes: never tabled
        primer_from(two_note_midi(1, 0xFFFFFF, 9_999_990), 10.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ticks_per_beat=st.integers(1, 960),
    tempo_us=st.integers(1, 0xFFFFFF),
    gap_ticks=st.integers(0, 0x0FFFFFFF),
    primer_seconds=st.floats(0.01, 600),
)
def test_tiny_primers_with_huge_times_are_refused_or_read_exactly(
    ticks_per_beat: int, tempo_us: int, gap_ticks: int, primer_seconds: float
):
    primer = two_note_midi(ticks_per_beat, tempo_us, gap_ticks)
    try:
        tokens = primer_from(primer, primer_seconds)
    except CompositionRejected as exc:
        assert exc.status == 422 and exc.message.startswith("primer")
        return
    notes = load_notes(primer)  # accepted: then it is short, and read exactly as the whole primer is
    assert max(n.end for n in notes) <= MAX_PRIMER_SPAN_SECONDS
    assert tokens is not None and len(tokens) <= MAX_PRIMER_EVENTS
    assert tokens.tolist() == primer_tokens(events.encode(notes).astype("int64"), primer_seconds).tolist()


notes_strategy = st.lists(
    st.builds(
        lambda pitch, velocity, start, length: events.Note(pitch, velocity, start, start + length),
        st.integers(0, 127),
        st.integers(1, 127),
        st.floats(0, 40, allow_nan=False).map(lambda t: round(t, 3)),
        st.floats(0, 8, allow_nan=False).map(lambda t: round(t, 3)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(notes=notes_strategy, seconds=st.floats(0.01, 60))
def test_the_primer_window_encodes_to_the_same_tail_as_the_whole_primer(notes: list[events.Note], seconds: float):
    whole = primer_tokens(events.encode(notes).astype("int64"), seconds)
    window = primer_window(notes, seconds)
    assert len(window) <= len(notes)
    assert primer_tokens(events.encode(window).astype("int64"), seconds).tolist() == whole.tolist()


@pytest.mark.parametrize("token", [-1, events.NUM_EVENTS, 2**63, 2**70, -(2**70)])
def test_token_primers_out_of_range_are_refused_whatever_their_size(token: int):
    with pytest.raises(CompositionRejected, match="primer tokens must be performance events"):
        primer_from([60, token], 10.0)


# --- over HTTP: 4xx, never a 500, and bodies over the limit are not read ---------------------


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running(make_models(tmp_path_factory.mktemp("models")), max_body_bytes=100_000) as base:
        yield base


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"primer": base64.b64encode(two_note_midi(1, 0xFFFFFF, 100_000)).decode()}, "primer lasts"),
        ({"primer": [60, 2**70]}, "primer tokens must be performance events"),
        ({"primer": [2**63]}, "primer tokens must be performance events"),
        ({"seconds": 0.001, "pianoroll": True}, SILENT_PIECE),
    ],
)
def test_hostile_values_get_a_422(url: str, body: dict, says: str):
    response = compose(url, **body)
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]


def test_a_body_over_the_limit_gets_413_before_it_is_read(url: str):
    big = {"genre": "folk", "primer": "A" * 200_000}
    declared = httpx.post(f"{url}/v1/compositions", json=big, timeout=30)
    assert declared.status_code == 413 and "over 100000 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts the bytes as they come
        yield b'{"genre": "folk", "primer": "'
        for _ in range(50):
            yield b"A" * 4096
        yield b'"}'

    streamed = httpx.post(f"{url}/v1/compositions", content=chunks(), timeout=30)
    assert streamed.status_code == 413
    assert compose(url, seconds=2, seed=1).status_code == 200  # the server is none the worse


def test_the_local_client_says_silent_as_the_service_does(tmp_path: Path):
    client = LocalComposerClient(models_dir=make_models(tmp_path))
    with pytest.raises(SilentPiece, match=SILENT_PIECE):
        client.compose("folk", seconds=0.001, seed=1, pianoroll=True)
