"""EagleModel: image splicing and label masking, generate, save/reload with identical logits."""
from __future__ import annotations

import pytest
import torch

from tests.trainers.helpers_eagle import tiny_model
from trainers.model import IGNORE_INDEX, IMAGE_TOKEN, EagleModel
from trainers.projector import build_projector


def _batch(model, texts, labels_from: int = 3):
    tok = model.tokenizer
    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, labels_from: len(s)] = torch.tensor(s[labels_from:])
    return ids, mask, labels


def test_splice_places_image_tokens_and_masks_their_labels(tmp_path):
    model = tiny_model(tmp_path)
    ids, mask, labels = _batch(model, [f"{IMAGE_TOKEN} red circle", f"what colour {IMAGE_TOKEN} is the shape ?"], 1)
    images = torch.rand(2, 3, 64, 64)
    out = model.splice(ids, mask, images, labels)
    t = model.num_image_tokens
    assert t == 16  # two experts on a 4x4 grid, channel concatenation keeps 16 tokens
    lengths = mask.sum(1) - 1 + t
    assert out["attention_mask"].sum(1).tolist() == lengths.tolist()
    assert out["inputs_embeds"].shape == (2, int(lengths.max()), 64)
    # sample 1: image at position 2 -> positions 2..2+t are image embeddings, labels ignored there
    img = model.encode_images(images)
    torch.testing.assert_close(out["inputs_embeds"][1, 2:2 + t], img[1])
    assert (out["labels"][1, 2:2 + t] == IGNORE_INDEX).all()
    # text after the image keeps its labels, shifted by t - 1
    assert out["labels"][1, 2 + t:int(lengths[1])].tolist() == labels[1, 3:int(mask[1].sum())].tolist()
    # sample 0: image at 0, its labels all ignored; padding is ignored too
    assert (out["labels"][0, :t] == IGNORE_INDEX).all()
    assert (out["labels"][0, int(lengths[0]):] == IGNORE_INDEX).all()


def test_two_image_tokens_in_one_sequence_is_an_error(tmp_path):
    model = tiny_model(tmp_path)
    ids, mask, labels = _batch(model, [f"{IMAGE_TOKEN} red {IMAGE_TOKEN}"])
    with pytest.raises(ValueError, match="at most one"):
        model.splice(ids, mask, torch.rand(1, 3, 64, 64), labels)


def test_forward_loss_and_gradients_reach_projector(tmp_path):
    model = tiny_model(tmp_path)
    ids, mask, labels = _batch(model, [f"{IMAGE_TOKEN} a red circle", f"{IMAGE_TOKEN} blue square"], 1)
    out = model(ids, mask, torch.rand(2, 3, 64, 64), labels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert 3.0 < float(out.loss.detach()) < 7.0  # ~ln(vocab) at random init
    out.loss.backward()
    assert model.projector[0].weight.grad.abs().sum() > 0


def test_save_and_reload_give_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = tiny_model(tmp_path).eval()
    with torch.no_grad():  # make the projector non-trivial so a missed reload would show
        model.projector[0].weight.add_(0.1)
    ids, mask, _ = _batch(model, [f"{IMAGE_TOKEN} what colour is the shape ?"])
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(ids, mask, images).logits
    model.save_pretrained(tmp_path / "saved")
    for f in ("eagle.json", "projector.safetensors", "llm/config.json", "llm/model.safetensors",
              "tokenizer/tokenizer.json", "experts/0/expert.json", "experts/1/model.safetensors"):
        assert (tmp_path / "saved" / f).is_file(), f
    again = EagleModel.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        after = again(ids, mask, images).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_from_pretrained_on_a_non_model_dir_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="eagle.json"):
        EagleModel.from_pretrained(tmp_path)


def test_generate_batched_left_padding_matches_one_by_one(tmp_path):
    model = tiny_model(tmp_path).eval()
    images = torch.rand(2, 3, 64, 64)
    prompts = [f"{IMAGE_TOKEN} what colour is the shape ?", f"{IMAGE_TOKEN} red"]
    batched = model.generate(images, prompts, max_new_tokens=5)
    single = [model.generate(images[i:i + 1], [p], max_new_tokens=5)[0] for i, p in enumerate(prompts)]
    assert len(batched) == 2 and all(isinstance(s, str) for s in batched)
    assert batched == single
    assert all(0 < len(s.split()) <= 5 for s in batched)


def test_projector_registry_lists_known_names():
    assert build_projector("linear", 8, 4)(torch.zeros(2, 8)).shape == (2, 4)
    with pytest.raises(KeyError, match="known: linear, mlp2x_gelu"):
        build_projector("qformer", 8, 4)


def test_llm_gradient_checkpointing_gives_the_same_loss_and_gradients(tmp_path):
    from tests.trainers.helpers_eagle import tiny_tokenizer
    from trainers.llm import build_llm
    from trainers.spec import LLMSpec

    tok = tiny_tokenizer(tmp_path)
    plain = build_llm(LLMSpec(preset="tiny-llama"), tok, seed=3)
    ckpt = build_llm(LLMSpec(preset="tiny-llama", grad_checkpointing=True), tok, seed=3)
    flag = "is_activation_checkpointing" if hasattr(ckpt, "is_activation_checkpointing") else "is_gradient_checkpointing"
    assert getattr(ckpt, flag) and not getattr(plain, flag)
    ids = torch.tensor([tok("a red circle on a white background", add_special_tokens=False)["input_ids"]])
    grads = []
    for m in (plain, ckpt):
        m.train()
        loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        grads.append((loss.detach(), m.model.layers[0].mlp.up_proj.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
