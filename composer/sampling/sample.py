"""Sampling new pieces from a genre model, one or many streams at once.

Each stream has its own random generator seeded from its own seed, and draws one uniform
number per step, so a stream's piece depends on its seed and not on what else shares the
batch. A stream stops once its time shifts reach the asked length; the end-of-piece token
is masked until then, and decoding closes every note that is still sounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from composer.codec import events
from composer.codec.controls import CONTROL_DIM, NO_CONTROL
from composer.codec.keys import KK_PROFILES, best_key
from composer.config import settings
from composer.contract import FORMS, MAX_ECHO_SECONDS, MAX_SECONDS
from composer.nn.fastlstm import FusedLSTM, State, quantization_available
from composer.nn.model import PerformanceRNN, load_model
from composer.sampling.cache import PieceCache, PointerMemory, PointerWeights, mix, with_pointer
from composer.sampling.choose import Array, draw, filter_probs, hold_keys, log_softmax

# Magenta's generator ends any note after 5 s: a model that forgets a note-off would
# otherwise leave it droning to the end of the piece.
MAX_NOTE_SECONDS = 5.0
# A guard against a model that never moves time forward: far above real densities
# (the busiest piano corpora average under 100 events per second).
MAX_EVENTS_PER_SECOND = 400


KEY_HOLD_NOTES = 16  # notes a piece plays before its key is judged
KEY_HOLD_EVERY = 4  # and judged again every so many notes after

RESTATED = 0.75
"""By default a restated section replays its first three quarters, then goes its own way: a
repeat with its own ending. A genre whose real music repeats less sets its own share (manifest
``restate``): the opening motif of the section comes back and the model varies the rest."""


@dataclass(frozen=True)
class SampleRequest:
    seconds: float
    seed: int
    temperature: float = 1.0
    top_p: float = 1.0
    primer: np.ndarray | None = None
    """Event tokens the piece continues from (not part of the returned tokens)."""
    controls: np.ndarray | None = None
    """For a conditioned model: the piece's key and density (composer.codec.controls.control_vector);
    None: no control. An unconditioned model takes none."""
    form: str | None = None
    """A form plan (see ``FORMS``): sections of equal length, a repeated letter restating its first
    appearance; None: the model alone decides."""
    restate: float = RESTATED
    """The share of a restated section replayed as it first went; the model composes the rest afresh."""
    key_hold: float = 0.0
    """How firmly the piece keeps its key: once it has played KEY_HOLD_NOTES notes, and again
    every KEY_HOLD_EVERY notes, the model's note-on probabilities (at temperature 1) are
    multiplied by the Krumhansl-Kessler profile of the key of all its notes so far, raised to
    this power, keeping their total (0: the model alone)."""
    cache: float = 0.0
    """The neural cache's weight (composer.sampling.cache): how strongly the piece goes on the way
    it went before when it comes back to a moment like an earlier one; 0: the model alone."""
    echo: float = 0.0
    """Seconds: new material comes in phrases this long, each played twice before the next (a
    motif and its echo, as a pop strain states its short idea twice); a section the form plan
    restates replays its source instead. 0: the model alone."""
    echo_gap: float = 0.0
    """Seconds the model goes its own way after an echo before the next phrase begins (0: phrase
    after phrase; longer: a short figure echoed now and then)."""


@dataclass(frozen=True)
class Section:
    letter: str
    end_step: int
    restates: int | None  # the index of the section it repeats, None for new material


def form_plan(form: str, seconds: float) -> list[Section]:
    """Sections of equal length over ``seconds``; a letter seen before restates its first section."""
    total = round(seconds * events.STEPS_PER_SECOND)
    first: dict[str, int] = {}
    plan = []
    for i, letter in enumerate(form):
        plan.append(Section(letter, round(total * (i + 1) / len(form)), first.get(letter)))
        first.setdefault(letter, i)
    return plan


def validate(request: SampleRequest) -> None:
    if not 0 < request.seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS:g}], got {request.seconds:g}")
    if not 0 < request.temperature <= 5:
        raise ValueError(f"temperature must be in (0, 5], got {request.temperature:g}")
    if not 0 < request.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {request.top_p:g}")
    if request.primer is not None and request.primer.size:
        p = request.primer
        if p.min() < 0 or p.max() >= events.NUM_EVENTS:
            raise ValueError("primer tokens must be performance events (0..387)")
    if request.form is not None and request.form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {request.form!r}")
    if not 0 < request.restate <= 1:
        raise ValueError(f"restate must be in (0, 1], got {request.restate:g}")
    if not 0 <= request.key_hold <= 5:
        raise ValueError(f"key_hold must be in [0, 5], got {request.key_hold:g}")
    if not 0 <= request.cache < 1:
        raise ValueError(f"cache must be in [0, 1), got {request.cache:g}")
    if not 0 <= request.echo <= MAX_ECHO_SECONDS:
        raise ValueError(f"echo must be in [0, {MAX_ECHO_SECONDS:g}] seconds, got {request.echo:g}")
    if not 0 <= request.echo_gap <= MAX_SECONDS:
        raise ValueError(f"echo_gap must be in [0, {MAX_SECONDS:g}] seconds, got {request.echo_gap:g}")
    if request.controls is not None and np.shape(request.controls) != (CONTROL_DIM,):
        shape = np.shape(request.controls)
        raise ValueError(f"controls must be {CONTROL_DIM} floats (composer.codec.controls), got {shape}")


ENGINES = ("auto", "fp16", "int8", "int8w", "half", "fused", "naive")


class Sampler:
    """A loaded genre model that samples pieces; reuse it, loading is the slow part.

    ``engine`` picks how each step runs (see ``composer.nn.fastlstm``): ``fused`` (float32),
    ``fp16`` (fbgemm fp16 weights, x86 CPUs), ``int8`` (fbgemm int8, x86 CPUs, the fastest),
    ``int8w`` (int8 weights, bf16 activations), ``naive`` (``nn.LSTM`` one step at a time,
    the reference), ``half`` (float16 products, for GPUs), or ``auto``: int8 on a CPU that
    has fbgemm, half on CUDA, fused elsewhere. On a CPU every engine gives a seed the same
    piece whether it is sampled alone or in any batch.
    """

    def __init__(
        self,
        model: PerformanceRNN,
        card: dict | None = None,
        device: str | torch.device = "cpu",
        engine: str = "auto",
    ):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}")
        self.device = torch.device(device)
        if self.device.type == "cpu" and settings().sample_threads:
            # A sampling step is too small to split across threads; two threads contending
            # for a busy core made a 20 s piece take 6.6 s instead of 1.0 s here.
            torch.set_num_threads(settings().sample_threads)
        self.model = model.to(self.device).eval()
        self.card = card or {}
        if engine == "auto":
            engine = "int8" if self.device.type == "cpu" and quantization_available() else "fused"
            engine = "half" if self.device.type == "cuda" else engine
        self.engine = engine
        weights = {"fused": "fp32", "fp16": "fp16", "int8": "int8", "int8w": "int8w", "half": "half"}.get(engine)
        self.fused = FusedLSTM(self.model, weights) if weights else None
        self.pointer = PointerWeights(self.model.pointer) if self.model.pointer is not None else None

    @classmethod
    def from_dir(cls, directory: Path, device: str | torch.device = "cpu", engine: str = "auto") -> Sampler:
        model, card = load_model(directory, device)
        return cls(model, card, device, engine)

    @property
    def conditioned(self) -> bool:
        return bool(self.model.config.control_dim)

    def fit(self, request: SampleRequest) -> SampleRequest:
        """The request as this model can follow it: without controls for a model trained without them."""
        return request if self.conditioned or request.controls is None else replace(request, controls=None)

    def control_input(self, request: SampleRequest) -> torch.Tensor | None:
        """A stream's controls as each step takes them: (1, control_dim) for a conditioned model
        (no control when the request has none), None for an unconditioned one."""
        if not self.conditioned:
            if request.controls is not None:
                raise ValueError("this model takes no key or density (it was trained without --controls)")
            return None
        vector = request.controls if request.controls is not None else NO_CONTROL
        return torch.as_tensor(np.asarray(vector, dtype=np.float32), device=self.device)[None]

    def control_rows(self, control: torch.Tensor | None) -> torch.Tensor | None:
        """What a stream's control adds at every step: the fused engines' first-layer gate rows
        (one product per piece), or the control itself for the plain model."""
        if control is None or self.fused is None:
            return control
        return self.fused.control_gates(control)

    def step(
        self, tokens: torch.Tensor, state: State, control_rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """One event for every stream: tokens (batch,) -> next logits (batch, vocab), new state."""
        if self.fused is not None:
            return self.fused.step(tokens, state, control_rows)
        controls = control_rows[:, None, :] if control_rows is not None else None
        logits, state = self.model(tokens[:, None], state, controls=controls)
        return logits[:, -1], state

    @torch.inference_mode()
    def prime(self, request: SampleRequest, memory: PointerMemory | None = None) -> tuple[State, torch.Tensor]:
        """Read BOS and the request's primer; returns the state and the first logits. A pointer
        model's ``memory`` takes in the primer, which the piece may then copy from."""
        primer = request.primer if request.primer is not None else np.zeros(0, np.int64)
        seq = np.concatenate([[events.BOS], primer]).astype(np.int64)[None]
        control = self.control_input(request)
        hidden, state = self.model.top_states(torch.from_numpy(seq).to(self.device), controls=control)
        if memory is not None and len(primer):
            memory.fill(self.pointer.project(hidden[0, :-1])[1], primer)
        return state, self.model.head(hidden[:, -1]).float()

    def generate(self, requests: Sequence[SampleRequest]) -> list[np.ndarray]:
        """Event tokens for each request (primer excluded), sampled together in one batch."""
        return [tokens for tokens, _ in self.generate_scored(requests)]

    def generate_scored(
        self, requests: Sequence[SampleRequest], keep: int | None = None
    ) -> list[tuple[np.ndarray, float] | None]:
        """Each request's tokens with their mean log-likelihood per event under the model. With
        ``keep``, sampling stops once the ``keep`` pieces with the fewest events are known
        (``fewest_events``), and the others are None."""
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        batch = BatchSampler(self)
        streams = [batch.add(r) for r in requests]
        kept = None
        while kept is None:
            kept = fewest_events([s.progress() for s in streams], len(streams) if keep is None else keep)
            if kept is None:
                batch.step()
        return [(s.result(), s.log_likelihood_per_event) if i in kept else None for i, s in enumerate(streams)]


