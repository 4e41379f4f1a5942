"""A user's own LLM (Qwen2 architecture, its own byte-level BPE tokenizer without the image token,
the pad token or the chat markers) under ZeRO-3 on 2 gloo processes through every stage and the
evaluation, with the deformable fusion, and the same trial under DDP: the vocabulary grows the same way in both, and both end
with the same held-out loss and scores."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from test_templates_bpe import _save
from trainers.launch import run_trial
from trainers.modeling.llm import grow_vocabulary

ROOT = Path(__file__).resolve().parents[2]


def _qwen(out: Path, tied: bool = True) -> Path:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    _save(out, "byte")
    tok = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=tied, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_the_vocabulary_grows_with_old_rows_kept_and_new_rows_at_their_mean(tmp_path, tied):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(_qwen(tmp_path / "llm", tied))
    old_emb = model.get_input_embeddings().weight.detach().clone()
    old_head = model.get_output_embeddings().weight.detach().clone()
    n = old_emb.shape[0]
    grow_vocabulary(model, n + 3)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape == (n + 3, 64) and head.shape == (n + 3, 64) and model.config.vocab_size == n + 3
    assert torch.equal(emb[:n], old_emb) and torch.equal(head[:n], old_head)
    torch.testing.assert_close(emb[n:], old_emb.mean(0).expand(3, -1))
    torch.testing.assert_close(head[n:], old_head.mean(0).expand(3, -1))
    assert (head is emb) == tied
    assert model(input_ids=torch.tensor([[n + 2, 5]])).logits.shape == (1, 2, n + 3)


@pytest.mark.slow
def test_zero3_with_a_user_llm_that_needs_new_tokens_equals_ddp(tmp_path):
    llm = _qwen(tmp_path / "qwen")
    base = yaml.safe_load((ROOT / "studies" / "trials" / "tiny.yaml").read_text())
    base["llm"] = {"source": str(llm), "template": "chatml", "max_length": 256}
    base["fusion"] = {"name": "deformable"}  # a fusion with weights, built once by rank 0 and read back in every stage
    base["train"]["precision"] = "fp32"
    base["eval"] = {"benchmarks": ["gqa", "pope"], "batch_size": 4, "max_new_tokens": 4}
    base["data"]["synthetic"]["n_eval"] = 8
    results = {}
    for strategy in ("ddp", "deepspeed_zero3"):
        spec = dict(base, train={**base["train"], "strategy": strategy})
        path = tmp_path / f"{strategy}.yaml"
        path.write_text(yaml.safe_dump(spec))
        results[strategy] = run_trial(path, tmp_path / strategy / "out", nproc=2)
        assert json.loads((tmp_path / strategy / "out" / "result.json").read_text()) == results[strategy]
    ddp, zero = results["ddp"], results["deepspeed_zero3"]
    assert zero["world_size"] == ddp["world_size"] == 2
    assert zero["steps"] == ddp["steps"] and set(zero["scores"]) >= {"gqa", "pope"}
    assert zero["heldout_loss"] == pytest.approx(ddp["heldout_loss"], rel=1e-4)
    assert zero["scores"] == pytest.approx(ddp["scores"], abs=1e-6)


@pytest.mark.slow
def test_a_failed_attempt_reports_its_own_error_not_an_earlier_one(tmp_path):
    from trainers.launch import TrialFailed

    llm = _qwen(tmp_path / "qwen")
    (llm / "model.safetensors").write_bytes(b"not a safetensors file")
    spec = yaml.safe_load((ROOT / "studies" / "trials" / "tiny.yaml").read_text())
    spec["llm"] = {"source": str(llm), "template": "chatml", "max_length": 256}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    logs = tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    (logs / "torchrun.log").write_text("Traceback (most recent call last):\nKeyError: 'a stale error of an earlier attempt'\n")
    with pytest.raises(TrialFailed) as err:
        run_trial(path, tmp_path / "out", nproc=1)
    first = str(err.value).split("; log ")[0]
    assert "stale" not in first and "SafetensorError" in first, first
