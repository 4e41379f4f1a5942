"""EagleModel: image splicing and label masking, generate, save/reload with identical logits."""
from __future__ import annotations

import pytest
import torch

from tests.trainers.helpers_eagle import tiny_model
from trainers.modeling.eagle import IGNORE_INDEX, IMAGE_TOKEN, EagleModel
from trainers.modeling.projector import build_projector


def _batch(model, texts, labels_from: int = 3, pack: bool = False):
    """input_ids / attention_mask / labels as the collate gives them (image token expanded)."""
    from trainers.data.collate import collate

    tok = model.tokenizer
    items = []
    for t in texts:
        ids = torch.tensor(tok(t, add_special_tokens=False)["input_ids"])
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[labels_from:] = ids[labels_from:]
        items.append({"input_ids": ids, "labels": labels, "image": torch.zeros(3, 8, 8, dtype=torch.uint8),
                      "has_image": IMAGE_TOKEN in t})
    b = collate(items, tok.pad_token_id, model.image_token_id, model.num_image_tokens, pack=pack)
    return b["input_ids"], b["attention_mask"], b["labels"]


def test_splice_fills_the_image_slots_in_order(tmp_path):
    model = tiny_model(tmp_path)
    ids, mask, labels = _batch(model, [f"{IMAGE_TOKEN} red circle", f"what colour {IMAGE_TOKEN} is the shape ?"], 1)
    t = model.num_image_tokens
    assert t == 16  # two experts on a 4x4 grid, channel concatenation keeps 16 tokens
    assert (ids == model.image_token_id).sum(1).tolist() == [t, t]
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    embeds = model.splice(ids, images)
    text = model.llm.get_input_embeddings()(ids)
    img = model.encode_images(images)
    torch.testing.assert_close(embeds[0, :t], img[0])
    torch.testing.assert_close(embeds[1, 2:2 + t], img[1])  # image at position 2 of sample 1
    torch.testing.assert_close(embeds[1, :2], text[1, :2])
    torch.testing.assert_close(embeds[1, 2 + t:], text[1, 2 + t:])
    assert (labels[1, 2:2 + t] == IGNORE_INDEX).all()
    # uint8 images are the float [0, 1] images, converted on the device
    torch.testing.assert_close(model.encode_images(images.float() / 255), img)


def test_unexpanded_or_doubled_image_tokens_are_errors(tmp_path):
    from trainers.data.errors import DataError

    model = tiny_model(tmp_path)
    with pytest.raises(DataError, match="at most one"):
        _batch(model, [f"{IMAGE_TOKEN} red {IMAGE_TOKEN}"])
    tok = model.tokenizer
    ids = torch.tensor([tok(f"{IMAGE_TOKEN} red", add_special_tokens=False)["input_ids"]])
    with pytest.raises(ValueError, match="expand each"):
        model(ids, torch.ones_like(ids), torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_gives_the_padded_loss_and_gradients(tmp_path, attn):
    from tests.trainers.helpers_eagle import tiny_tokenizer
    from experts import get_preset
    from trainers.spec import LLMSpec
    from trainers.stages.recipes import build_model

    model = build_model([get_preset("tiny-clip")], "channel_concat", {}, "mlp2x_gelu",
                        llm_spec=LLMSpec(preset="tiny-llama", attn_implementation=attn), tokenizer=tiny_tokenizer(tmp_path), seed=0)
    assert model.llm.config._attn_implementation == attn
    texts = [f"{IMAGE_TOKEN} a red circle on a white background", "how many circles are there ? three",
             f"{IMAGE_TOKEN} blue square"]
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    results = []
    for pack in (False, True):
        from trainers.data.collate import collate

        items = []
        for t in texts:
            ids = torch.tensor(model.tokenizer(t, add_special_tokens=False)["input_ids"])
            items.append({"input_ids": ids, "labels": ids.clone(), "has_image": IMAGE_TOKEN in t,
                          "image": images[0 if t.endswith("background") else 1]})
        batch = collate(items, model.tokenizer.pad_token_id, model.image_token_id, model.num_image_tokens, pack)
        assert batch["input_ids"].shape[0] == (1 if pack else 3)
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), model.projector[0].weight.grad.clone(),
                        model.llm.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_forward_loss_and_gradients_reach_projector(tmp_path):
    model = tiny_model(tmp_path)
    ids, mask, labels = _batch(model, [f"{IMAGE_TOKEN} a red circle", f"{IMAGE_TOKEN} blue square"], 1)
    out = model(ids, mask, torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8), labels)
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


def test_attention_implementation_survives_save_and_reload(tmp_path):
    from experts import get_preset
    from tests.trainers.helpers_eagle import tiny_tokenizer
    from trainers.spec import LLMSpec
    from trainers.stages.recipes import build_model

    model = build_model([get_preset("tiny-clip")], "channel_concat", {}, "linear",
                        llm_spec=LLMSpec(preset="tiny-llama", attn_implementation="eager"), tokenizer=tiny_tokenizer(tmp_path), seed=0)
    model.save_pretrained(tmp_path / "m")
    assert EagleModel.from_pretrained(tmp_path / "m").llm.config._attn_implementation == "eager"


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
    from trainers.modeling.llm import build_llm
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
