"""Training runs an operator cannot spoil (issue #16): one process per run folder, a log that
continues exactly from the checkpoint after a crash, and a time budget that counts --publish."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from composer.training.train import RunBusyError, TimeBudget, run_lock
from tests.test_train import TINY, composer, metrics, project  # noqa: F401  (the project fixture)


def run_dir(env, run: str) -> Path:
    return Path(env["COMPOSER_RUNS_DIR"]) / "tunes" / run


def test_a_second_run_in_the_same_folder_is_refused_at_once_naming_the_holder(project):  # noqa: F811
    args = ["train", "--genre", "tunes", "--run-name", "shared", "--steps", "100000", "--eval-every", "1000", *TINY]
    first = subprocess.Popen(
        [sys.executable, "-m", "composer.cli", *args], env=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        checkpoint = run_dir(project, "shared") / "checkpoint.pt"
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert checkpoint.exists(), "the first run never checkpointed"
        second = composer(project, *args)
        assert second.returncode == 2
        [line] = second.stderr.strip().splitlines()
        assert line.startswith(f"error: run {run_dir(project, 'shared')} is in use by process {first.pid} on ")
        assert line.endswith("wait for it to end, stop it, or pick another --run-name")
        assert first.poll() is None  # the first run goes on untouched
    finally:
        first.terminate()  # SIGTERM: it checkpoints and stops cleanly
        first.wait(60)
    assert first.returncode == 0, first.stderr.read().decode()[-2000:] if first.stderr else ""
    steps = [m["step"] for m in metrics(project, "shared") if "val_nll" in m]
    assert len(steps) == len(set(steps))  # one writer: no step evaluated twice


def test_the_lock_is_released_by_the_kernel_when_its_holder_dies(tmp_path: Path):
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom composer.training.train import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunBusyError, match=f"in use by process {holder.pid} on "), run_lock(tmp_path):
        pass
    holder.kill()  # kill -9: no clean-up runs
    holder.wait()
    with run_lock(tmp_path):  # free again at once
        pass


def test_after_a_crash_the_log_continues_exactly_from_the_checkpoint(project):  # noqa: F811
    """The files a kill -9 leaves: a checkpoint at step 3, the log already at step 6 (with a line
    cut short). The resumed run logs steps 4..6 once, as if it had never stopped."""
    args = ["train", "--genre", "tunes", "--run-name", "crash", "--eval-every", "2", "--checkpoint-every", "100", *TINY]
    assert composer(project, *args, "--steps", "3").returncode == 0
    folder = run_dir(project, "crash")
    shutil.copy(folder / "checkpoint.pt", folder / "at-step-3.pt")
    assert composer(project, *args, "--steps", "6").returncode == 0
    whole = [m["step"] for m in metrics(project, "crash") if "val_nll" in m]
    assert whole == [2, 3, 4, 6]
    # the crash: the process dies after logging step 6, before its checkpoint, mid-way through a line
    shutil.copy(folder / "at-step-3.pt", folder / "checkpoint.pt")
    with (folder / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 6, "val_n')
    again = composer(project, *args, "--steps", "6")
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stderr and "metrics log cut back to step 3" in again.stderr
    records = metrics(project, "crash")  # every line is whole JSON again
    assert [m["step"] for m in records if "val_nll" in m] == [2, 3, 4, 6]
    assert [m["step"] for m in records] == sorted(m["step"] for m in records)


def test_the_time_budget_keeps_back_the_evaluation_after_training():
    now = [0.0]
    budget = TimeBudget(1.0, reserve_events=10_000, clock=lambda: now[0])  # one minute
    assert budget.needs_rate and not budget.spent()
    budget.measured(2.0, 1_000)  # 2 ms an event: the publish evaluation will take 20 s
    assert budget.reserve_s == pytest.approx(20.0) and not budget.needs_rate
    now[0] = 39.0
    assert not budget.spent()
    now[0] = 40.0  # 40 s of training + 20 s of evaluation: the minute is spent
    assert budget.spent()
    plain = TimeBudget(1.0, clock=lambda: now[0])  # nothing after training: the whole minute trains
    assert not plain.spent() and plain.reserve_s == 0
    assert not TimeBudget(0.0, reserve_events=10, clock=lambda: 1e9).spent()  # no limit


def test_train_with_publish_reserves_the_publish_evaluation(project):  # noqa: F811
    done = composer(
        project, "train", "--genre", "tunes", "--run-name", "budget", "--steps", "4", "--eval-every", "2",
        "--max-minutes", "60", "--publish", "v-budget", *TINY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[0])
    assert summary["finished"] and summary["reserved_s"] > 0
    assert "kept" in done.stderr and "for the evaluation after training" in done.stderr
    alone = composer(
        project, "train", "--genre", "tunes", "--run-name", "budget-alone", "--steps", "2", "--max-minutes", "60", *TINY
    )
    assert json.loads(alone.stdout.splitlines()[0])["reserved_s"] == 0
