"""The service's candidates race (composer.serving.service.until_ranked) against a batcher thread."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from composer.sampling.sample import Stream
from composer.serving.service import until_ranked


class Played(SimpleNamespace):
    """A stream's tokens and done flag, read the way the race reads a real one."""

    progress = Stream.progress


class Listener:
    async def is_disconnected(self) -> bool:
        return False


class Candidate:
    """A PendingPiece as the batcher thread updates it: joins the batch, takes events one at a
    time, is marked done right after its last, and only then has its future resolved."""

    def __init__(self, length: int, joins_after: float = 0.0, step_s: float = 0.002, resolve_after: float = 0.0):
        self.future: Future = Future()
        self.stream = None
        self.length, self.joins_after, self.step_s, self.resolve_after = length, joins_after, step_s, resolve_after

    def run(self, stop: threading.Event) -> None:
        time.sleep(self.joins_after)
        stream = Played(tokens=[], done=False)
        self.stream = stream
        while len(stream.tokens) < self.length:
            if stop.is_set():
                return
            stream.tokens.append(1)
            time.sleep(self.step_s)
        stream.done = True
        time.sleep(self.resolve_after)
        self.future.set_result(SimpleNamespace(tokens=list(stream.tokens), log_likelihood=-1.0))


def race(candidates: list[Candidate], keep: int, timeout: float = 5.0) -> list:
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in candidates]
    for t in threads:
        t.start()
    try:
        return asyncio.run(until_ranked(candidates, keep, Listener(), timeout, poll_s=0.01))
    finally:
        stop.set()


def test_the_densest_candidate_is_not_waited_for():
    densest = Candidate(10_000)  # would take 20 s: the race must not wait for it
    results = race([Candidate(5), densest, Candidate(8)], keep=2, timeout=3.0)
    assert [len(r.tokens) if r else None for r in results] == [5, None, 8]


def test_a_candidate_that_joined_late_is_waited_for_while_it_may_still_be_among_the_sparsest():
    late = Candidate(3, joins_after=0.2)  # finishes last in time, with the fewest events
    results = race([Candidate(6), Candidate(9), late], keep=2)
    assert [len(r.tokens) if r else None for r in results] == [6, None, 3]


def test_a_finished_candidate_is_counted_in_full_while_its_future_is_still_unresolved():
    slow_to_resolve = Candidate(4, resolve_after=0.2)
    results = race([Candidate(6, step_s=0.01), slow_to_resolve, Candidate(7, step_s=0.01)], keep=2)
    assert [len(r.tokens) if r else None for r in results] == [6, 4, None]


def test_a_failed_candidate_that_is_ranked_fails_the_piece():
    failed = Candidate(0)
    failed.run = lambda stop: failed.future.set_exception(RuntimeError("sampling failed"))
    with pytest.raises(RuntimeError, match="sampling failed"):
        race([Candidate(5), failed, Candidate(9)], keep=2)


class ResolvesWhileRead(Future):
    """A future the batcher thread resolves between two of the race's looks at it."""

    def __init__(self, tokens: int):
        super().__init__()
        self.looks, self.tokens = 0, tokens

    def done(self) -> bool:
        self.looks += 1
        if self.looks == 2 and not super().done():
            self.stream.done = True
            self.set_result(SimpleNamespace(tokens=[1] * self.tokens, log_likelihood=0.0))
        return super().done()


def test_a_future_resolved_while_the_race_is_read_is_picked_up():
    first = SimpleNamespace(future=Future(), stream=Played(tokens=[1] * 9, done=True))
    first.future.set_result(SimpleNamespace(tokens=[1] * 9, log_likelihood=0.0))
    second = SimpleNamespace(future=ResolvesWhileRead(5), stream=Played(tokens=[1] * 5, done=False))
    second.future.stream = second.stream
    results = asyncio.run(until_ranked([first, second], 1, Listener(), 2.0, poll_s=0.01))
    assert results[0] is None and len(results[1].tokens) == 5
