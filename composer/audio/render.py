"""Pieces to listenable audio: FluidSynth with a grand-piano SoundFont, then mastering.

The chain: notes -> one-track piano MIDI (with a silent marker 2 s past the last note-off,
so the release and reverb tail are rendered) -> ``fluidsynth`` as float WAV at 44.1 kHz
stereo -> trim trailing silence, fade out -> -16 LUFS integrated (ITU-R BS.1770: pieces
sound equally loud, whatever the model played) under a -1 dBFS true-peak ceiling -> WAV,
MP3, OGG Vorbis, or MP4 (the piano roll as a still picture, for X, which takes no bare
audio). Every output is written to a temporary file beside the target and renamed, so a
failure never leaves a partial file behind.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from composer.codec.events import Note

SAMPLE_RATE = 44_100
CHANNELS = 2
TARGET_LUFS = -16.0
CEILING_DBFS = -1.0
MAX_LIMIT_DB = 6.0  # limit at most this much; beyond it the whole piece is made quieter instead
TAIL_SECONDS = 2.0  # rendered past the last note-off for the release and the reverb
MIN_TAIL_SECONDS = 1.0  # kept after the last note-off even when the tail is quieter than the threshold
SILENCE_DB = -60.0  # below the piece's peak: where the trailing tail is cut
FADE_SECONDS = 0.75
MAX_SECONDS = 30 * 60.0  # guards against a corrupt file whose one note ends hours later
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
FORMATS = ("wav", "mp3", "ogg", "mp4")
VIDEO_SIZE = (1280, 720)
VIDEO_FPS = 10

# Gentle hall: FluidSynth's default reverb is a small room at full level; chorus off (it smears a piano).
FLUIDSYNTH_SETTINGS = {
    "synth.reverb.active": "1",
    "synth.reverb.room-size": "0.55",
    "synth.reverb.damp": "0.35",
    "synth.reverb.width": "0.8",
    "synth.reverb.level": "0.35",
    "synth.chorus.active": "0",
    "synth.polyphony": "512",
    "synth.dynamic-sample-loading": "1",  # load only the piano's samples: faster start
}


class RenderError(ValueError):
    """The piece cannot be rendered: bad input, or a missing tool or SoundFont."""


class TooQuiet(RenderError):
    """The piece itself has nothing loud enough to render (no notes, or too few and too soft to measure)."""


@dataclass(frozen=True, slots=True)
class RenderResult:
    """What was written, and how it measures (before lossy encoding)."""

    path: Path
    format: str
    duration_s: float
    sample_rate: int
    channels: int
    loudness_lufs: float
    peak_dbfs: float


def require_tool(name: str, package: str | None = None) -> str:
    """The path of an external program, or a RenderError saying which package brings it."""
    found = shutil.which(name)
    if found is None:
        raise RenderError(f"{name} not found: install it with `apt-get install {package or name}`")
    return found


def find_soundfont(soundfont: str | Path | None = None) -> Path:
    """The SoundFont to use: the argument, else COMPOSER_SOUNDFONT, else Debian's FluidR3 GM."""
    from composer.config import settings

    chosen = soundfont or settings().soundfont
    if chosen is not None:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise RenderError(f"SoundFont {path} not found")
        with path.open("rb") as handle:
            header = handle.read(12)
        # FluidSynth would quietly fall back to its default SoundFont: refuse what it cannot load.
        if header[:4] != b"RIFF" or header[8:12] not in (b"sfbk", b"DLS "):
            raise RenderError(f"{path} is not a SoundFont (.sf2)")
        return path
    if DEFAULT_SOUNDFONT.is_file():
        return DEFAULT_SOUNDFONT
    raise RenderError(
        f"no SoundFont at {DEFAULT_SOUNDFONT}: install one with `apt-get install fluid-soundfont-gm` "
        "or point COMPOSER_SOUNDFONT at a .sf2 file"
    )


