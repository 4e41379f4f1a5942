"""SVA at several LLM layers (fusion option llm_layers) inside EagleModel: zero-init equals the
single aggregation, gradients, padding == packing, checkpointing, freezing, save/load, training,
FLOP counting and the spec check of a bad layer."""
from __future__ import annotations

import pytest
import torch

from tests.trainers.helpers_eagle import tiny_tokenizer
from trainers.data.collate import collate
from trainers.modeling.eagle import IMAGE_TOKEN, EagleModel

TEXTS = [f"{IMAGE_TOKEN} a red circle on a white background", "how many circles are there ? three",
         f"what colour {IMAGE_TOKEN} is the shape ? blue square"]


def _model(tmp_path, layers=(0, 1), checkpointing=False, seed=0):
    from experts import get_preset
    from trainers.spec import LLMSpec
    from trainers.stages.recipes import build_model

    opts = {"query_grid": 2, "heads": 2, **({"llm_layers": list(layers)} if layers else {})}
    return build_model([get_preset("tiny-clip"), get_preset("tiny-convnext")], "sva", opts, "mlp2x_gelu",
                       llm_spec=LLMSpec(preset="tiny-llama", grad_checkpointing=checkpointing), tokenizer=tiny_tokenizer(tmp_path), seed=seed)


def _batch(model, pack=False):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=gen)
    items, k = [], 0
    for t in TEXTS:
        ids = torch.tensor(model.tokenizer(t, add_special_tokens=False)["input_ids"])
        has = IMAGE_TOKEN in t
        items.append({"input_ids": ids, "labels": ids.clone(), "has_image": has, "image": images[k]})
        k += has
    b = collate(items, model.tokenizer.pad_token_id, model.image_token_id, model.num_image_tokens, pack)
    return {k: v for k, v in b.items() if k not in ("num_tokens", "num_targets")}


