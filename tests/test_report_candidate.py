"""A report that decides (issue #16): a candidate beside the current version with a verdict,
readable learning curves, and a one-genre report without every genre prepared."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from composer.report.candidate import verdict
from composer.report.figures import curve_figure
from tests.conftest import needs_corpora, tiny_model
from tests.test_data import corpus  # noqa: F401  (the real-MIDI corpus fixture)
from tests.test_report import CLI_OPTIONS, check_self_contained, composer, project  # noqa: F401

ONE_GENRE = [*CLI_OPTIONS, "--structure-samples", "0"] if "--structure-samples" not in CLI_OPTIONS else CLI_OPTIONS


def png_size(uri: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size


def test_the_verdict_says_better_by_how_much_or_keep_the_current_one():
    better = verdict("v5", "v4", 0.690, 0.700, 1.252)
    assert better["better"] and better["text"] == (
        "v5 is better than the current v4 by 0.010 nats/event (1.4 %): promote it."
    )
    worse = verdict("run ft", "v4", 0.720, 0.700, 1.252)
    assert not worse["better"] and worse["text"] == (
        "run ft is worse than the current v4 by 0.020 nats/event (2.9 %): keep the current one."
    )
    same = verdict("v5", "v4", 0.7002, 0.700, 1.252)
    assert not same["better"] and same["text"].endswith(
        "is no better than the current v4 (within 0.0005 nats/event): keep the current one."
    )
    behind_ngram = verdict("v5", "v4", 3.0, 3.2, 2.9)
    assert (
        not behind_ngram["better"]
        and "the n-gram baseline (2.900) beats it: keep the current one" in behind_ngram["text"]
    )
    assert verdict("run ft", "v4", 0.690, 0.700, 1.252, run=True)["text"].endswith(
        "by 0.010 nats/event (1.4 %): publish it as a version and promote it."
    )
    first = verdict("v1", None, 2.0, None, 3.0)
    assert first["better"] and first["delta"] is None and "first model" in first["text"]


def stage(name: str, points: int) -> dict:
    return {
        "stage": name,
        "train": [[s, 5.0 - s / 100] for s in range(10, 10 * points + 1, 10)],
        "val": [[s, 5.2 - s / 100] for s in range(20, 10 * points + 1, 20)],
        "start_from_step": None,
    }


def test_learning_curves_stay_readable_at_full_width_however_long_the_lineage():
    """Two panels to a row: five stages no longer squeeze into one strip of ~200 px panels."""
    for stages in (1, 2, 5):
        uri = curve_figure("folk", [stage(f"s{i}", 12) for i in range(stages)], None, None)
        width, height = png_size(uri)
        columns = min(2, stages)
        assert width / columns >= 550 and width <= 1300, (stages, width)  # the page shows up to ~1,120 px
        assert height >= 380 * -(-stages // columns)
    one_evaluation = {"stage": "candidate run", "train": [], "val": [[20, 5.9]], "start_from_step": None}
    assert png_size(curve_figure("folk", [one_evaluation], None, None))[0] >= 550  # drawn, labelled


@pytest.fixture
def with_candidates(project, tmp_path: Path) -> dict[str, str]:  # noqa: F811
    """A finished run ``cand`` (one evaluation logged) and a published version v2 of folk."""
    models = Path(project["COMPOSER_MODELS_DIR"])
    run = tmp_path / "runs" / "folk" / "cand"
    tiny_model(run / "best", "folk", seed=7)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 20, "val_nll": 5.9, "val_events": 100}) + "\n")
    tiny_model(models / "folk" / "v2", "folk", seed=8)
    return {**project, "COMPOSER_RUNS_DIR": str(tmp_path / "runs")}


@needs_corpora
def test_a_candidate_run_is_set_beside_the_current_version_with_a_verdict(with_candidates, tmp_path: Path):
    out = tmp_path / "cand.html"
    done = composer(with_candidates, "report", "--genre", "folk", "--candidate", "cand", "--out", str(out), *ONE_GENRE)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    head = lines.index("folk: run cand beside the current v1")
    whole = lines[head + 2].split()
    assert whole[:3] == ["whole", "validation", "split"]
    current, candidate, delta = map(float, whole[3:6])
    assert delta == pytest.approx(candidate - current, abs=1.5e-3)
    assert any(line.startswith("folk held-out excerpts") for line in lines)
    assert any(line.startswith("pop held-out excerpts") for line in lines)  # NLL per genre prepared here
    assert any("-gram, whole validation split)" in line for line in lines)
    [said] = [line for line in lines if line.startswith("verdict: ")]
    assert said.endswith(("keep the current one.", "publish it as a version and promote it."))
    html = out.read_text()
    check_self_contained(html)
    assert 'id="candidate"' in html and said.removeprefix("verdict: ") in html
    assert '<table class="candidate">' in html and '<table class="candidate-overlaps">' in html
    assert 'alt="Learning curve of the candidate run cand"' in html  # one evaluation still draws

    version = composer(with_candidates, "report", "--genre", "folk", "--candidate", "v2", "--out", str(out), *ONE_GENRE)
    assert version.returncode == 0, version.stderr
    assert "folk: v2 beside the current v1" in version.stdout

    for bad, message in (("nope", "genre folk has no version or finished run named 'nope' (versions: v1, v2; "
                                  "runs with a best model: cand)"),
                         ("../pop/v1", "is not a version name")):  # fmt: skip
        refused = composer(with_candidates, "report", "--genre", "folk", "--candidate", bad, "--out", str(out))
        assert refused.returncode == 2 and message in refused.stderr and len(refused.stderr.splitlines()) == 1
    both = composer(with_candidates, "report", "--candidate", "cand", "--out", str(out), *ONE_GENRE)
    assert both.returncode == 2 and "a candidate is compared within one genre" in both.stderr


@needs_corpora
def test_a_report_on_one_genre_needs_only_that_genre_prepared(project, tmp_path: Path):  # noqa: F811
    shutil.rmtree(Path(project["COMPOSER_CACHE_DIR"]) / "genres" / "pop")
    out = tmp_path / "folk.html"
    done = composer(project, "report", "--genre", "folk", "--out", str(out), *ONE_GENRE)
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert "Not in the matrices: pop, which has" in html and "composer prepare --genre" in html
    unprepared = composer(project, "report", "--genre", "pop", "--out", str(out), *ONE_GENRE)
    assert unprepared.returncode == 2
    assert unprepared.stderr.strip() == "error: pop not prepared here: run `composer prepare --genre pop`"