def fewest_events(progress: Sequence[tuple[int, bool]], keep: int) -> list[int] | None:
    """Which of a piece's candidates are ranked: the ``keep`` with the fewest events (ties to
    the earlier one), once that is certain, else None. ``progress``: each candidate's events
    so far and whether it is finished; an unfinished one will have at least one more.

    All of a piece's candidates are as long in seconds, so the last ones still playing are the
    densest: not waiting for them saves their steps (a quarter of classical's) and passes over
    what the models overdo (they play denser than the real music of every genre).
    """
    done = sorted((events_, i) for i, (events_, finished) in enumerate(progress) if finished)
    if len(done) < min(keep, len(progress)):
        return None
    if len(done) >= keep:
        bound = done[keep - 1]
        for i, (events_, finished) in enumerate(progress):
            if not finished and (events_ + 1, i) < bound:  # it may yet finish with fewer events
                return None
    return sorted(i for _, i in done[:keep])


class Stream:
    """One piece being sampled: its request, its tokens so far, its own random numbers.

    ``ban`` holds the events the encoding never has next, which sampling skips: anything
    but a velocity until one is stated (an encoded piece states one before its first note;
    a model that rarely saw a piece open would otherwise play at a default loudness or
    spend seconds in silence), and a note-off of a key that is not sounding. A key struck
    twice without a release (two voices in unison: the encoding keeps both) takes two.
    """

    UNIFORM_BLOCK = 256

    def __init__(self, request: SampleRequest):
        self.request = request
        self.tokens: list[int] = []
        self.elapsed_steps = 0
        self.target_steps = round(request.seconds * events.STEPS_PER_SECOND)
        self.max_events = int(request.seconds * MAX_EVENTS_PER_SECOND) + 16
        self.done = False
        self._rng = np.random.default_rng(int(request.seed))
        self._uniforms = np.empty(0)
        self._pos = 0
        self.ban = np.zeros(events.NUM_EVENTS, dtype=bool)
        self.ban[: events.VELOCITY] = True  # no velocity yet, nothing sounding
        self.strikes = np.zeros(events.NUM_PITCHES, dtype=np.int32)  # unreleased note-ons per key
        self._primer_velocity: int | None = None
        self.log_likelihood = 0.0  # of the events taken, under the model (its pointer head, no cache) at temperature 1
        self.plan = form_plan(request.form, request.seconds) if request.form else []
        self._section = 0
        self._section_starts = [0]  # token index where each section began
        self._restating: list[int] = []  # tokens still to restate, next first
        self._phrase = (0, 0)  # (token index, step) where the phrase that echo will repeat began
        self._echoing = False  # the tokens being restated are an echo
        self._gap_until = 0  # the step before which no new phrase begins (SampleRequest.echo_gap)
        self.cache = PieceCache(request.cache) if request.cache else None
        self.pointer: PointerMemory | None = None  # a pointer model's memory of this piece (BatchSampler.add)
        self._notes_by_class = np.zeros(12)  # note-ons per pitch class, primer included
        self.note_bias: np.ndarray | None = None  # what key_hold adds to the note-on logits
        for token in request.primer if request.primer is not None else ():
            self._follow(int(token))
            if int(token) >= events.VELOCITY:
                self._primer_velocity = int(token)

    def _follow(self, token: int) -> None:
        if token < events.NOTE_OFF:
            self.strikes[token] += 1
            self.ban[events.NOTE_OFF + token] = False
            if self.request.key_hold:
                self._hold_key(token % 12)
        elif token < events.TIME_SHIFT:
            key = token - events.NOTE_OFF
            self.strikes[key] = max(0, self.strikes[key] - 1)  # a primer may release what it never struck
            self.ban[token] = self.strikes[key] == 0
        elif token >= events.VELOCITY:
            self.ban[events.NOTE_ON : events.NOTE_OFF] = False
            self.ban[events.TIME_SHIFT : events.VELOCITY] = False

    def _hold_key(self, pitch_class: int) -> None:
        """Count a note; every few notes, aim the note-on bias at the key the piece is in so far."""
        self._notes_by_class[pitch_class] += 1
        played = int(self._notes_by_class.sum())
        if played < KEY_HOLD_NOTES or played % KEY_HOLD_EVERY:
            return
        found = best_key(self._notes_by_class)
        if found is not None:
            key = found[0]
            profile = np.log(np.roll(KK_PROFILES[key.mode], key.tonic))
            self.note_bias = np.tile(self.request.key_hold * (profile - profile.mean()), 11)[
                : events.NUM_PITCHES
            ].astype(np.float32)

    def uniform(self) -> float:
        if self._pos >= len(self._uniforms):
            self._uniforms = self._rng.random(self.UNIFORM_BLOCK)
            self._pos = 0
        self._pos += 1
        return float(self._uniforms[self._pos - 1])

    def progress(self) -> tuple[int, bool]:
        """Its events so far and whether it is finished (``fewest_events``), safe to read while
        another thread samples it: the count first, then ``done`` (set right after the last event
        is taken), so an unfinished stream has more events to come and a finished one is counted in full."""
        events_ = len(self.tokens)
        return (len(self.tokens), True) if self.done else (events_, False)

    @property
    def log_likelihood_per_event(self) -> float:
        return self.log_likelihood / max(len(self.tokens), 1)

    def restated(self) -> int | None:
        """The token the form plan puts next, when this stream is restating a section (and the
        grammar allows it here: a release of a key the restatement never struck is passed over)."""
        while self._restating:
            token = self._restating.pop(0)
            if not self.ban[token]:
                return token
        return None

    def accept(self, token: int) -> None:
        self.tokens.append(token)
        if events.TIME_SHIFT <= token < events.VELOCITY:
            self.elapsed_steps += token - events.TIME_SHIFT + 1
            if self.plan:
                self._follow_plan()
            if self.request.echo:
                self._follow_echo()
        else:
            self._follow(token)
        self.done = self.elapsed_steps >= self.target_steps or len(self.tokens) >= self.max_events

    @property
    def replaying(self) -> bool:
        """Whether the next events are planned (a restated section or an echo), not the model's."""
        return bool(self._restating)

    def _follow_plan(self) -> None:
        """At a section's end: start the next one, loading the section it restates (less its tail)."""
        while self._section < len(self.plan) - 1 and self.elapsed_steps >= self.plan[self._section].end_step:
            self._section += 1
            self._section_starts.append(len(self.tokens))
            self._phrase, self._echoing = (len(self.tokens), self.plan[self._section - 1].end_step), False
            self._gap_until = 0
            source = self.plan[self._section].restates
            self._restating = []
            if source is not None:
                section_steps = self.plan[source].end_step - (self.plan[source - 1].end_step if source else 0)
                lo, hi = self._section_starts[source], self._section_starts[source + 1]
                self._restating = _opening(self.tokens[lo:hi], section_steps * self.request.restate)

    def _follow_echo(self) -> None:
        """Once a phrase of new material is ``echo`` seconds long, load it to be played again; the
        next phrase begins ``echo_gap`` seconds after its echo ends (or at the next section)."""
        if self._restating:
            return
        if self._echoing:  # an echo just ended
            self._phrase, self._echoing = (len(self.tokens), self.elapsed_steps), False
            self._gap_until = self.elapsed_steps + round(self.request.echo_gap * events.STEPS_PER_SECOND)
        if self.plan and self.plan[self._section].restates is not None:
            return  # a restated section varies its source in its own way
        if self.elapsed_steps < self._gap_until:
            return
        if self._phrase[1] < self._gap_until:  # the gap just ended: a phrase begins here
            self._phrase = (len(self.tokens), self.elapsed_steps)
            return
        start, start_step = self._phrase
        echo_steps = self.request.echo * events.STEPS_PER_SECOND
        if self.elapsed_steps - start_step >= echo_steps:
            self._restating = _opening(self.tokens[start:], echo_steps)
            self._echoing = bool(self._restating)

    def result(self) -> np.ndarray:
        """The sampled tokens; a continuation starts by re-stating its primer's loudness, since
        the encoding states a velocity only when it changes and the primer is not returned."""
        tokens = self.tokens if self._primer_velocity is None else [self._primer_velocity, *self.tokens]
        return np.asarray(tokens, dtype=events.TOKEN_DTYPE)