def output_format(out_path: Path, format: str | None = None) -> str:
    """The format named explicitly, else the one the file's extension names."""
    fmt = (format or out_path.suffix.lstrip(".")).lower()
    fmt = {"oga": "ogg", "m4v": "mp4"}.get(fmt, fmt)
    if fmt not in FORMATS:
        raise RenderError(f"unknown audio format {fmt or out_path.name!r}: use one of {', '.join(FORMATS)}")
    return fmt


def load_piece(source: str | Path | bytes | Sequence[Note]) -> list[Note]:
    """Notes from a MIDI path, MIDI bytes or a list of notes; RenderError when there is nothing to play."""
    from composer.codec.midi import MidiError, load_notes

    if isinstance(source, str | Path | bytes):
        try:
            notes = load_notes(source)
        except MidiError as exc:
            raise RenderError(str(exc)) from None
    else:
        notes = list(source)
    if not notes:
        raise TooQuiet("the piece has no notes to render")
    end = max(n.end for n in notes)
    if min(n.start for n in notes) < 0 or end > MAX_SECONDS:
        raise RenderError(f"note times outside 0..{MAX_SECONDS:g} s (last note ends at {end:.0f} s)")
    return notes


def synthesize(notes: Sequence[Note], soundfont: Path, workdir: Path) -> np.ndarray:
    """FluidSynth's float render of the notes, (samples, 2), tail included."""
    import pretty_midi

    from composer.codec.midi import notes_to_midi

    fluidsynth = require_tool("fluidsynth")
    midi = notes_to_midi(notes)
    # A pedal-up after the end makes the player run on through the release and reverb.
    end = max(n.end for n in notes) + TAIL_SECONDS
    midi.instruments[0].control_changes.append(pretty_midi.ControlChange(64, 0, end))
    midi_path, wav_path = workdir / "piece.mid", workdir / "synth.wav"
    midi.write(str(midi_path))
    command = [fluidsynth, "-ni", "-q", "-F", str(wav_path), "-r", str(SAMPLE_RATE), "-T", "wav", "-O", "float"]
    for key, value in FLUIDSYNTH_SETTINGS.items():
        command += ["-o", f"{key}={value}"]
    done = subprocess.run([*command, str(soundfont), str(midi_path)], capture_output=True, text=True)
    why = [line for line in (done.stderr + done.stdout).splitlines() if "error" in line.lower()]
    if done.returncode != 0 or not wav_path.is_file() or any("soundfont" in line.lower() for line in why):
        reason = why[-1].split("error:", 1)[-1].strip() if why else f"exit code {done.returncode}"
        raise RenderError(f"fluidsynth failed: {reason}")
    return _read_wav(wav_path)


def _read_wav(path: Path) -> np.ndarray:
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    if rate != SAMPLE_RATE or audio.shape[1] != CHANNELS or not len(audio):
        raise RenderError(f"fluidsynth wrote {audio.shape[1]} channel(s) at {rate} Hz, {len(audio)} samples")
    return audio


def envelope(audio: np.ndarray) -> np.ndarray:
    """The largest absolute sample across channels, per frame (a column loop: axis=1 max is slow)."""
    level = np.abs(audio[:, 0])
    for channel in range(1, audio.shape[1]):
        np.maximum(level, np.abs(audio[:, channel]), out=level)
    return level


def trim_and_fade(audio: np.ndarray, last_note_off: float) -> np.ndarray:
    """Cut the silent end, keeping the release tail, and fade the last moments out."""
    level = envelope(audio)
    peak = level.max()
    if peak <= 0:
        raise RenderError("the render is silent (does the SoundFont have a piano on program 0?)")
    loud = np.flatnonzero(level > peak * 10 ** (SILENCE_DB / 20))
    end = max(loud[-1] + int(0.05 * SAMPLE_RATE), int((last_note_off + MIN_TAIL_SECONDS) * SAMPLE_RATE))
    out = audio[: min(end, len(audio))].copy()
    fade = min(int(FADE_SECONDS * SAMPLE_RATE), len(out))
    out[len(out) - fade :] *= (np.cos(np.linspace(0.0, np.pi, fade)) * 0.5 + 0.5)[:, None]
    return out


