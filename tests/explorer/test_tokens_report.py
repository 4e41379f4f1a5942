"""Score against visual tokens: the table's rows from hand-made leaderboard rows and result.json
throughputs, the plot, and the visual tokens a trial spec gives (compression, SVA query grid)."""
from __future__ import annotations

import pytest

from explorer.report import plots
from explorer.tracking import run_fields as rf
from explorer.report.artifacts import _csv
from explorer.report.tokens import HEADER, sft_throughput, token_rows, token_table


def _result(tok_s, samples_s=2.0):
    return {"throughput": {"pretrain": {"samples_per_s": 9.0, "tokens_per_s": 900.0},
                           "sft": {"samples_per_s": samples_s, "tokens_per_s": tok_s}}}


BOARD = [  # as explorer.report.leaderboard.leaderboard gives them, best first
    {"experts": "A+B", "params": {"fusion": "sva", "compress": "none"}, "value": 0.61, "ci": [0.55, 0.66], "n": 2,
     "trials": [0, 3]},
    {"experts": "A+B", "params": {"fusion": "sva", "compress": "unshuffle"}, "value": 0.58, "ci": [0.50, 0.64],
     "n": 1, "trials": [1]},
    {"experts": "A", "params": {"fusion": "channel_concat", "compress": "none"}, "value": 0.52, "ci": None, "n": 1,
     "trials": [2]},
    {"experts": "A+C", "params": {"fusion": "sva", "compress": "none"}, "value": 0.70, "ci": [0.6, 0.8], "n": 1,
     "trials": [4]},  # its trial.yaml is gone: no known token count, left out
]
TOKENS = {0: 1024, 3: 1024, 1: 256, 2: 1024, 4: None}
RESULTS = {0: _result(1000.0), 3: _result(1200.0, 4.0), 1: _result(3000.0), 2: {}}


def test_rows_give_tokens_value_interval_and_sft_throughput():
    rows = token_rows(BOARD, TOKENS, RESULTS, ["compress", "fusion"])
    header, table = token_table(rows)
    assert header == HEADER
    assert table == [
        [256, "A+B", "compress=unshuffle fusion=sva", 0.58, 0.50, 0.64, 1, 3000.0, 2.0],
        [1024, "A+B", "compress=none fusion=sva", 0.61, 0.55, 0.66, 2, 1100.0, 3.0],  # mean of its two seeds
        [1024, "A", "compress=none fusion=channel_concat", 0.52, None, None, 1, None, None],  # no result.json
    ]
    assert _csv(header, table).splitlines()[3] == "1024,A,compress=none fusion=channel_concat,0.52,,,1,,"
    low_first = token_rows(BOARD, TOKENS, RESULTS, [], maximize=False)
    assert [r["value"] for r in low_first] == [0.58, 0.52, 0.61]


def test_sft_throughput_falls_back_to_the_last_stage():
    assert sft_throughput({"throughput": {"pretrain": {"tokens_per_s": 5.0}}}) == {"tokens_per_s": 5.0}
    assert sft_throughput({"throughput": {"sft": {"tokens_per_s": 0.0, "samples_per_s": 3}}}) == {"samples_per_s": 3.0}
    assert sft_throughput({}) == {}


def test_plot_is_a_png(tmp_path):
    path = plots.visual_tokens(token_rows(BOARD, TOKENS, RESULTS, ["compress"]), "avg", tmp_path / "t.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("fusion,tokens", [
    ({"name": "channel_concat"}, 16),
    ({"name": "channel_concat", "options": {"compress": "unshuffle", "compress_factor": 2}}, 4),
    ({"name": "sva", "options": {"query_grid": 2, "llm_layers": [1]}}, 4),
    ({"name": "sva", "options": {"query_grid": 3}}, None),  # does not divide the grid: unknown, not a guess
])
def test_visual_tokens_of_a_trial_spec(fusion, tokens):
    spec = {"experts": [{"preset": "tiny-clip", "grid": 4}, {"preset": "tiny-convnext", "grid": 4}], "fusion": fusion}
    assert rf.visual_tokens(spec) == tokens


def test_the_greedy_path_plot_labels_dropped_candidates_and_stars_the_answer(tmp_path, monkeypatch):
    figs = []
    real = plots._save
    def capture(fig, path):
        ax = fig.axes[0]
        stars = [list(line.get_xdata()) for line in ax.lines if line.get_label() == "study's answer"]
        figs.append(([t.get_text() for t in ax.texts], stars))
        return real(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    rounds = [{"round": 0, "best": "A+B", "answer": False, "candidates": [{"experts": "A+B", "value": 600.0}]},
              {"round": 1, "best": "A+B+E", "answer": True,  # E kept; C and F dropped
               "candidates": [{"experts": "A+B+C", "value": 590.0, "lo": 580.0, "hi": 600.0},
                              {"experts": "A+B+E", "value": 650.0}, {"experts": "A+B+F", "value": 620.0}]},
              {"round": 2, "best": "A+B+E+F", "answer": False,  # ran, within the interval: not the answer
               "candidates": [{"experts": "A+B+E+F", "value": 651.0}, {"experts": "A+B+E+C", "value": 640.0}]}]
    out = plots.greedy_path(rounds, "avg", True, tmp_path / "greedy_path.png", "t")
    assert out.is_file() and out.stat().st_size > 1000
    assert figs == [(["A+B", "+C", "A+B+E", "+F", "A+B+E+F", "+C"], [[1]])]  # the star on round 1's kept set
