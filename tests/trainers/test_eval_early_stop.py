"""The evaluation's early stop (trainers/eval/early_stop.py) inside the runner: against a reference
it is clearly behind, it ends at the first test with the items done; against its own scores it runs
to the end, with the predictions of an evaluation without early stop."""
from __future__ import annotations

import json

from tests.trainers.test_eval_runner import PixelModel, spec_for
from trainers.eval.early_stop import EarlyStop
from trainers.eval.runner import evaluate

BENCHES = ["pope", "gqa"]  # 18 + 6 items


def _scores(out) -> dict[str, dict[str, float]]:
    """Per-item scores of an evaluation, by benchmark and question id (as a rung stores them)."""
    out_scores = {}
    for b in BENCHES:
        rows = map(json.loads, (out / "predictions" / f"{b}.jsonl").read_text().splitlines())
        out_scores[b] = {r["question_id"]: r["score"] for r in rows}
    return out_scores


def test_behind_the_reference_stops_at_the_first_test(tmp_path):
    spec = spec_for(tmp_path, BENCHES)
    plain = evaluate(PixelModel(), None, spec, tmp_path / "plain", final=False)
    assert plain["items_done"] == plain["items_full"] == 24 and not plain["early_stopped"]
    own = _scores(tmp_path / "plain")
    perfect = {b: {q: 1.0 for q in own[b]} for b in BENCHES}
    stop = EarlyStop(perfect, alpha=0.05, min_items=8, every=8)
    res = evaluate(PixelModel(), None, spec, tmp_path / "behind", final=False, early_stop=stop)
    first = list(own["pope"].values())[:8]
    assert sum(v < 1 for v in first) >= 4  # the pixel model misses many: clearly behind a perfect reference
    assert res["early_stopped"] and res["items_done"] == 8 and res["items_full"] == 24
    assert set(res["scores"]) >= {"pope"} and "gqa" not in res["scores"]  # it never reached gqa
    assert len((tmp_path / "behind/predictions/pope.jsonl").read_text().splitlines()) == 8


def test_level_with_the_reference_runs_to_the_end_with_the_same_predictions(tmp_path):
    spec = spec_for(tmp_path, BENCHES)
    plain = evaluate(PixelModel(), None, spec, tmp_path / "plain", final=False)
    own = _scores(tmp_path / "plain")
    stop = EarlyStop(own, alpha=0.05, min_items=8, every=8)
    res = evaluate(PixelModel(), None, spec, tmp_path / "level", final=False, early_stop=stop)
    assert not res["early_stopped"] and res["items_done"] == 24 and stop.p_value == 0.5  # all differences 0
    assert res["scores"] == plain["scores"] and res["objective"] == plain["objective"]
    for b in BENCHES:
        assert (tmp_path / "level/predictions" / f"{b}.jsonl").read_text() == \
            (tmp_path / "plain/predictions" / f"{b}.jsonl").read_text()
