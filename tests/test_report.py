"""composer report: the overlap measure, the figures, a self-contained page that renders in Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from composer.analysis.measures import FEATURES, feature_edges, histogram, overlap_area, piece_features
from composer.codec import events
from composer.config import PROJECT_ROOT
from composer.corpus.data import prepare_genre
from composer.corpus.genres import Genre
from composer.models.registry import genres_with_models
from composer.report.cache import cached
from composer.report.compute import ReportOptions, compute_report, matrix_summary
from composer.serving.catalog import served_genres
from composer.training.study import collect_study
from tests.conftest import needs_corpora, tiny_model
from tests.test_data import corpus  # noqa: F401  (the real-MIDI corpus fixture)
from tests.test_web_browser import CHROMIUM, browser, shots  # noqa: F401  (Debian's chromium via Playwright)

GENRES = ("folk", "pop")
OPTIONS = ReportOptions(
    pieces=2, events=200, samples=2, seconds=8.0, baseline_orders=(2, 3), rolls=1, structure_samples=2
)
CLI_OPTIONS = [
    "--pieces",
    "2",
    "--events",
    "200",
    "--samples",
    "2",
    "--seconds",
    "8",
    "--baseline-orders",
    "2,3",
    "--rolls",
    "1",
    "--structure-samples",
    "2",
]


# ---------------------------------------------------------------- the overlap area


def test_overlap_of_identical_distributions_is_one_and_of_disjoint_ones_zero():
    p = np.array([1.0, 3.0, 0.0, 6.0])
    assert overlap_area(p, p) == pytest.approx(1.0)
    assert overlap_area(p, 10 * p) == pytest.approx(1.0)  # normalized first
    assert overlap_area([1, 2, 0, 0], [0, 0, 5, 1]) == 0.0
    assert overlap_area([1, 1], [1, 0]) == pytest.approx(0.5)
    assert np.isnan(overlap_area([0, 0], [1, 0]))
    with pytest.raises(ValueError):
        overlap_area([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        overlap_area([1, -1], [1, 1])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(*[st.lists(st.floats(0, 1e6), min_size=n, max_size=n)] * 2)))
def test_overlap_lies_in_unit_interval_and_is_symmetric(pair):
    p, q = pair
    assume(sum(p) > 0 and sum(q) > 0)
    a, b = overlap_area(p, q), overlap_area(q, p)
    assert 0.0 <= a <= 1.0
    assert a == pytest.approx(b, abs=1e-12)


def test_features_of_a_hand_made_piece():
    notes = [events.Note(60, 80, 0.0, 1.0), events.Note(64, 80, 0.0, 1.0), events.Note(67, 100, 0.5, 2.0)]
    feats = piece_features(notes, 10.0)
    assert sorted(feats["pitch"]) == [60, 64, 67]
    assert list(feats["ioi"]) == [0.5]
    assert list(feats["density"]) == [0.6, 0.0]  # 3 onsets in the first 5 s window, none in the second
    assert feats["polyphony"].max() == 3 and feats["polyphony"][0] == 2 and feats["polyphony"][-1] == 0
    for name in FEATURES:
        counts = histogram(feats[name], feature_edges(name))
        assert counts.sum() == len(feats[name])  # overflow goes to the last bin, nothing is lost


def test_matrix_marks_row_minimum_and_diagonal():
    m = matrix_summary(["a", "b"], ["a", "b"], [[1.0, 2.0], [0.5, 0.9]], [[1, 1], [1, 1]])
    assert m["row_min"] == [0, 0] and m["diagonal_wins"] == [True, False] and not m["diagonal_wins_all"]


# ---------------------------------------------------------------- the model list and the cache


def test_one_list_of_genres_with_models_and_the_loadable_ones_among_them(tmp_path: Path):
    models = tmp_path / "models"
    tiny_model(models / "folk" / "v1")
    (models / "folk" / "CURRENT").write_text("v1\n")
    tiny_model(models / "jazz" / "v1", genre="jazz")  # trained, never made current
    (models / "broken").mkdir()
    (models / "broken" / "CURRENT").write_text("v9\n")  # names a version that is not there
    (models / "README").write_text("not a genre")
    assert genres_with_models(models, loadable=True) == ["folk"]  # what the report can load
    assert genres_with_models(models) == served_genres(models) == ["broken", "folk"]  # what the service serves
    assert genres_with_models(tmp_path / "nowhere") == []


def test_cached_results_are_plain_json_kept_per_key(tmp_path: Path):
    calls = []

    def compute():
        calls.append(1)
        return {"values": (1, 2), "nll": 2.5}

    first = cached(tmp_path, "nll", ["folk/v1", "data"], compute)
    assert first == {"values": [1, 2], "nll": 2.5} and len(calls) == 1  # tuples come back as lists, as when read
    assert cached(tmp_path, "nll", ["folk/v1", "data"], compute) == first and len(calls) == 1
    (path,) = tmp_path.glob("nll-*.json")
    cached(tmp_path, "nll", ["folk/v1", "other data"], compute)
    assert len(calls) == 2 and len(list(tmp_path.glob("nll-*.json"))) == 2
    cached(tmp_path, "nll", ["folk/v1", "data"], compute, refresh=True)
    assert len(calls) == 3
    path.write_text("{broken")
    assert cached(tmp_path, "nll", ["folk/v1", "data"], compute) == first and len(calls) == 4
    assert json.loads(path.read_text()) == first and not list(tmp_path.glob(".*.part"))
    assert cached(None, "nll", ["x"], compute) == first and len(calls) == 5  # no cache: always computed


# ---------------------------------------------------------------- a whole report with tiny models


def _metrics(path: Path, steps: range, start: float) -> None:
    lines = []
    for i, step in enumerate(steps):
        lines.append(json.dumps({"step": step, "train_loss": start - 0.1 * i}))
        if i % 2:
            lines.append(json.dumps({"step": step, "val_nll": start - 0.08 * i, "val_events": 100}))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def project(corpus: Path, tmp_path: Path) -> dict[str, str]:  # noqa: F811
    """Two genres with tiny models (one with pre-training and fine-tune curves) over real Nottingham tunes."""
    cache, models = tmp_path / "cache", tmp_path / "models"
    for i, name in enumerate(GENRES):
        spec = Genre(name, f"test {name}", ("tunes",), "GPL-3.0", split="file", validation_fraction=0.5)
        prepare_genre(spec, corpus, cache, workers=1, progress=False)
        tiny_model(models / name / "v1", genre=name, seed=i)
        (models / name / "CURRENT").write_text("v1\n")
    training = models / "folk" / "v1" / "training"
    training.mkdir()
    _metrics(training / "pretrain-metrics.jsonl", range(50, 450, 50), 5.5)
    _metrics(training / "finetune-metrics.jsonl", range(10, 110, 10), 4.0)
    card = json.loads((models / "folk" / "v1" / "card.json").read_text())
    card["training"] = {"init_from": "runs/classical/base/best", "step": 100}
    (models / "folk" / "v1" / "card.json").write_text(json.dumps(card))
    studies = tmp_path / "studies"
    for run, (dropout, rise) in {"plain": (0.0, 0.3), "guarded": (0.3, 0.0)}.items():
        run_dir = tmp_path / "runs" / "folk" / run
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"transpose": 0, "model": {"dropout": dropout}}))
        lines = [
            {"step": s, "val_nll": 3.0 - 0.01 * min(s, 50) + rise * max(0, s - 50) / 50, "train_nll": 3 - s / 50}
            for s in range(10, 110, 10)
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    collect_study(sorted((tmp_path / "runs" / "folk").iterdir()), studies / "folk-test", "folk", "Does dropout help?")
    return {
        **os.environ,
        "COMPOSER_MODELS_DIR": str(models),
        "COMPOSER_CACHE_DIR": str(cache),
        "COMPOSER_STUDIES_DIR": str(studies),
        "OMP_NUM_THREADS": "1",
    }


def composer(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "composer.cli", *args], env=env, capture_output=True, text=True)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action") and value is not None:
                self.refs.append((tag, name, value))


def check_self_contained(html: str) -> list[str]:
    """The page's image sources (asserting nothing is fetched from anywhere and nothing needs a script)."""
    parser = _Links()
    parser.feed(html)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    images = []
    for tag, name, value in parser.refs:
        if tag == "img":
            assert value.startswith("data:image/png;base64,"), value[:60]
            images.append(value)
        elif tag == "audio":
            assert value.startswith("data:audio/mpeg;base64,"), value[:60]
        else:
            assert tag == "a" and value.startswith("#"), (tag, name, value)  # in-page links only
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html) and "@import" not in html
    return images


