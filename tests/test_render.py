"""Audio rendering end to end: real FluidSynth, the real SoundFont, real ffmpeg, real files."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile

from composer.audio.pianoroll import render_pianoroll
from composer.audio.render import (
    DEFAULT_SOUNDFONT,
    RenderError,
    _atomic,
    find_soundfont,
    limit,
    output_format,
    render_audio,
)
from composer.codec.events import Note
from composer.codec.midi import load_notes, midi_bytes
from composer.config import PROJECT_ROOT, settings
from tests.conftest import make_midi

PIECE_SECONDS = 3.0
needs_tools = pytest.mark.skipif(
    not all(map(shutil.which, ("fluidsynth", "ffmpeg", "ffprobe"))) or not DEFAULT_SOUNDFONT.is_file(),
    reason="fluidsynth, ffmpeg or FluidR3_GM.sf2 missing (scripts/setup.sh installs them)",
)


def _piece_notes() -> list[tuple[int, int, float, float]]:
    """Three seconds of C F G C: block chords under a tune, soft to loud."""
    notes = []
    for i, root in enumerate((48, 53, 55, 48)):
        t = i * 0.75
        notes += [(p, 60 + 10 * i, t, t + 0.7) for p in (root, root + 4, root + 7)]
        notes += [(72 + 2 * i, 90, t, t + 0.35), (76 + i, 80, t + 0.375, t + 0.75)]
    return notes


@pytest.fixture(scope="module")
def piece(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_midi(tmp_path_factory.mktemp("piece") / "piece.mid", [{"notes": _piece_notes()}])


def decode(path: Path, tmp_path: Path) -> tuple[np.ndarray, int]:
    """Any output back to float samples, decoded by ffmpeg as a player would."""
    wav = tmp_path / f"{path.name}.decoded.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(path), "-c:a", "pcm_f32le", str(wav)])
    audio, rate = soundfile.read(str(wav), always_2d=True)
    return audio, rate


def streams(path: Path) -> list[dict]:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)], capture_output=True, text=True
    )
    return json.loads(probe.stdout)["streams"]


def check_audio(audio: np.ndarray, rate: int, max_peak_dbfs: float) -> None:
    """44.1 kHz stereo, the piece plus its tail, -16 LUFS, no clipping, not silent, faded out."""
    assert rate == 44_100
    assert audio.shape[1] == 2
    assert PIECE_SECONDS + 0.5 <= len(audio) / rate <= PIECE_SECONDS + 2.5
    assert pyloudnorm.Meter(rate).integrated_loudness(audio) == pytest.approx(-16.0, abs=1.0)
    peak_db = 20 * np.log10(np.abs(audio).max())
    assert -12.0 < peak_db <= max_peak_dbfs
    assert np.sqrt(np.mean(audio[: int(PIECE_SECONDS * rate)] ** 2)) > 0.01
    assert np.abs(audio[-int(0.02 * rate) :]).max() < 0.01  # the fade-out reached silence


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@needs_tools
def test_wav_from_a_midi_file(piece: Path, tmp_path: Path) -> None:
    out = tmp_path / "piece.wav"
    result = render_audio(piece, out)
    assert (result.path, result.format, result.sample_rate, result.channels) == (out, "wav", 44_100, 2)
    assert result.loudness_lufs == pytest.approx(-16.0, abs=0.3)
    assert result.peak_dbfs <= -0.99
    audio, rate = soundfile.read(str(out), always_2d=True)
    assert soundfile.info(str(out)).subtype == "PCM_16"
    assert len(audio) / rate == pytest.approx(result.duration_s, abs=0.01)
    check_audio(audio, rate, max_peak_dbfs=-0.9)
    assert leftovers(tmp_path) == []


@needs_tools
@pytest.mark.parametrize(("fmt", "codec"), [("mp3", "mp3"), ("ogg", "vorbis")])
def test_mastodon_formats_from_bytes_and_notes(piece: Path, tmp_path: Path, fmt: str, codec: str) -> None:
    source = midi_bytes(load_notes(piece)) if fmt == "mp3" else load_notes(piece)
    out = render_audio(source, tmp_path / f"piece.{fmt}").path
    (stream,) = streams(out)
    assert (stream["codec_name"], int(stream["sample_rate"]), stream["channels"]) == (codec, 44_100, 2)
    if fmt == "mp3":  # the quicker LAME setting keeps the bitrate: 192 kb/s constant
        assert int(stream["bit_rate"]) == 192_000
    audio, rate = decode(out, tmp_path)
    check_audio(audio, rate, max_peak_dbfs=-0.5)  # lossy coding may lift peaks a little


@needs_tools
def test_mp4_for_x_shows_the_piano_roll(piece: Path, tmp_path: Path) -> None:
    roll = tmp_path / "roll.png"
    result = render_audio(piece, tmp_path / "piece.mp4", title="test piece", pianoroll=roll)
    found = {s["codec_type"]: s for s in streams(result.path)}
    video, audio = found["video"], found["audio"]
    assert (video["codec_name"], video["profile"], video["pix_fmt"]) == ("h264", "High", "yuv420p")
    assert (video["width"], video["height"]) == (1280, 720)
    assert (audio["codec_name"], audio["profile"], int(audio["sample_rate"]), audio["channels"]) == (
        "aac",
        "LC",
        44_100,
        2,
    )
    assert float(video["duration"]) == pytest.approx(result.duration_s, abs=0.25)
    samples, rate = decode(result.path, tmp_path)
    check_audio(samples, rate, max_peak_dbfs=-0.5)
    assert png_size(roll) == (1280, 720)


def test_format_from_extension_or_argument(tmp_path: Path) -> None:
    assert output_format(tmp_path / "a.MP3") == "mp3"
    assert output_format(tmp_path / "a.bin", "ogg") == "ogg"
    with pytest.raises(RenderError, match="unknown audio format"):
        render_audio([Note(60, 80, 0.0, 1.0)], tmp_path / "a.flac")
    assert list(tmp_path.iterdir()) == []


@needs_tools
@pytest.mark.parametrize("kind", ["corrupt", "empty", "corrupt bytes"])
def test_bad_midi_is_a_one_line_error_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out.mp3"
    if kind == "empty":
        source: Path | bytes = make_midi(tmp_path / "empty.mid", [{"notes": []}])
    elif kind == "corrupt":
        source = tmp_path / "bad.mid"
        source.write_bytes(b"MThd\x00\x00\x00\x06 definitely not MIDI")
    else:
        source = b"garbage"
    before = set(tmp_path.iterdir())
    with pytest.raises(RenderError) as err:
        render_audio(source, out)
    assert "\n" not in str(err.value)
    assert ("no notes" in str(err.value)) == (kind == "empty")
    assert set(tmp_path.iterdir()) == before


@needs_tools
@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
def test_a_synthesis_failure_ends_the_encoder_started_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """ffmpeg starts before FluidSynth so its start-up overlaps; a render that fails first leaves no
    ffmpeg running and no file behind."""
    started: list[subprocess.Popen] = []
    popen = subprocess.Popen

    def watched(*args, **kwargs) -> subprocess.Popen:
        started.append(popen(*args, **kwargs))
        return started[-1]

    def broken(*_: object) -> np.ndarray:
        raise RenderError("fluidsynth failed: a broken synthesizer")

    monkeypatch.setattr(subprocess, "Popen", watched)
    monkeypatch.setattr("composer.audio.render.synthesize", broken)
    with pytest.raises(RenderError, match="broken synthesizer"):
        render_audio([Note(60, 80, 0.0, 1.0)], tmp_path / f"out.{fmt}")
    assert [p.args[0] for p in started] == [shutil.which("ffmpeg")]
    assert started[0].returncode is not None  # ended and reaped, not left running
    assert list(tmp_path.iterdir()) == []


@needs_tools
def test_failure_keeps_an_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    out.write_bytes(b"the previous render")
    (tmp_path / "bad.mid").write_bytes(b"not midi")
    with pytest.raises(RenderError):
        render_audio(tmp_path / "bad.mid", out)
    assert out.read_bytes() == b"the previous render"


def test_atomic_write_removes_the_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.mp3"
    with pytest.raises(RuntimeError), _atomic(target) as part:
        part.write_bytes(b"half an mp3")
        raise RuntimeError("encoder died")
    assert list(tmp_path.iterdir()) == []
    with _atomic(target) as part:
        part.write_bytes(b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp3"]


def test_missing_soundfont_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RenderError, match=r"SoundFont .*nope\.sf2 not found"):
        render_audio([Note(60, 80, 0.0, 1.0)], tmp_path / "a.wav", soundfont=tmp_path / "nope.sf2")
    (tmp_path / "noise.sf2").write_bytes(os.urandom(4096))
    with pytest.raises(RenderError, match=r"noise\.sf2 is not a SoundFont"):
        render_audio([Note(60, 80, 0.0, 1.0)], tmp_path / "a.wav", soundfont=tmp_path / "noise.sf2")
    assert [p.name for p in tmp_path.iterdir()] == ["noise.sf2"]
    if settings().soundfont is None:  # with no setting, the default's absence names the package
        monkeypatch.setattr("composer.audio.render.DEFAULT_SOUNDFONT", tmp_path / "FluidR3_GM.sf2")
        with pytest.raises(RenderError, match=r"apt-get install fluid-soundfont-gm"):
            find_soundfont()


@needs_tools
def test_missing_programs_name_their_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    only_fluidsynth = tmp_path / "bin"
    only_fluidsynth.mkdir()
    (only_fluidsynth / "fluidsynth").symlink_to(shutil.which("fluidsynth"))
    notes = [Note(60, 80, 0.0, 1.0)]
    monkeypatch.setenv("PATH", str(only_fluidsynth))
    with pytest.raises(RenderError, match=r"^ffmpeg not found: install it with `apt-get install ffmpeg`$"):
        render_audio(notes, tmp_path / "a.mp3")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RenderError, match=r"^fluidsynth not found: install it with `apt-get install fluidsynth`$"):
        render_audio(notes, tmp_path / "a.wav")
    assert [p.name for p in tmp_path.iterdir()] == ["bin"]


def test_limiter_holds_the_ceiling_and_leaves_quiet_parts() -> None:
    rate = 44_100
    t = np.arange(rate) / rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1)
    audio[22_050:22_100] *= 4.0  # a 1.2 transient
    out = limit(audio, 0.8)
    assert np.abs(out).max() <= 0.8 + 1e-9
    np.testing.assert_allclose(out[:10_000], audio[:10_000])
    np.testing.assert_allclose(out[30_000:], audio[30_000:])


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_pianoroll_thumbnail(tmp_path: Path) -> None:
    notes = [Note(40 + (i * 7) % 40, 20 + i * 3, i * 0.1, i * 0.1 + 0.4) for i in range(30)]
    assert png_size(render_pianoroll(notes, tmp_path / "t.png", size=(640, 360))) == (640, 360)
    with pytest.raises(ValueError, match="no notes"):
        render_pianoroll([], tmp_path / "none.png")
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composer.cli", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        timeout=120,
    )


@needs_tools
def test_cli_render(piece: Path, tmp_path: Path) -> None:
    out, roll = tmp_path / "piece.mp3", tmp_path / "roll.png"
    done = run_cli("render", str(piece), "--out", str(out), "--pianoroll", str(roll))
    assert done.returncode == 0, done.stderr
    assert "LUFS" in done.stdout and " s, " in done.stdout
    assert out.stat().st_size > 10_000 and png_size(roll) == (1280, 720)


@needs_tools
def test_cli_render_errors(piece: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not a midi file at all")
    cases = [
        (run_cli("render", str(bad), "--out", str(tmp_path / "x.mp3")), "not a readable MIDI file"),
        (run_cli("render", str(piece), "--out", str(tmp_path / "x.ogg"), COMPOSER_SOUNDFONT="/nope.sf2"), "/nope.sf2"),
        (run_cli("render", str(piece), "--out", str(tmp_path / "x.mp3"), "--format", "aiff"), "unknown audio format"),
    ]
    for done, message in cases:
        assert done.returncode == 2
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
        assert message in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["bad.mid"]


@needs_tools
def test_cli_bench_render(tmp_path: Path) -> None:
    done = run_cli("bench-render", "--seconds", "3", "--json", COMPOSER_DATA_ROOT=str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["source"] == "synthetic" and result["piece_s"] == 3
    assert all(result[f"{fmt}_s"] > 0 for fmt in ("wav", "mp3", "mp4"))
