"""Weights read straight into ZeRO-3 partitions (trainers/modeling/partitions.py): a tensor's flat
range read from safetensors shards without the rest, a saved LLM built without init and filled by
name (tied heads once, renamed checkpoints left to transformers), and on 2 gloo ranks each rank's
partition equal to its range of the file with the gathered model giving a plain load's logits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

from experts.loading import SafetensorsState
from trainers.modeling.partitions import load_state, read_llm
from tests.trainers.helpers_eagle import run_workers
from trainers.modeling.saving import save_llm

ROOT = Path(__file__).resolve().parents[2]


def _qwen(out: Path, tied: bool) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=37, hidden_size=16, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tied)
    model = Qwen2ForCausalLM(cfg).eval()
    save_llm(model, out, is_main=True, max_shard_bytes=4000)  # several shards and an index
    model.config.save_pretrained(str(out))
    return model


def test_a_flat_range_reads_the_rows_that_hold_it(tmp_path):
    torch.manual_seed(0)
    tensors = {"m": torch.randn(7, 5), "cube": torch.randn(3, 4, 2), "s": torch.tensor(2.5)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    state = SafetensorsState(tmp_path / "w.safetensors", dtype=torch.bfloat16)
    for key, start, end in [("m", 0, 35), ("m", 3, 4), ("m", 4, 13), ("m", 30, 35), ("cube", 5, 19), ("s", 0, 1)]:
        want = tensors[key].reshape(-1)[start:end].to(torch.bfloat16)
        assert torch.equal(state.flat_range(key, start, end), want), (key, start, end)
    assert state.shape("cube") == (3, 4, 2)


def test_a_sharded_directory_is_one_state(tmp_path):
    model = _qwen(tmp_path / "llm", tied=False)
    state = SafetensorsState(tmp_path / "llm")
    assert len({state._files[k] for k in state}) > 2 and set(state) == set(model.state_dict())
    assert torch.equal(state["lm_head.weight"], model.lm_head.weight)
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        SafetensorsState(tmp_path)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_a_saved_llm_read_by_name_gives_the_same_logits(tmp_path, tied):
    model = _qwen(tmp_path / "llm", tied)
    again = read_llm(tmp_path / "llm", dtype=torch.float32, attn_implementation="sdpa").eval()
    assert (again.lm_head.weight is again.model.embed_tokens.weight) is tied
    ids = torch.tensor([[3, 9, 4, 7, 1]])
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, model(input_ids=ids).logits)


def test_a_checkpoint_with_other_names_is_left_to_transformers(tmp_path):
    model = _qwen(tmp_path / "llm", tied=False)
    renamed = {f"transformer.{k}": v for k, v in model.state_dict().items()}
    (tmp_path / "other").mkdir()
    save_file(renamed, str(tmp_path / "other" / "model.safetensors"))
    model.config.save_pretrained(str(tmp_path / "other"))
    assert read_llm(tmp_path / "other", dtype=torch.float32, attn_implementation="eager") is None
    assert read_llm(tmp_path / "nothing", dtype=torch.float32, attn_implementation="eager") is None


def test_load_state_is_strict_and_names_a_mismatch():
    lin = torch.nn.Linear(4, 3)
    with pytest.raises(RuntimeError, match="missing keys"):
        load_state(lin, {"weight": torch.zeros(3, 4)})
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        load_state(lin, {"weight": torch.zeros(4, 4), "bias": torch.zeros(3)})


def test_two_zero3_ranks_read_only_their_own_ranges(tmp_path):
    src = tmp_path / "llm"
    model = _qwen(src, tied=True)
    out = tmp_path / "ranks.json"
    run_workers("partitions_worker.py", str(src), str(out))
    ranks = json.loads(out.read_text())
    n = len(list(model.parameters()))
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["own_ranges"] and r["n"] == n and r["head"] and r["logits"] and r["tied"] for r in ranks), ranks