@needs_corpora
def test_report_command_writes_a_self_contained_page(project, tmp_path: Path):
    out = tmp_path / "report.html"
    started = time.perf_counter()
    done = composer(project, "report", "--out", str(out), *CLI_OPTIONS)
    first = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert "held-out pieces: mean NLL per event" in done.stdout and "diagonal wins in every row" in done.stdout
    assert "overlap area" in done.stdout
    html = out.read_text()
    images = check_self_contained(html)
    # The curves of folk (pop has none stored), the study, the baseline chart, histograms for both, one roll each.
    assert len(images) == 1 + 1 + 1 + 2 + 2 and "No training metrics are stored with this model" in html
    for section in ('id="curves"', 'id="studies"', 'id="baseline"', 'id="fidelity"', 'id="histograms"', 'id="rolls"'):
        assert section in html
    # Keys and themes: real pieces, free samples, the folk form plan and served pieces; audio beside each roll.
    assert 'id="structure"' in html and html.count('<table class="structure">') == 2
    assert "samples, plan ABAB" in html and "served (best of the candidates" in html
    errors = html.count('<span class="muted">±')  # mean±error for every measure of real pieces and samples
    assert "within 2 s.e." in html and errors >= 4 * 2
    assert "Served in the key asked" in html
    assert html.count("<audio controls") == 2
    assert "Does dropout help?" in html and "from scratch, no transposition, dropout 0.3" in html
    assert "+0.300" in html  # the plain run's rise after its best validation NLL
    assert html.count('<table class="fidelity">') == 2
    assert "Overlap area" in html and "min(p<sub>i</sub>, q<sub>i</sub>)" in html

    data = compute_report(Path(project["COMPOSER_MODELS_DIR"]), Path(project["COMPOSER_CACHE_DIR"]), OPTIONS)
    for name in GENRES:
        for feature in FEATURES:
            overlap = data["features"][name][feature]["overlap"]
            assert 0.0 <= overlap <= 1.0
            assert f"{overlap:.3f}" in html
    held = data["fidelity"]["heldout"]
    assert held["rows"] == held["cols"] == list(GENRES)
    assert all(4.0 < v < 7.0 for row in held["nll"] for v in row)  # untrained models: near log(391)
    assert f"{held['nll'][0][0]:.3f}" in html and f"{held['nll'][0][0]:.3f}" in done.stdout
    assert [s["stage"] for s in data["curves"]["folk"]] == ["pretrain", "finetune"] and data["curves"]["pop"] == []
    assert set(data["baseline"]["folk"]["orders"]) == {"2", "3"}

    # Cached: a second run only renders.
    started = time.perf_counter()
    again = composer(project, "report", "--genre", "folk", "--out", str(tmp_path / "folk.html"), *CLI_OPTIONS)
    assert again.returncode == 0, again.stderr
    assert time.perf_counter() - started < first + 5
    folk_html = (tmp_path / "folk.html").read_text()
    assert len(check_self_contained(folk_html)) == 1 + 1 + 1 + 1 + 1 and 'id="curve-pop"' not in folk_html

    # A genre that changes how it composes (here: an echo) gets its keys-and-themes figures anew.
    genres = tmp_path / "genres"
    shutil.copytree(PROJECT_ROOT / "data" / "genres", genres)
    manifest = genres / "folk.toml"
    manifest.write_text(manifest.read_text().replace("\nsplit = ", "\necho = 1.0\nsplit = ", 1))
    echoed = composer(
        {**project, "COMPOSER_GENRES_DIR": str(genres)}, "report", "--genre", "folk", "--out", str(tmp_path / "e.html"),
        *CLI_OPTIONS,
    )  # fmt: skip
    assert echoed.returncode == 0, echoed.stderr
    assert "echo 1 s" in (tmp_path / "e.html").read_text() and "echo 1 s" not in folk_html

    fid = composer(project, "fidelity", "--json", *CLI_OPTIONS[:8])
    assert fid.returncode == 0, fid.stderr
    assert json.loads(fid.stdout.strip().splitlines()[-1])["heldout"]["nll"] == held["nll"]

    bad = composer(project, "report", "--genre", "opera", "--out", str(tmp_path / "x.html"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


@needs_corpora
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_report_renders_in_chromium(project, tmp_path: Path, browser, shots):  # noqa: F811
    out = tmp_path / "report.html"
    done = composer(project, "report", "--out", str(out), *CLI_OPTIONS)
    assert done.returncode == 0, done.stderr
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(out.as_uri())
    page.wait_for_load_state("load")
    sizes = page.locator("img").evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == 7 and all(ok and w > 0 and h > 0 for ok, w, h in sizes), sizes
    assert not [u for u in fetched if not u.startswith(("file:", "data:"))], fetched
    assert page.locator("table.fidelity").count() == 2
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.screenshot(path=str(shots / "report-full.png"), full_page=True)
    assert (shots / "report-full.png").stat().st_size > 10_000
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # wide tables scroll in their box
    context.close()

    nojs = browser.new_context(viewport={"width": 390, "height": 844}, java_script_enabled=False)
    page = nojs.new_page()
    page.goto(out.as_uri())
    assert page.locator("h1").inner_text() == "Composer model report"
    assert page.locator("img").count() == 7
    nojs.close()
