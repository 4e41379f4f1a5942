"""Shared builders for the trial-engine tests (tiny, local, random init); also used by test_eval_cli.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY_YAML = ROOT / "studies" / "trials" / "tiny.yaml"

TEXTS = ["a red circle on a white background", "what colour is the shape ?", "red", "blue square",
         "how many circles are there ?", "three", "the word is cat"]


def tiny_tokenizer(tmp_path: Path):
    from trainers.data.tokenizer import build_word_tokenizer

    return build_word_tokenizer(TEXTS, tmp_path / "tok")


def tiny_model(tmp_path: Path, experts=("tiny-clip", "tiny-convnext"), fusion="channel_concat",
               projector="mlp2x_gelu", seed: int = 0):
    from experts import get_preset
    from trainers.spec import LLMSpec
    from trainers.stages.recipes import build_model

    tok = tiny_tokenizer(tmp_path)
    return build_model([get_preset(e) for e in experts], fusion, {}, projector, llm_spec=LLMSpec(preset="tiny-llama"),
                       tokenizer=tok, seed=seed)


def finished_trial(tmp: Path) -> Path:
    """A tiny trial directory as a study leaves it (<tmp>/trials/<study>/<trial>): its saved SFT
    model (random init), trial.yaml and a result.json (test_export_model.py, test_lmms_model.py)."""
    import json

    from trainers.spec import dump_trial_spec, parse_trial_spec

    trial = tmp / "trials" / "tiny_greedy_v2" / "r1__A+B__s0"
    tiny_model(tmp).save_pretrained(trial / "stages" / "sft" / "model")
    spec = parse_trial_spec({
        "name": "tiny-greedy-3", "experts": [{"preset": "tiny-clip"}, {"preset": "tiny-convnext"}],
        "llm": {"preset": "tiny-llama", "template": "vicuna_v1"},
        "data": {"synthetic": {"seed": 0, "image_size": 32, "n_eval": 6}},
        "eval": {"max_new_tokens": 4, "batch_size": 4}, "cache_dir": str(tmp / "cache")})
    dump_trial_spec(spec, trial / "trial.yaml")
    (trial / "result.json").write_text(json.dumps({"objective_name": "weighted", "objective": 12.5,
                                                   "scores": {"gqa": 12.5, "gqa/semantic/colour": 50.0},
                                                   "blind_scores": {"gqa": 10.0}}))
    return trial


def tiny_spec_dict(**train_overrides) -> dict:
    """studies/trials/tiny.yaml, smaller (fewer examples, capped steps) for multi-process tests."""
    d = yaml.safe_load(TINY_YAML.read_text())
    d["data"]["synthetic"].update(n_pretrain=64, n_sft=64, n_heldout=16)
    for st in d["train"]["stages"].values():
        st.update(epochs=1, global_batch_size=8, micro_batch_size=2)
    d["train"].update(train_overrides)
    return d


def write_spec(d: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def run_workers(script: str, *args: str, nproc: int = 2) -> None:
    """tests/trainers/`script` under torchrun on `nproc` gloo ranks (its own rendezvous); fails with
    the workers' stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "trainers")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
           "--nnodes", "1", "--nproc-per-node", str(nproc), str(ROOT / "tests" / "trainers" / script), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def write_rank_reports(doc: dict, result: Path) -> None:
    """In a run_workers script: every rank's `doc`, gathered, written by rank 0 as a JSON list; then
    the process group ends."""
    import json

    from trainers.training import distributed as D

    docs = D.gather_objects(doc)  # None except on rank 0
    if docs is not None:
        result.write_text(json.dumps(docs))
    D.shutdown()
