"""Reading mentions: realistic phrasings, and any text at all without an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.db import Kind
from bot.request_text import Limits, clean_text, parse_request, strip_html

GENRES = ["classical", "folk", "pop"]
LIMITS = Limits(min_seconds=5, max_seconds=120, default_seconds=30)


def parse(text: str):
    return parse_request(text, GENRES, LIMITS)


@pytest.mark.parametrize(
    ("text", "genre"),
    [
        ("@band play me something folk", "folk"),
        ('<p><span class="h-card"><a href="https://x/@band">@<span>band</span></a></span> folk please</p>', "folk"),
        ("@band classical", "classical"),
        ("@band something classic", "classical"),
        ("@band Classical music, por favor", "classical"),
        ("@band a jig!", "folk"),
        ("@band give me a reel", "folk"),
        ("@band irish fiddle tune", "folk"),
        ("@band folk music", "folk"),
        ("@band k-pop", "pop"),
        ("@band KPOP!!!", "pop"),
        ("@band a pop song", "pop"),
        ("@band some Chopin", "classical"),
        ("@band baroque", "classical"),
        ("@band clasical", "classical"),  # near miss
        ("@band folky", "folk"),
        ("@band fokl music", "folk"),  # "folk music" as a phrase is not there; "fokl" is close to folk
        ("@band@mastodon.social @alice@example.org pop", "pop"),
    ],
)
def test_genres_by_name_synonym_or_near_miss(text, genre):
    request = parse(text)
    assert request.kind is Kind.COMPOSE
    assert request.genre == genre


def test_other_handles_do_not_count_as_words():
    request = parse("@pop @folkbot @band classical")
    assert request.genre == "classical"
    assert "pop" not in clean_text("@pop @folkbot @band classical")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("@band folk 30 seconds", 30),
        ("@band folk, 45s", 45),
        ("@band folk 1 min", 60),
        ("@band folk a minute", 60),
        ("@band folk one minute", 60),
        ("@band folk 2 minutes", 120),
        ("@band folk 1.5 min", 90),
        ("@band folk 1:15", 75),
        ("@band folk half a minute", 30),
        ("@band folk twenty seconds", 20),
        ("@band folk 10 secs", 10),
        ("@band folk", 30),  # the default
    ],
)
def test_lengths(text, seconds):
    assert parse(text).seconds == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "seconds"), [("@band folk 1 s", 5), ("@band folk 10 minutes", 120)])
def test_lengths_are_clamped_and_the_reply_says_so(text, seconds):
    request = parse(text)
    assert request.seconds == seconds
    assert any("5–120 s" in note for note in request.notes)


def test_moods_move_the_temperature():
    assert parse("@band a calm folk tune").temperature < 1.0
    assert parse("@band something wild and crazy, pop").temperature > 1.0
    assert parse("@band folk").temperature == 1.0
    calm_wild = parse("@band calm but wild folk").temperature
    assert 0.85 < calm_wild < 1.15


def test_seed():
    assert parse("@band folk seed 1234").seed == 1234
    assert parse("@band folk seed: 42").seed == 42
    assert parse("@band folk, seed #7").seed == 7
    assert parse("@band folk").seed is None
    huge = parse("@band folk seed 99999999999999999999999")
    assert huge.seed is None and huge.notes


@pytest.mark.parametrize("text", ["@band help", "@band HELP!", "@band", "@band ?", "@band what genres do you know?"])
def test_help(text):
    assert parse(text).kind is Kind.HELP


@pytest.mark.parametrize(("text", "word"), [("@band play some jazz", "jazz"), ("@band heavy metal please", "metal")])
def test_unknown_genre_gets_help_naming_it(text, word):
    request = parse(text)
    assert request.kind is Kind.HELP and request.unknown_genre == word


def test_a_known_genre_without_a_model_is_unknown_here():
    request = parse_request("@band pop", ["folk"], LIMITS)
    assert request.kind is Kind.HELP


def test_compose_words_without_a_genre_compose_a_surprise():
    request = parse("@band play me something")
    assert request.kind is Kind.COMPOSE and request.genre is None
    assert parse("@band hello there").kind is Kind.HELP


@pytest.mark.parametrize("text", ["@band more", "@band again please", "@band more!", "@band encore"])
def test_more(text):
    assert parse(text).kind is Kind.MORE


@pytest.mark.parametrize("text", ["@band thanks!", "@band thank you", "@band thanks, you", "@band a bit", "@band pls"])
def test_thanks_without_a_more_word_is_not_more(text):
    assert parse(text).kind is not Kind.MORE


def test_html_is_stripped_and_script_is_just_text():
    markup = "<p>@band <script>alert('x')</script> folk<br>30 seconds &amp; calm</p>"
    text = strip_html(markup)
    assert "<" not in text and "alert" in text and "&" in text
    request = parse(markup)
    assert request.genre == "folk" and request.seconds == 30 and request.temperature < 1


def test_links_are_ignored():
    assert parse("@band https://example.com/pop folk").genre == "folk"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_any_text_parses(text):
    request = parse(text)
    assert request.kind in Kind
    assert LIMITS.min_seconds <= request.seconds <= LIMITS.max_seconds
    assert 0 < request.temperature <= 2


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["<p>", "</p>", "<br>", "<script>", "&amp;", "&#0;", "&#x110000;", "<a href='", "@band"]),
            st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=30),
            st.sampled_from(["folk", "seed 12", "1:30", "9" * 40, "min", "\x00", "\u202e", "jig"]),
        ),
        max_size=60,
    )
)
def test_any_html_parses(parts):
    parse("".join(parts))


def test_huge_input_is_cut_not_parsed_whole():
    request = parse("@band folk " + "la " * 1_000_000)
    assert request.genre == "folk"
