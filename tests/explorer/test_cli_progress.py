"""The live progress display: counts, best so far and ETA from the study database and the
controller's reports."""
import io

import optuna
from rich.console import Console

from explorer.cli.progress import StudyProgress, render_line, snapshot


def _study():
    study = optuna.create_study(direction="maximize")
    for i, (experts, value, state) in enumerate([("A+B", 658.3, "COMPLETE"), ("A+B+F", 665.3, "COMPLETE"),
                                                 ("A+B+D", None, "FAIL"), ("A+B+C", None, "RUNNING")]):
        trial = study.ask()
        trial.set_user_attr("experts", experts)
        trial.set_user_attr("round", 0 if i == 0 else 1)
        if state == "COMPLETE":
            study.tell(trial, value)
        elif state == "FAIL":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return study


def test_snapshot_counts_best_and_eta():
    study = _study()
    started = min(t.datetime_start for t in study.trials).timestamp()
    snap = snapshot(study, started, total=11, concurrency=2, now=started + 10)
    assert (snap.complete, snap.running, snap.failed, snap.round) == (2, 1, 1, 1)
    assert snap.best_value == 665.3 and snap.best_label == "A+B+F (#1)"
    mean = sum(t.duration.total_seconds() for t in study.trials[:2]) / 2
    assert abs(snap.eta_s - 9 * mean / 2) < 1e-6
    line = render_line(snap)
    assert line.startswith("round 1  done 2/11  running 1  failed 1  pruned 0  best 665.3 A+B+F (#1)  elapsed 0:10")


def test_controller_reports_win_and_log_when_not_a_terminal(caplog):
    study = _study()
    progress = StudyProgress(study, total=11, console=Console(file=io.StringIO()))
    with caplog.at_level("INFO", logger="explorer.cli.progress"):
        with progress:
            progress({"round": 3, "done": 9, "running": 2, "failed": 0, "best_value": 666.5,
                      "best_experts": "A+B+F+E+C", "elapsed_s": 60.0, "eta_s": 125.0})
    snap = progress.current()
    assert snap.round == 3 and snap.failed == 0 and snap.best_label == "A+B+F+E+C" and snap.eta_s == 125.0
    assert any("round 3" in r.getMessage() and "best 666.5 A+B+F+E+C" in r.getMessage() and "eta 2:05" in r.getMessage()
               for r in caplog.records)


def test_a_trial_that_ends_between_reads_is_counted_at_once():
    # the display caches its database read for a minute here; the controller's report of one more
    # done trial makes it read again, so done and running never disagree
    study = _study()
    progress = StudyProgress(study, total=11, console=Console(file=io.StringIO()), min_interval_s=60)
    progress.update(done=2, running=1)
    assert (progress.current().done, progress.current().running) == (2, 1)
    running = next(t for t in study.get_trials() if t.state.name == "RUNNING")
    study.tell(running.number, 660.3)
    progress.update(done=3, running=0)
    snap = progress.current()
    assert (snap.done, snap.running, snap.best_value) == (3, 0, 665.3)
