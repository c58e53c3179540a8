"""The archive's time-limited cache (genres, handles, stats, plots) on an injected clock: no sleeping."""

from __future__ import annotations

from bot.web.cache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counter():
    calls: list[int] = []

    def make() -> int:
        calls.append(len(calls) + 1)
        return calls[-1]

    return make, calls


def test_an_entry_is_served_until_its_ttl_and_made_again_after():
    clock = Clock()
    cache = TTLCache(60.0, clock=clock)
    make, calls = counter()
    assert cache.get("stats", make) == 1
    clock.now = 1059.5
    assert cache.get("stats", make) == 1 and calls == [1]  # still fresh: not made again
    clock.now = 1060.0  # exactly the TTL: expired
    assert cache.get("stats", make) == 2 and calls == [1, 2]
    clock.now = 1119.0
    assert cache.get("stats", make) == 2  # the new entry has a TTL of its own
    clock.now = 1120.0
    assert cache.get("stats", make) == 3


def test_keys_expire_on_their_own_and_expired_ones_are_dropped():
    clock = Clock()
    cache = TTLCache(10.0, clock=clock)
    cache.get(("plot", "per-day", 1), lambda: "old plot")
    clock.now += 5
    cache.get("genres", lambda: ["folk"])
    clock.now += 6  # the plot is 11 s old, the genres 6 s
    assert cache.get("genres", lambda: ["changed"]) == ["folk"]
    assert cache.get(("plot", "per-day", 1), lambda: "new plot") == "new plot"
    clock.now += 100
    cache.get("other", lambda: None)
    assert list(cache._items) == ["other"]  # stale keys (plots of old snapshots) do not pile up
    cache.clear()
    assert cache.get("other", lambda: "after clear") == "after clear"