def _opening(tokens: Sequence[int], steps: float) -> list[int]:
    """The events of ``tokens`` up to the time shift that passes ``steps``."""
    out: list[int] = []
    elapsed = 0
    for token in tokens:
        if events.TIME_SHIFT <= token < events.VELOCITY:
            elapsed += token - events.TIME_SHIFT + 1
            if elapsed > steps:
                break
        out.append(token)
    return out


class BatchSampler:
    """Streams sampled together one event per step; streams may join and leave between steps.

    This is what continuous batching builds on: a server adds requests as they arrive
    and collects the ones that finish, while the others keep going.
    """

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.streams: list[Stream] = []
        self._state: State | None = None
        self._logits: torch.Tensor | None = None
        self._temperature = np.empty(0)
        self._top_p = np.empty(0)
        self._control_rows: torch.Tensor | None = None  # a conditioned model's, one row per stream
        # Choosing runs on numpy arrays on a CPU and on the logits' own tensors elsewhere (composer.sampling.choose).
        self.numpy = sampler.device.type == "cpu"

    @property
    def active(self) -> int:
        return len(self.streams)

    def cancel(self, stream: Stream) -> None:
        """Stop a stream (its client gave up); it leaves the batch at the next step."""
        stream.done = True

    def add(self, request: SampleRequest) -> Stream:
        validate(request)
        stream = Stream(request)
        if self.sampler.pointer is not None:
            stream.pointer = PointerMemory(self.sampler.pointer)
        state, logits = self.sampler.prime(request, stream.pointer)
        rows = self.sampler.control_rows(self.sampler.control_input(request))
        if self._state is None:
            self._state, self._logits = state, logits
            self._control_rows = rows
            self._temperature, self._top_p = np.array([request.temperature]), np.array([request.top_p])
        else:
            if rows is not None:
                self._control_rows = torch.cat([self._control_rows, rows])
            self._state = (torch.cat([self._state[0], state[0]], 1), torch.cat([self._state[1], state[1]], 1))
            self._logits = torch.cat([self._logits, logits])
            self._temperature = np.append(self._temperature, request.temperature)
            self._top_p = np.append(self._top_p, request.top_p)
        self.streams.append(stream)
        return stream

    def _hold_keys(self, logits: Array) -> Array:
        """The logits with each holding stream's key bias on its note-ons (``SampleRequest.key_hold``)."""
        held = [row for row, s in enumerate(self.streams) if s.note_bias is not None]
        if not held:
            return logits
        bias = self._like(np.stack([self.streams[row].note_bias for row in held]))
        every = len(held) == len(self.streams)  # a piece's candidates are all held or none
        return hold_keys(logits, bias, None if every else self._like(np.array(held)))

    def _point_back(self, logits: Array, top: torch.Tensor) -> Array:
        """The logits mixed with each caching stream's neural cache (``SampleRequest.cache``)."""
        logits = logits.copy() if self.numpy else logits.clone()
        for row, stream in enumerate(self.streams):
            past = stream.cache.distribution(top[row], stream.ban) if stream.cache is not None else None
            if past is not None:
                mixed = mix(torch.as_tensor(logits[row]), past, stream.cache.weight)
                logits[row] = mixed.numpy() if self.numpy else mixed
        return logits

    def _like(self, values: np.ndarray) -> Array:
        """``values`` (numpy) as choosing takes them (``self.numpy``): as they are, or a tensor on the device."""
        return values if self.numpy else torch.from_numpy(values).to(self.sampler.device)

    @torch.inference_mode()
    def step(self) -> list[Stream]:
        """Sample one event for every stream; returns (and drops) the streams that finished."""
        if not self.streams:
            return []
        dev = self.sampler.device
        # Only performance events: never PAD or BOS, nor EOS, since the length is asked for.
        ban = np.stack([s.ban for s in self.streams])
        caching = any(s.cache is not None for s in self.streams)
        pointing = self.sampler.pointer is not None
        # the top layer's state behind these logits, for the pointer head and the streams' caches
        top = self._state[0][-1] if caching or pointing else None
        own = self._logits[:, : events.NUM_EVENTS]  # the model's own distribution, its pointer included
        if pointing:
            own = with_pointer(own, top, [s.pointer for s in self.streams], self.sampler.pointer)
        own = own.double().cpu().numpy() if self.numpy else own.double()
        logits = self._hold_keys(own)
        if caching:
            logits = self._point_back(logits, top)
        cut = [s.request.top_p < 1 for s in self.streams]
        nucleus = "all" if all(cut) else "some" if any(cut) else "none"
        temperature, top_p = self._like(self._temperature), self._like(self._top_p)
        probs = filter_probs(logits, temperature, top_p, nucleus, self._like(ban))
        chosen = draw(probs, self._like(np.array([s.uniform() for s in self.streams])))
        tokens = chosen.tolist()
        if any(s.replaying for s in self.streams):  # a stream restating a section or echoing takes its planned token
            planned = [s.restated() for s in self.streams]
            tokens = [p if p is not None else t for p, t in zip(planned, tokens)]
        taken = log_softmax(own)[list(range(len(tokens))), tokens].tolist()
        for stream, token, log_p in zip(self.streams, tokens, taken):
            if not stream.done:  # a cancelled stream takes nothing more
                stream.log_likelihood += log_p
                stream.accept(token)
        if top is not None:
            for row, (stream, token) in enumerate(zip(self.streams, tokens)):
                if stream.cache is not None:
                    stream.cache.add(top[row], token)
                if stream.pointer is not None:
                    stream.pointer.remember(token)
        finished = [s for s in self.streams if s.done]
        if finished:
            keep = [i for i, s in enumerate(self.streams) if not s.done]
            self.streams = [self.streams[i] for i in keep]
            if not keep:
                self._state = self._logits = self._control_rows = None
                return finished
            tokens = [tokens[i] for i in keep]
            self._temperature, self._top_p = self._temperature[keep], self._top_p[keep]
            index = torch.tensor(keep, device=dev)
            self._state = (self._state[0][:, index], self._state[1][:, index])
            if self._control_rows is not None:
                self._control_rows = self._control_rows[index]
        logits, self._state = self.sampler.step(torch.tensor(tokens, device=dev), self._state, self._control_rows)
        self._logits = logits.float()
        return finished