def integrated_loudness(audio: np.ndarray) -> float:
    """BS.1770 integrated loudness in LUFS (-inf for silence); short clips padded to one gating block."""
    import pyloudnorm

    if len(audio) < int(0.4 * SAMPLE_RATE) + 1:
        audio = np.concatenate([audio, np.zeros((int(0.4 * SAMPLE_RATE) + 1 - len(audio), audio.shape[1]))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns when a sample is above 1.0
        return float(pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(audio))


def true_peak(audio: np.ndarray) -> float:
    """Peak after 4x oversampling (BS.1770 true peak, near enough), linear.

    Only the blocks within 3 dB of the sample peak are oversampled: the rest cannot hold it.
    """
    from scipy.signal import resample_poly

    block = 4096
    level = envelope(audio)
    sample_peak = float(level.max(initial=0.0))
    if sample_peak == 0.0:
        return 0.0
    padded = np.pad(level, (0, -len(level) % block))
    candidates = np.flatnonzero(padded.reshape(-1, block).max(axis=1) >= sample_peak * 10 ** (-3 / 20))
    peak = sample_peak
    for index in candidates:
        lo, hi = max(index * block - 64, 0), min((index + 1) * block + 64, len(audio))
        peak = max(peak, float(np.abs(resample_poly(audio[lo:hi], 4, 1, axis=0)).max()))
    return peak


def limit(audio: np.ndarray, ceiling: float) -> np.ndarray:
    """A look-ahead peak limiter: gain dips smoothly around each peak above ``ceiling``.

    The gain is the minimum needed over [-hold, +attack] around each sample, smoothed by a
    moving average over +-attack; an average of minima over windows that all contain a
    sample never exceeds that sample's own need, so no sample passes the ceiling.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    level = envelope(audio)
    need = np.minimum(1.0, ceiling / np.maximum(level, 1e-12))
    if need.min() >= 1.0:
        return audio
    attack, hold = int(0.003 * SAMPLE_RATE), int(0.06 * SAMPLE_RATE)
    hold += (attack + hold) % 2  # an odd window, so the origin below is exact
    held = minimum_filter1d(need, size=attack + hold + 1, origin=(hold - attack) // 2, mode="nearest")
    gain = np.minimum(uniform_filter1d(held, size=2 * attack + 1, mode="nearest"), need)  # min: float rounding
    return audio * gain[:, None]


def master(audio: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Normalize to TARGET_LUFS under the true-peak ceiling; returns audio, LUFS and peak dBFS.

    Loud transients are limited (at most MAX_LIMIT_DB); a piece that would need more is
    made quieter as a whole rather than squashed, so it may end below the target.
    """
    ceiling = 10 ** (CEILING_DBFS / 20)
    measured = integrated_loudness(audio)
    if not np.isfinite(measured):
        raise TooQuiet("the render is too quiet to measure")
    gain_db = TARGET_LUFS - measured
    raw_peak_db = 20 * np.log10(true_peak(audio))
    for _ in range(2):  # limiting lowers the loudness a little: measure again and correct once
        excess = raw_peak_db + gain_db - CEILING_DBFS - MAX_LIMIT_DB
        if excess > 0:
            gain_db -= excess
        gained = audio * 10 ** (gain_db / 20)
        out = limit(gained, ceiling * 0.97)  # a margin for inter-sample peaks
        if out is gained:  # nothing limited: the gain alone set the loudness
            loudness = measured + gain_db
            break
        loudness = integrated_loudness(out)
        if excess > 0 or abs(loudness - TARGET_LUFS) < 0.1:
            break
        gain_db += TARGET_LUFS - loudness
    peak = true_peak(out)
    if peak > ceiling:
        out *= ceiling / peak
        loudness, peak = integrated_loudness(out), ceiling
    return out, float(loudness), float(20 * np.log10(peak))


def _write_wav(audio: np.ndarray, path: Path) -> None:
    import soundfile

    soundfile.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")


FFMPEG_QUIET = ["-hide_banner", "-loglevel", "error", "-y"]
# LAME's algorithm quality, 0 (slowest) to 9: ffmpeg's default is 3; 5 is LAME's "good speed, reasonable
# quality" and takes about a sixth off the encode, at the same 192 kb/s CBR (issue #18: the MP3 in under 1 s).
MP3_QUALITY = 5
ENCODERS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "192k", "-compression_level", str(MP3_QUALITY)],
    "ogg": ["-c:a", "libvorbis", "-q:a", "6"],
}


