"""Bad trial specs fail in the launcher, before any process starts, with one line."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainers.helpers_eagle import tiny_spec_dict, write_spec
from trainers.launch import main, run_trial, torchrun_command, worker_command
from trainers.spec import SpecError, TrialSpec


def _bad(tmp_path, mutate):
    d = tiny_spec_dict()
    mutate(d)
    return write_spec(d, tmp_path / "bad.yaml")


CASES = {
    "unknown_expert": (lambda d: d["experts"].__setitem__(0, {"preset": "tiny-clop"}), r"experts\.0\.preset: .*tiny-clip"),
    "unknown_fusion": (lambda d: d["fusion"].__setitem__("name", "concat_all"), r"fusion\.name: .*channel_concat"),
    "batch_split": (lambda d: d["train"]["stages"]["sft"].update(global_batch_size=6, micro_batch_size=2),
                    r"train\.stages\.sft: global_batch_size 6 is not a multiple of micro_batch_size 2 x 2 processes"),
    "missing_file": (lambda d: d.__setitem__("data", {"pretrain": "/nonexistent/p.json", "sft": "/nonexistent/s.json"}),
                     r"data\.pretrain: file not found: /nonexistent/p\.json"),
    "unknown_llm": (lambda d: d["llm"].__setitem__("preset", "giant-llama"), r"llm: unknown llm preset 'giant-llama'; known: .*tiny-llama"),
    "unknown_key": (lambda d: d["train"].__setitem__("strategy_", "ddp"), r"train\.strategy_: unknown key"),
    "bad_strategy": (lambda d: d["train"].__setitem__("strategy", "fsdp"), r"train\.strategy"),
    "interval_eval_zero3": (lambda d: (d["train"].__setitem__("strategy", "deepspeed_zero3"),
                                       d.__setitem__("eval", {"benchmarks": ["gqa"], "interval_steps": 2})),
                            r"eval\.interval_steps: not supported with deepspeed_zero3"),
    "flash_attention": (lambda d: d["llm"].__setitem__("attn_implementation", "flash_attention_2"),
                        r"llm\.attn_implementation: flash_attention_2 needs (the flash-attn package|a CUDA GPU)"),
    "positions": (lambda d: d["llm"].__setitem__("max_length", 1020),  # tiny-llama: 1024 positions, 16 image tokens
                  r"llm\.max_length: 1020 text tokens \+ 15 more for the image = 1035, over the LLM's 1024 positions"),
    "align_positions": (lambda d: d["train"].__setitem__("align_llm", {"preset": "tiny-llama", "max_length": 1010}),
                        r"train\.align_llm\.max_length: 1010 text tokens \+ 15 more"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_spec_fails_before_launch_with_one_line(tmp_path, case):
    mutate, pattern = CASES[case]
    spec = _bad(tmp_path, mutate)
    out = tmp_path / "out"
    with pytest.raises(SpecError, match=pattern) as info:
        run_trial(spec, out, nproc=2)
    assert "\n" not in str(info.value) and str(spec) in str(info.value)
    assert not (out / "logs" / "torchrun.log").exists() and not (out / "trial.yaml").exists()
    assert not (tmp_path / "cache").exists()  # not even the synthetic data was generated


def test_cli_returns_2_on_a_bad_spec(tmp_path, caplog):
    spec = _bad(tmp_path, CASES["unknown_expert"][0])
    assert main([str(spec), "--out", str(tmp_path / "o"), "--nproc", "1"]) == 2
    assert "tiny-clop" in caplog.text


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="trial spec not found"):
        run_trial(tmp_path / "nope.yaml", tmp_path / "o")


def test_torchrun_command_own_rendezvous_and_multinode_passthrough(tmp_path):
    cmd = torchrun_command(Path("t.yaml"), Path("o"), Path("c"), 2)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "localhost:0" and "--nproc-per-node" in cmd
    multi = torchrun_command(Path("t.yaml"), Path("o"), Path("c"), 8,
                             torchrun_args=["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "head:29400"])
    assert "localhost:0" not in multi and multi[multi.index("--rdzv-endpoint") + 1] == "head:29400"
    assert multi.index("--nnodes") < multi.index("trainers.stages.runner")


def test_one_ddp_process_runs_the_worker_without_torchrun():
    spec = TrialSpec.model_validate(tiny_spec_dict())
    args = (Path("t.yaml"), Path("o"), Path("c"))
    alone = worker_command(spec, *args, 1, worker_args=["--stop-after", "3"])
    assert alone[1:3] == ["-m", "trainers.stages.runner"] and alone[-2:] == ["--stop-after", "3"]
    for nproc, targs, strategy in ((2, [], "ddp"), (1, ["--nnodes", "2"], "ddp"), (1, [], "deepspeed_zero2")):
        other = spec.model_copy(update={"train": spec.train.model_copy(update={"strategy": strategy})})
        assert worker_command(other, *args, nproc, torchrun_args=targs)[1:3] == ["-m", "torch.distributed.run"]


def test_a_bad_image_fails_at_launch_and_verification_is_remembered(tmp_path):
    import json

    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "ok.png")
    (images / "bad.png").write_bytes(b"not a png")
    conv = [{"from": "human", "value": "<image>\nwhat colour is the shape ?"}, {"from": "gpt", "value": "red"}]
    records = [{"id": f"r{i}", "image": "bad.png" if i == 3 else "ok.png", "conversations": conv} for i in range(8)]
    (tmp_path / "d.json").write_text(json.dumps(records))
    d = tiny_spec_dict()
    d["data"] = {"pretrain": str(tmp_path / "d.json"), "sft": str(tmp_path / "d.json"), "image_folder": str(images)}
    with pytest.raises(SpecError, match=r"bad\.yaml: data: .*d\.json: image .*bad\.png: unreadable image"):
        run_trial(write_spec(d, tmp_path / "bad.yaml"), tmp_path / "out", nproc=1)
    from trainers.launch import prepare_trial

    d["data"]["on_bad_image"] = "skip"
    spec_path = write_spec(d, tmp_path / "skip.yaml")
    prepare_trial(spec_path, tmp_path / "out", 1)
    checks = json.loads((tmp_path / "out" / "data_checks.json").read_text())
    assert len(checks) == 1 and list(checks.values())[0]["bad"].keys() == {"bad.png"}  # one file, read once
    assert len(list((tmp_path / "cache" / "verified").glob("*.json"))) == 1
