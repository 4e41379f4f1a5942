"""Saves that fit (trainers/modeling/saving.py): the LLM written in shards as they fill, with an
index transformers reads; tied embeddings saved once, as transformers saves them; a saved model
read back one tensor at a time gives the same logits. Under ZeRO-3 the same code gathers one
submodule at a time (the ZeRO-3 trial tests save and resume through it)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from experts.loading import SafetensorsState
from tests.trainers.helpers_eagle import tiny_model
from trainers.modeling.eagle import EagleModel
from trainers.modeling.saving import INDEX, save_llm, state_chunks


def _llm(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_the_llm_is_written_in_shards_that_transformers_reads_back(tmp_path, tied):
    llm = _llm(tied)
    shard = 40_000  # bytes: several shards for this model
    save_llm(llm, tmp_path / "llm", is_main=True, max_shard_bytes=shard)
    index = json.loads((tmp_path / "llm" / INDEX).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((tmp_path / "llm" / f).is_file() for f in files)
    assert ("lm_head.weight" in index["weight_map"]) is not tied  # a tied head is the embedding, saved once
    want = {k: v for k, v in llm.state_dict().items() if not (tied and k == "lm_head.weight")}
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in want.values())
    for f in files[:-1]:  # every shard but the last is full
        with safe_open(str(tmp_path / "llm" / f), framework="pt") as h:
            assert sum(h.get_tensor(k).nbytes for k in h.keys()) >= shard
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "llm")).eval()
    ids = torch.randint(0, 96, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, llm(ids).logits, rtol=0, atol=0)
    assert (again.lm_head.weight is again.model.embed_tokens.weight) is tied


def test_one_shard_is_model_safetensors_without_an_index(tmp_path):
    save_llm(_llm(True), tmp_path / "llm", is_main=True)
    assert (tmp_path / "llm" / "model.safetensors").is_file() and not (tmp_path / "llm" / INDEX).exists()


def test_ranks_other_than_the_first_copy_and_write_nothing(tmp_path):
    llm = _llm(False)
    assert all(chunk == {} for chunk in state_chunks(llm, is_main=False, max_bytes=1000))
    save_llm(llm, tmp_path / "llm", is_main=False)
    assert not (tmp_path / "llm").exists()
    tiny = tiny_model(tmp_path)
    tiny.save_pretrained(tmp_path / "m", is_main=False)  # not partitioned: only the main rank writes
    assert not (tmp_path / "m").exists()


def test_a_saved_model_read_one_tensor_at_a_time_gives_the_same_logits(tmp_path):
    model = tiny_model(tmp_path).eval()
    with torch.no_grad():
        model.projector[0].weight.add_(0.1)
    model.save_pretrained(tmp_path / "m")
    lazy = SafetensorsState(tmp_path / "m" / "projector.safetensors", dtype=torch.bfloat16)
    assert set(lazy) == set(model.projector.state_dict()) and lazy["0.weight"].dtype == torch.bfloat16
    with pytest.raises(KeyError):
        lazy["nope"]
    again = EagleModel.from_pretrained(tmp_path / "m").eval()
    ids = torch.tensor([[1, *[model.image_token_id] * model.num_image_tokens, 5, 6]])
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(ids, torch.ones_like(ids), images).logits,
                                   model(ids, torch.ones_like(ids), images).logits, rtol=0, atol=0)