def piece_notes(tokens: np.ndarray) -> list[events.Note]:
    """The notes of a sampled piece, each at most MAX_NOTE_SECONDS long."""
    return events.decode(tokens, max_note_steps=round(MAX_NOTE_SECONDS * events.STEPS_PER_SECOND), restrike=True)


def primer_tokens(notes_tokens: np.ndarray, seconds: float) -> np.ndarray:
    """The last ``seconds`` of a token stream, to continue a piece from.

    Cuts at a time-shift boundary and re-states the current velocity so the primer is
    a valid stream on its own (notes still sounding at the cut simply have no onset).
    """
    keep_steps = round(seconds * events.STEPS_PER_SECOND)
    total = events.duration_steps(notes_tokens)
    start_step = max(0, total - keep_steps)
    step, velocity, cut = 0, None, 0
    for i, tok in enumerate(notes_tokens):
        if step >= start_step:
            cut = i
            break
        if events.TIME_SHIFT <= tok < events.VELOCITY:
            step += int(tok) - events.TIME_SHIFT + 1
        elif events.VELOCITY <= tok < events.NUM_EVENTS:
            velocity = int(tok)
    else:
        cut = len(notes_tokens)
    tail = notes_tokens[cut:]
    head = [velocity] if velocity is not None else []
    return np.concatenate([np.asarray(head, dtype=np.int64), tail.astype(np.int64)])
