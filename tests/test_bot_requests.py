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


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("@band something folk in D minor, busy", "D minor"),
        ("@band folk in E flat", "E♭ major"),
        ("@band folk in e flat", "E♭ major"),
        ("@band e flat folk", "E♭ major"),
        ("@band folk in F#", "F♯ major"),
        ("@band something in B flat minor", "B♭ minor"),
        ("@band folk in B-flat minor", "B♭ minor"),
        ("@band folk in Bb major", "B♭ major"),
        ("@band folk in Eb", "E♭ major"),
        ("@band C major folk", "C major"),
        ("@band folk, c major", "C major"),
        ("@band folk in c#m", "C♯ minor"),
        ("@band folk in Dm", "D minor"),
        ("@band folk in A min", "A minor"),
        ("@band folk in the key of G", "G major"),
        ("@band folk in g", "G major"),
        ("@band folk in A", "A major"),
        ("@band folk in A, 20 seconds", "A major"),
        ("@band folk in a minor", "A minor"),
        ("@band a folk tune in the key of A flat", "A♭ major"),
        ("@band folk in A Minor Key", "A minor"),
        ("@band folk in E♭ major", "E♭ major"),
        ("@band folk in F♯ minor seed 7, 30 seconds", "F♯ minor"),
        ("<p>@band folk in D&nbsp;minor</p>", "D minor"),
    ],
)
def test_keys(text, key):
    request = parse(text)
    assert request.kind is Kind.COMPOSE and request.key == key and not request.notes


@pytest.mark.parametrize(
    "text",
    [
        "@band a jig",
        "@band be busy, folk",
        "@band plan b: folk",
        "@band folk with vitamin C",
        "@band folk in a minute",
        "@band folk in a min",
        "@band folk in a calm mood",
        "@band folk in e-mail form",
        "@band I'd like folk",
        "@band folk, e.g. calm",
        "@band DM me some folk",
        "@band Eb folk",
        "@band folk, sizes in gb",
        "@band A folk tune",
        "@band folk, a cab, a bed, a dad",
    ],
)
def test_ordinary_words_name_no_key(text):
    assert parse(text).key is None


def test_key_words_are_not_read_as_a_length_or_a_genre():
    request = parse("@band folk in A min")
    assert request.seconds == 30 and request.key == "A minor"
    assert parse("@band folk in a min").seconds == 60
    assert parse("@band banana minute folk").seconds == 30  # numbers only as whole words
    assert parse("@band in D minor").genre is None and parse("@band in D minor").kind is Kind.COMPOSE


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("@band a minor-key folk tune", "minor"),
        ("@band folk in a major key", "major"),
        ("@band something in a minor key", "minor"),
        ("@band folk in minor", "minor"),
    ],
)
def test_a_mode_alone_gets_a_tonic_picked_from_the_mention(text, mode):
    request = parse_request(text, GENRES, LIMITS, pick="109348")
    assert request.key is not None and request.key.endswith(f" {mode}")
    assert parse_request(text, GENRES, LIMITS, pick="109348").key == request.key  # a retry asks the same
    tonics = {parse_request(text, GENRES, LIMITS, pick=str(i)).key for i in range(40)}
    assert len(tonics) > 3  # the mention, not a constant, picks it
    assert parse(text).key == parse(text).key  # without an id, the text picks it


@pytest.mark.parametrize(
    "text", ["@band folk in H major", "@band folk in D dorian", "@band lydian folk", "@band in X minor"]
)
def test_an_unreadable_key_composes_without_a_key_and_says_so(text):
    request = parse(text)
    assert request.kind is Kind.COMPOSE and request.key is None
    (note,) = request.notes
    assert "D minor" in note and "H" not in note and "dorian" not in note  # never quotes the mention back


@pytest.mark.parametrize(
    ("text", "density", "temperature"),
    [
        ("@band slow folk", 2.0, 0.85),
        ("@band calm folk", 2.0, 0.85),
        ("@band moderate folk", 5.0, 1.0),
        ("@band busy folk", 12.0, 1.0),
        ("@band fast folk", 12.0, 1.0),
        ("@band folk", None, 1.0),
        ("@band calm but busy folk", 12.0, 0.85),  # a pace word beats a mood that implies one
        ("@band busy, fast or slow folk", 12.0, 0.85),  # then the first said
        ("@band gentle folk", None, 0.85),
    ],
)
def test_density_words(text, density, temperature):
    request = parse(text)
    assert request.density == density and request.temperature == temperature


def test_a_key_or_a_pace_alone_asks_for_a_piece():
    assert parse("@band busy please").kind is Kind.COMPOSE
    assert parse("@band in F# minor").kind is Kind.COMPOSE
    assert parse("@band in H major").kind is Kind.COMPOSE


@pytest.mark.parametrize(
    ("text", "key", "density"),
    [
        ("@band more", None, None),
        ("@band more in D minor", "D minor", None),
        ("@band more, but busy", None, 12.0),
        ("@band more in the key of G please", "G major", None),
    ],
)
def test_more_may_ask_for_another_key_or_pace(text, key, density):
    request = parse(text)
    assert request.kind is Kind.MORE and (request.key, request.density) == (key, density)