def _ffmpeg(args: list[str]) -> None:
    done = subprocess.run(
        [require_tool("ffmpeg"), "-nostdin", *FFMPEG_QUIET, *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise RenderError(f"ffmpeg failed: {lines[-1] if lines else f'exit code {done.returncode}'}")


@contextmanager
def _encoder(fmt: str, target: Path) -> Iterator[Callable[[np.ndarray], None]]:
    """MP3 (192 kb/s CBR) or OGG Vorbis (q6, about 192 kb/s) to ``target``, in one ffmpeg pass: yields the
    function that takes the mastered samples (16-bit PCM on ffmpeg's stdin, quantised as the WAV is).

    ffmpeg starts here, before the samples exist: loading its libraries (about 0.1 s) overlaps
    FluidSynth's render. Leaving the block without encoding ends it.
    """
    raw = ["-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", str(CHANNELS), "-i", "pipe:0"]
    command = [require_tool("ffmpeg"), *FFMPEG_QUIET, *raw, *ENCODERS[fmt], "-f", fmt, str(target)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as ffmpeg:

        def encode(audio: np.ndarray) -> None:
            import soundfile

            pcm = io.BytesIO()
            soundfile.write(pcm, audio, SAMPLE_RATE, subtype="PCM_16", format="RAW")
            _, err = ffmpeg.communicate(pcm.getvalue())
            if ffmpeg.returncode != 0:
                lines = err.decode(errors="replace").strip().splitlines()
                raise RenderError(f"ffmpeg could not encode {fmt}: {lines[-1] if lines else ffmpeg.returncode}")

        try:
            yield encode
        finally:
            if ffmpeg.returncode is None:  # a failure before the samples were ready
                ffmpeg.kill()


def _encode_video(wav: Path, picture: Path, duration: float, target: Path) -> None:
    """H.264 High/yuv420p still picture with AAC-LC 44.1 kHz stereo: what X's media upload takes."""
    _ffmpeg(
        [
            *("-i", str(picture), "-i", str(wav)),
            # Convert the picture once and repeat the frame: far cheaper than decoding the PNG per frame.
            *("-vf", f"scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p,loop=-1:1:0,fps={VIDEO_FPS}"),
            *("-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p", "-tune", "stillimage"),
            *("-preset", "veryfast"),
            *("-c:a", "aac", "-b:a", "192k", "-ar", str(SAMPLE_RATE), "-ac", str(CHANNELS)),
            *("-shortest", "-t", f"{duration:.3f}", "-movflags", "+faststart", "-f", "mp4", str(target)),
        ]
    )


@contextmanager
def _atomic(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``, renamed onto it on success and removed on any error."""
    part = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        yield part
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def render_audio(
    source: str | Path | bytes | Sequence[Note],
    out_path: str | Path,
    format: str | None = None,
    soundfont: str | Path | None = None,
    *,
    title: str | None = None,
    pianoroll: str | Path | None = None,
) -> RenderResult:
    """Render a piece (MIDI path, MIDI bytes or notes) to WAV, MP3, OGG or MP4.

    ``pianoroll`` also writes the piano roll as a PNG there (MP4 shows it in any case);
    ``title`` goes on the piano roll. Raises RenderError with a one-line message.
    """
    from composer.audio.pianoroll import render_pianoroll

    out_path = Path(out_path)
    fmt = output_format(out_path, format)
    for target in (out_path, Path(pianoroll or out_path)):
        if not target.parent.is_dir():
            raise RenderError(f"{target.parent}: no such folder")
    notes = load_piece(source)
    font = find_soundfont(soundfont)
    require_tool("fluidsynth")
    if fmt != "wav":
        require_tool("ffmpeg")

    with tempfile.TemporaryDirectory(prefix="composer-render-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        encoded = workdir / f"encoded.{fmt}"
        encode = stack.enter_context(_encoder(fmt, encoded)) if fmt in ENCODERS else None
        audio = trim_and_fade(synthesize(notes, font, workdir), max(n.end for n in notes))
        audio, loudness, peak_db = master(audio)
        wav = workdir / "master.wav"
        if encode is not None:  # MP3 and OGG take the samples straight from memory
            encode(audio)
        else:
            _write_wav(audio, wav)
        picture = workdir / "roll.png"
        if pianoroll is not None or fmt == "mp4":
            render_pianoroll(notes, picture, title, VIDEO_SIZE)
        try:
            with _atomic(out_path) as part:
                if fmt == "mp4":
                    _encode_video(wav, picture, len(audio) / SAMPLE_RATE, part)
                else:
                    shutil.copyfile(encoded if encode is not None else wav, part)
            if pianoroll is not None:
                with _atomic(Path(pianoroll)) as part:
                    shutil.copyfile(picture, part)
        except OSError as exc:
            raise RenderError(f"cannot write {exc.filename or out_path}: {exc.strerror or exc}") from None
    return RenderResult(out_path, fmt, len(audio) / SAMPLE_RATE, SAMPLE_RATE, CHANNELS, loudness, peak_db)


def bench_piece(seconds: float, data_root: Path | None = None) -> tuple[list[Note], str]:
    """A piano piece of ``seconds`` for benchmarks: the densest opening among the first few
    ASAP (else Nottingham) files under ``data_root`` long enough, else a synthetic one.
    """
    from composer.codec.midi import MidiError, find_midi_files, load_notes

    folders = [Path(data_root) / corpus for corpus in ("asap", "nottingham")] if data_root else []
    for folder in filter(Path.is_dir, folders):
        best: tuple[list[Note], str] | None = None
        for path in find_midi_files(folder)[:10]:
            try:
                notes = load_notes(path)
            except MidiError:
                continue
            if not notes or max(n.end for n in notes) < seconds:
                continue
            cut = [Note(n.pitch, n.velocity, n.start, min(n.end, seconds)) for n in notes if n.start < seconds]
            if best is None or len(cut) > len(best[0]):
                best = cut, str(path)
        if best is not None:
            return best
    beat = 0.5  # 120 bpm
    chords = ((48, 55, 64), (43, 50, 59), (45, 52, 60), (41, 48, 57))  # C G Am F
    tune = (72, 74, 76, 79, 76, 74, 72, 71)
    notes: list[Note] = []
    for bar in range(int(seconds / (4 * beat)) + 1):
        t0 = bar * 4 * beat
        root, fifth, third = chords[bar % 4]
        notes.append(Note(root - 12, 70, t0, t0 + 4 * beat))
        for i, pitch in enumerate((root, fifth, third, fifth, root + 12, fifth, third, fifth)):
            notes.append(Note(pitch, 55 + 5 * (i % 2 == 0), t0 + i * beat / 2, t0 + (i + 1) * beat / 2))
        for i in range(4):
            notes.append(Note(tune[(bar * 4 + i) % len(tune)], 88, t0 + i * beat, t0 + (i + 0.9) * beat))
    notes = [Note(n.pitch, n.velocity, n.start, min(n.end, seconds)) for n in notes if n.start < seconds]
    return notes, "synthetic"
