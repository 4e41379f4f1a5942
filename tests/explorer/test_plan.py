"""`eagle-explore plan` (per-stage cost of every planned trial) and `run` refusing a trial that
the estimate puts over the study's resources.gpu_memory_gb, before anything starts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import explorer.controller
from explorer.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
STAGE_KEYS = {"trainable_params", "frozen_params", "flops_per_sample", "peak_memory_gb", "gpu_hours",
              "host_memory_gb_per_node"}

SMALL = {  # greedy over two tiny experts: two expert sets, three planned trials
    "name": "plan-small", "strategy": {"type": "greedy", "base": ["A"], "candidates": ["B", "C"], "max_size": 2},
    "search_space": "eagle_tiny", "objective": {"metric": "heldout_loss", "direction": "minimize"},
    "base_trial": {"experts": [{"preset": "tiny-clip"}], "llm": {"preset": "tiny-llama", "max_length": 128},
                   "data": {"synthetic": {"n_pretrain": 64, "n_sft": 64}},
                   "train": {"stages": {s: {"global_batch_size": 8, "micro_batch_size": 4}
                                        for s in ("align_expert", "align_projector", "sft")}}},
}


@pytest.fixture()
def plan_cache(tmp_path, monkeypatch):
    path = tmp_path / "profiles.json"
    monkeypatch.setenv("EAGLE_PLAN_CACHE", str(path))
    return path


def _study(tmp_path: Path, **resources) -> Path:
    data = {**SMALL, "resources": {"nproc_per_trial": 1, **resources}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_plan_json_of_a_small_study(tmp_path, plan_cache):
    res = runner.invoke(app, ["plan", str(_study(tmp_path)), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [t["key"] for t in doc["trials"]] == ["r0/A/s0", "r1/A+B/s0", "r1/A+C/s0"]
    for t in doc["trials"]:
        assert list(t["stages"]) == ["align_expert", "align_projector", "sft"]
        for s in t["stages"].values():
            assert STAGE_KEYS <= set(s) and s["flops_per_sample"] > 0 and s["peak_memory_gb"] > 0
    a_alone, a_b = doc["trials"][0]["stages"], doc["trials"][1]["stages"]
    assert a_b["align_projector"]["frozen_params"] > a_alone["align_projector"]["frozen_params"]  # + expert B
    assert a_b["align_expert"]["flops_per_sample"] > a_alone["align_expert"]["flops_per_sample"]
    tot = doc["total_gpu_hours"]
    # stage 1 of A is trained once with the cache (3 trials hold it), three times without
    assert 0 < tot["with_cache"] < tot["without_cache"]
    assert plan_cache.is_file()  # counts persist: a second plan counts nothing again
    again = runner.invoke(app, ["plan", str(_study(tmp_path)), "--json"])
    assert json.loads(again.stdout)["trials"] == doc["trials"]


def test_plan_of_a_trial_file_prints_a_table(plan_cache):
    res = runner.invoke(app, ["plan", str(ROOT / "studies" / "trials" / "tiny.yaml"), "--gpus", "2"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "align_projector" in res.stdout and "Total GPU-hours" in res.stdout and "2 GPU(s)" in res.stdout


def test_plan_bad_option_is_one_line(tmp_path, plan_cache):
    res = runner.invoke(app, ["plan", str(_study(tmp_path)), "--samples", "captions=10"])
    assert res.exit_code == 2
    assert "--samples: expected pretrain=N or sft=N" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_plan_of_an_llm_unknown_offline_is_one_line(tmp_path, plan_cache):
    trial = yaml.safe_load((ROOT / "studies" / "trials" / "tiny.yaml").read_text())
    trial["llm"] = {"source": "someone/unknown-7b"}
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(trial))
    res = runner.invoke(app, ["plan", str(path)])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "someone/unknown-7b" in err and "not known offline" in err
    assert not plan_cache.exists()  # the experts counted before it are not saved by a refused plan


def _unstaged_study(tmp_path: Path, **data) -> Path:
    """SMALL reading data files, an image folder and benchmark copies that are not there."""
    base = json.loads(json.dumps(SMALL["base_trial"]))
    base["data"] = {"pretrain": str(tmp_path / "d" / "p.json"), "sft": str(tmp_path / "d" / "s.json"),
                    "image_folder": str(tmp_path / "d" / "images"), **data}
    base["eval"] = {"benchmarks": ["gqa"], "data_root": str(tmp_path / "eval")}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**SMALL, "base_trial": base}))
    return path


def test_plan_before_the_data_is_staged_is_one_notice(tmp_path, plan_cache):
    study = _unstaged_study(tmp_path)
    res = runner.invoke(app, ["plan", str(study), "--json", "--samples", "pretrain=64", "--samples", "sft=64"])
    assert res.exit_code == 0, res.output
    want = [f"data.pretrain {tmp_path / 'd' / 'p.json'}", f"data.sft {tmp_path / 'd' / 's.json'}",
            f"data.image_folder {tmp_path / 'd' / 'images'}", f"eval.data_root {tmp_path / 'eval'}"]
    assert json.loads(res.stdout)["not_staged"] == want
    assert res.stderr.strip() == f"notice: {study}: not staged yet (a run needs them): {', '.join(want)}"
    same = runner.invoke(app, ["check", str(study), "--offline"])  # the same pre-flight
    assert same.exit_code == 0 and same.stderr == res.stderr, same.output
    refused = runner.invoke(app, ["check", str(study), "--offline", "--staged"])  # a run needs them
    assert refused.exit_code == 2 and f"data.pretrain: file not found: {tmp_path / 'd' / 'p.json'}" in refused.stderr


def test_plan_checks_what_is_there_and_writes_nothing_on_a_bad_input(tmp_path, plan_cache):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "s.json").write_text('{"not": "a list"}')  # staged, but not LLaVA data
    res = runner.invoke(app, ["plan", str(_unstaged_study(tmp_path))])
    assert res.exit_code == 2 and "data.sft" in res.stderr and "a list of records" in res.stderr, res.output
    bad = json.loads(json.dumps(SMALL))
    bad["base_trial"]["experts"] = [{"preset": "tiny-clip", "input_size": 50}]  # no grid reaches the mixture's
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    res = runner.invoke(app, ["plan", str(path), "--json"])
    assert res.exit_code == 2 and res.stdout == "", res.output
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: base_trial") and "experts.0" in err[0]
    assert not plan_cache.exists()  # refused before anything was counted or written


def test_run_refuses_an_oversized_trial_before_anything_starts(tmp_path, plan_cache, monkeypatch):
    started = []
    monkeypatch.setattr(explorer.controller, "run_study", lambda *a, **k: started.append(a))
    work = tmp_path / "work"
    res = runner.invoke(app, ["run", str(_study(tmp_path, gpu_memory_gb=0.01)), "--workdir", str(work)])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "exceeds resources.gpu_memory_gb=0.01" in err and "stage sft" in err
    assert not started and not work.exists()  # no controller, no database, no trial process


def test_gpu_memory_gb_is_validated(tmp_path):
    from explorer.study.spec import StudyError
    from explorer.study.load import load_study
    with pytest.raises(StudyError, match="resources.gpu_memory_gb"):
        load_study(_study(tmp_path, gpu_memory_gb=-1))


@pytest.mark.slow
def test_plan_of_the_paper_greedy_study(tmp_path, plan_cache):
    """The full-size study (11 trials, six experts at paper resolutions, Vicuna-7B) on fake tensors."""
    res = runner.invoke(app, ["plan", str(ROOT / "studies" / "eagle_greedy.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["trials"]) == 11 and doc["trials"][0]["key"] == "r0/A+B/s0"
    # planned before the data is staged: what a run will need is listed, not an error
    assert [n.split()[0] for n in doc["not_staged"]] == ["data.pretrain", "data.sft", "data.image_folder",
                                                          "eval.data_root"]
    sft = doc["trials"][0]["stages"]["sft"]
    assert 7.8e9 < sft["trainable_params"] < 8.0e9  # Vicuna-7B + projector + CLIP-L + ConvNeXt-XXL (trained in SFT)
    assert sft["frozen_params"] < 2e7  # only what the features never reach (the experts train in SFT)
    # ZeRO-2 builds the whole bf16 model on the host in each of the node's 8 ranks
    whole = 2 * (sft["trainable_params"] + sft["frozen_params"]) / 2**30
    assert sft["host_memory_gb_per_node"] == pytest.approx(8 * whole, rel=1e-3) and 110 < 8 * whole < 140
    peaks = [s["peak_memory_gb"] for t in doc["trials"] for s in t["stages"].values()]
    assert max(peaks) <= doc["gpu_memory_gb"] == 80  # `run` would refuse the study otherwise
    six = doc["trials"][-1]["stages"]
    assert six["align_projector"]["flops_per_sample"] > sft["flops_per_sample"] / 2
    assert [e["expert"] for e in six["align_expert"]["stage1"]][:2] == ["clip-l-448", "convnext-xxl-1024"]
    tot = doc["total_gpu_hours"]
    hours = [s["gpu_hours"] for t in doc["trials"] for s in t["stages"].values()]
    assert tot["without_cache"] == pytest.approx(sum(hours), rel=2e-3)
    once = {e["key"]: e["gpu_hours"] for t in doc["trials"] for e in t["stages"]["align_expert"]["stage1"]}
    assert len(once) == 6  # the cache trains each expert's stage 1 once in the study
    stage1 = sum(t["stages"]["align_expert"]["gpu_hours"] for t in doc["trials"])
    assert tot["with_cache"] == pytest.approx(tot["without_cache"] - stage1 + sum(once.values()), rel=2e-3)


def test_plan_of_a_study_with_rungs_shows_what_they_save(tmp_path, plan_cache):
    data = {**SMALL, "resources": {"nproc_per_trial": 1},
            "strategy": {**SMALL["strategy"], "fidelity": {"min_fraction": 0.5}}}
    path = tmp_path / "rungs.yaml"
    path.write_text(yaml.safe_dump(data))
    res = runner.invoke(app, ["plan", str(path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    keys = [t["key"] for t in doc["trials"]]
    # a lone base goes straight to full steps; of B and C at half the steps, one goes on
    assert keys[:3] == ["r0/A/s0", "r1/A+B/s0@rung0", "r1/A+C/s0@rung0"] and len(keys) == 4
    winner = keys[3]
    loser = next(k for k in keys[1:3] if not k.startswith(winner))
    tot, full = doc["total_gpu_hours"], doc["total_gpu_hours"]["full_fidelity"]
    # the rungs save the half of the SFT steps the stopped candidate never trains
    saved = next(t for t in doc["trials"] if t["key"] == loser)["stages"]["sft"]["gpu_hours"]
    assert full["with_cache"] - tot["with_cache"] == pytest.approx(saved, rel=5e-3)
    assert tot["ratio_fidelity_alone"] == pytest.approx(tot["with_cache"] / full["with_cache"], rel=1e-3)
    assert tot["ratio_fidelity_alone"] < 1
    assert tot["ratio_to_naive"] == pytest.approx(tot["with_cache"] / full["without_cache"], rel=1e-3)
    text = runner.invoke(app, ["plan", str(path)]).stdout
    line = " ".join(text[text.index("Multi-fidelity:"):].split())
    assert line.startswith(f"Multi-fidelity: {tot['with_cache']:.2g} with rungs vs {full['with_cache']:.2g} at full "
                           f"fidelity, both with the cache: {tot['ratio_fidelity_alone']} of it; vs")