def _wake(model, seed=1):
    """Non-zero output projections, as after some training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in model.llm_aggregators.blocks.values():
            blk.o.weight.copy_(0.3 * torch.randn(blk.o.weight.shape, generator=gen))


def _grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    agg = model.llm_aggregators.blocks
    return [loss.detach(), agg["0"].q.weight.grad.clone(), agg["1"].kv[1].weight.grad.clone(),
            model.projector[0].weight.grad.clone(), model.llm.model.layers[0].mlp.up_proj.weight.grad.clone()]


def test_zero_init_is_the_single_aggregation_and_gradients_reach_the_layers(tmp_path):
    model = _model(tmp_path)
    assert model.llm_aggregators.layers == (0, 1) and model.num_image_tokens == 4
    batch = _batch(model)
    single = model.llm(inputs_embeds=model.splice(batch["input_ids"], batch["images"]),
                       attention_mask=batch["attention_mask"], labels=batch["labels"]).logits
    out = model(**batch)
    torch.testing.assert_close(out.logits, single)
    out.loss.backward()
    for blk in model.llm_aggregators.blocks.values():
        assert blk.o.weight.grad.abs().sum() > 0  # the zero projection is what learns first
    _wake(model)
    out = model(**batch)
    assert (out.logits - single).abs().amax() > 1e-3  # now the layers re-aggregate
    text_only = torch.tensor([[3, 4, 5]])  # no image in the batch: the hooks leave the LLM alone
    torch.testing.assert_close(model(text_only, torch.ones_like(text_only)).logits,
                               model.llm(input_ids=text_only).logits)
    g = _grads(model, batch)
    assert all(t.abs().sum() > 0 for t in g[1:])


def test_packed_padded_and_checkpointed_agree(tmp_path):
    runs = []
    for ckpt, pack in ((False, False), (False, True), (True, False)):
        model = _model(tmp_path, checkpointing=ckpt)
        model.train()
        _wake(model)
        runs.append(_grads(model, _batch(model, pack)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_stage_freezing_and_lr_groups_follow_the_projector(tmp_path):
    from trainers.spec import StageSpec
    from trainers.stages.recipes import param_groups, set_trainable

    model = _model(tmp_path)
    agg = list(model.llm_aggregators.parameters())
    set_trainable(model, "x", [False, False], projector=False, llm=False)
    assert not any(p.requires_grad for p in agg)
    set_trainable(model, "pretrain", [False, False], projector=True, llm=False)
    assert all(p.requires_grad for p in agg)
    groups = {g.name: {id(p) for p in g.params} for g in param_groups(model, StageSpec())}
    assert {id(p) for p in agg} <= groups["projector"]


def test_save_and_load_round_trip_and_generate(tmp_path):
    model = _model(tmp_path).eval()
    _wake(model)
    batch = _batch(model)
    model.save_pretrained(tmp_path / "m")
    again = EagleModel.from_pretrained(tmp_path / "m").eval()
    assert again.llm_aggregators.layers == (0, 1)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, model(**batch).logits)
    prompts = [f"{IMAGE_TOKEN} a red", f"{IMAGE_TOKEN} what colour is the shape ?"]
    assert again.generate(batch["images"], prompts, 3) == model.generate(batch["images"], prompts, 3)


def _trainer(model):
    from trainers.stages.recipes import set_trainable

    model.train()
    set_trainable(model, "sft", [False, False], projector=True, llm=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def test_a_short_training_lowers_the_loss_and_resumes_from_its_checkpoint(tmp_path):
    from trainers.training.checkpoint import load_checkpoint, save_checkpoint

    model = _model(tmp_path)
    opt, sched = _trainer(model)
    batch = _batch(model)
    q0 = model.llm_aggregators.blocks["1"].q.weight.detach().clone()
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert (model.llm_aggregators.blocks["1"].q.weight - q0).abs().amax() > 1e-3  # the layers learnt too
    save_checkpoint(tmp_path / "ckpt", 10, model, optimizer=opt, scheduler=sched, rank=0)
    again = _model(tmp_path)  # the initial weights; the trained ones come from the checkpoint
    opt2, sched2 = _trainer(again)
    model.eval(), again.eval()
    with torch.no_grad():
        assert (again(**batch).logits - model(**batch).logits).abs().amax() > 1e-2
    load_checkpoint(tmp_path / "ckpt", again, opt2, sched2)
    torch.testing.assert_close(again.llm_aggregators.blocks["1"].q.weight, model.llm_aggregators.blocks["1"].q.weight)
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, model(**batch).logits)


def test_bad_layer_index_is_one_line_at_spec_validation(tmp_path):
    import yaml

    from tests.trainers.helpers_eagle import TINY_YAML
    from trainers.validate import validate_spec
    from trainers.spec import SpecError, parse_trial_spec

    d = yaml.safe_load(TINY_YAML.read_text())
    d["fusion"] = {"name": "sva", "options": {"llm_layers": [0, 2]}}  # tiny-llama has layers 0 and 1
    with pytest.raises(SpecError) as err:
        validate_spec(parse_trial_spec(d, "t.yaml"), "t.yaml", 1)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("t.yaml: fusion.options:") and "layer 2 is out of range" in msg
    d["fusion"]["options"] = {"llm_layers": [1, 1]}
    with pytest.raises(SpecError, match="distinct"):
        validate_spec(parse_trial_spec(d, "t.yaml"), "t.yaml", 1)
    d["fusion"]["options"] = {"llm_layers": [1]}
    validate_spec(parse_trial_spec(d, "t.yaml"), "t.yaml", 1)


def test_flop_profile_counts_the_layer_aggregators():
    from trainers.estimate.arch_profiles import ArchProfiler

    prof = ArchProfiler("fp32")
    one = prof.head([32, 64], 16, [False, False], fusion="sva", options={"query_grid": 2}, projector="mlp2x_gelu", hidden=64)
    two = prof.head([32, 64], 16, [False, False], fusion="sva", options={"query_grid": 2, "llm_layers": [0, 1]}, projector="mlp2x_gelu", hidden=64)
    # kv norms, kv projections, key positions (2 experts x 2x2 window), q norm, q and o
    per_layer = 2 * (32 + 64) + (32 + 64) * 128 + 2 * 128 + 2 * 4 * 64 + 2 * 64 + 2 * (64 * 64 + 64)
    assert two.trainable - one.trainable == 2 * per_layer
    assert two.flops > one.flops and two.saved.total > one.saved.total