def test_replay_text_reads_back_to_the_same_request():
    from bot.request_text import asking_words, replay_text

    for temperature, density, key in [
        (1.0, None, None),
        (0.85, None, "E♭ major"),
        (0.85, 2.0, "A minor"),
        (1.0, 2.0, "B major"),
        (1.15, 5.0, None),
        (0.75, 12.0, "F♯ minor"),
    ]:
        text = replay_text("folk", 77, temperature, key, density, 20)
        again = parse_request(text, GENRES, LIMITS)
        assert (again.genre, again.seed, again.seconds) == ("folk", 77, 20)
        assert (again.temperature, again.density, again.key) == (temperature, density, key), text
    assert asking_words(0.85) == "gentle"  # "calm" would ask for a pace too
    assert asking_words(0.777) is None
    assert replay_text("folk", 1, 0.777, None, 12.0) == "busy folk seed 1"  # the pace kept, the mood given up


ORDINARY_TEXT = (
    "I you we it is be been in at on of to and but or play me some folk jig reel tune song piece music "
    "please thanks calm busy slow fast wild happy mood minute minutes seconds day bed cab dad bag age face cafe bee "
    "egg fig gig ace add bad beg fed key keys mode modest majority minority flats sharply e-mail c'mon I'd we'd "
    "she'd o'clock plan vitamin grade heavy light loud quiet for my sister with like love more again seed one two "
    "ten 30 1:15 ! ? , . ... 🎻 #folk @alice"
)
ORDINARY = ORDINARY_TEXT.split()
SPELLED_OUT = [  # an article comes with its noun: "in a" never ends an English clause
    *("a jig", "a bee", "a cab", "an egg", "the key", "a key", "a face", "a dad", "in a minute", "in a calm mood"),
    *("in a jig", "plan b", "vitamin c", "grade a", "e.g.", "be busy", "in the key of life"),
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(ORDINARY), st.sampled_from(SPELLED_OUT)), min_size=1, max_size=25),
    st.booleans(),
)
def test_ordinary_sentences_name_no_key(words, capitalized):
    """English without a key name in it ("a", "b" or "c" alone among the words, "in a ...") asks for no key."""
    sentence = " ".join(words)
    if capitalized:
        sentence = sentence[0].upper() + sentence[1:]
    request = parse("@band " + sentence)
    assert request.key is None and not any("key" in note for note in request.notes), sentence


# Ordinary English without a length: words that hold number words or units ("am" = a + m, "as",
# "kittens", "often", "christmas"), numbers that count things, eras and times of day.
UNLENGTHY_TEXT = (
    "I am sad play me some folk jig reel tune song piece music please thanks calm busy wild a an as at is "
    "it in on of to and but or for my fans christmas kittens mittens often tone someone attention tens ones "
    "eighteen sixteen seventy mom ma'am I'm it's let's what's sms ms mrs mr pm smile some snow moon mist "
    "gift sister friends cats songs hands ten two one three 2 10 3 top 80s 90s 1990s 1920s decade "
    "a-side b-side one-sided twosome threesome seconded minutemen minimal mint mine ! ? , . 🎻 #folk"
)
UNLENGTHY = UNLENGTHY_TEXT.split()
UNLENGTHY_PHRASES = [  # where a number or a unit word stands next to others, but asks for no length
    *("as a gift", "I am", "am I", "a m", "at 10:30", "by 9:15", "9:30 pm", "10:45 a.m.", "ten cats"),
    *("a christmas folk tune", "folk for my fans", "two hands", "a smile", "one more", "the 80s"),
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(UNLENGTHY), st.sampled_from(UNLENGTHY_PHRASES)), min_size=1, max_size=25),
    st.booleans(),
)
def test_ordinary_sentences_without_a_length_get_the_default_length(words, capitalized):
    sentence = " ".join(words)
    if capitalized:
        sentence = sentence[0].upper() + sentence[1:]
    request = parse("@band " + sentence)
    assert request.seconds == LIMITS.default_seconds and not request.notes, sentence


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(UNLENGTHY), max_size=8),
    st.sampled_from(
        [("45 seconds", 45), ("45s", 45), ("1 min", 60), ("a minute", 60), ("twenty seconds", 20), ("1:15", 75)]
    ),
    st.lists(st.sampled_from(UNLENGTHY), max_size=8),
)
def test_a_length_among_ordinary_words_is_read(before, length, after):
    said, seconds = length
    sentence = " ".join([*before, ",", said, ",", *after])
    assert parse("@band folk " + sentence).seconds == seconds, sentence


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("@band I am sad, play me some folk", 30),
        ("@band a christmas folk tune", 30),
        ("@band folk for my fans", 30),
        ("@band kittens", 30),
        ("@band folk as a gift", 30),
        ("@band 80s pop", 30),
        ("@band folk at 10:30", 30),
        ("@band folk, two minutes", 120),
        ("@band folk 2m", 120),
    ],
)
def test_number_words_inside_other_words_are_no_length(text, seconds):
    assert parse(text).seconds == seconds


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("@band play a flat melody", None),
        ("@band A flat tune please", None),
        ("@band a sharp little folk tune", None),
        ("@band folk in a flat", "A♭ major"),
        ("@band folk in A flat minor", "A♭ minor"),
        ("@band A flat major folk", "A♭ major"),
        ("@band folk, A-flat key", "A♭ major"),
        ("@band e flat folk", "E♭ major"),
    ],
)
def test_a_flat_is_an_article_and_an_adjective_unless_a_key_is_meant(text, key):
    assert parse(text).key == key
