"""Weights come in the training dtype: bf16 trials build and load every part in bf16 (the LLM read
straight into it), DDP keeps only what trains as fp32 master weights, and norms, biases and
embeddings take no weight decay."""
from __future__ import annotations

import torch

from tests.trainers.helpers_eagle import tiny_tokenizer
from trainers.spec import LLMSpec, StageSpec, TrialSpec

BF16 = torch.bfloat16


def _model(tmp_path, dtype):
    from experts import get_preset
    from trainers.stages.recipes import build_model

    return build_model([get_preset("tiny-clip"), get_preset("tiny-convnext")], "channel_concat", {}, "mlp2x_gelu",
                       llm_spec=LLMSpec(preset="tiny-llama"), tokenizer=tiny_tokenizer(tmp_path), seed=0, dtype=dtype)


def _dtypes(module) -> set:
    return {p.dtype for p in module.parameters()}


def test_build_and_load_in_bf16(tmp_path):
    from trainers.modeling.eagle import EagleModel

    model = _model(tmp_path, BF16)
    assert _dtypes(model) == {BF16}
    model.save_pretrained(tmp_path / "saved")
    back = EagleModel.from_pretrained(tmp_path / "saved", dtype=BF16)
    assert _dtypes(back) == {BF16} and back.llm.dtype == BF16
    assert _dtypes(EagleModel.from_pretrained(tmp_path / "saved")) == {torch.float32}  # fp32 trials: fp32
    for (n, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), n


def test_a_source_llm_is_read_straight_into_bf16(tmp_path, monkeypatch):
    """from_pretrained is asked for bf16 (no fp32 copy first): the checkpoint on disk is fp32."""
    import transformers

    from trainers.modeling.llm import build_llm

    tok = tiny_tokenizer(tmp_path)
    src = build_llm(LLMSpec(preset="tiny-llama"), tok)
    src.save_pretrained(tmp_path / "llm")
    asked = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        asked.append(kwargs.get("dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    llm = build_llm(LLMSpec(source=str(tmp_path / "llm")), tok, dtype=BF16)
    assert asked == [BF16] and _dtypes(llm) == {BF16}
    flag = "is_activation_checkpointing" if hasattr(llm, "is_activation_checkpointing") else "is_gradient_checkpointing"
    assert getattr(llm, flag)  # on by default for a source (full-size) LLM


def test_ddp_keeps_trainable_weights_fp32_and_frozen_ones_bf16(tmp_path):
    from trainers.training.distributed import DistEnv
    from trainers.training.loop import StageJob
    from trainers.training.engines import make_engine
    from trainers.training.metrics import MetricsWriter
    from trainers.stages.recipes import freeze_for_stage, param_groups

    model = _model(tmp_path, BF16)
    spec = TrialSpec(experts=[{"preset": "tiny-clip"}, {"preset": "tiny-convnext"}], llm=LLMSpec(preset="tiny-llama"),
                     data={"synthetic": {}})
    freeze_for_stage(model, "align_projector", spec)
    hp = StageSpec()
    engine = make_engine("ddp", DistEnv(), MetricsWriter(tmp_path / "m.jsonl"), seed=0, checkpoint_every=10,
                         bf16=True)
    engine.setup(StageJob("x", "align_projector", model, param_groups(model, hp), [], None, hp), 1, 10)
    assert _dtypes(model.projector) == {torch.float32}
    assert _dtypes(model.llm) == {BF16} and _dtypes(model.mixture.experts) == {BF16}
    words = model.tokenizer("a red circle", add_special_tokens=False)["input_ids"]
    from trainers.data.collate import expand_image_tokens

    flat = torch.tensor([model.image_token_id, *words])
    ids, labels = (t[None] for t in expand_image_tokens(flat, flat.clone(), model.image_token_id,
                                                          model.num_image_tokens))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "images": torch.rand(1, 3, 64, 64)}
    loss = engine.backward(model, batch, True, 1)
    assert torch.isfinite(loss) and model.projector[0].weight.grad.dtype == torch.float32


def test_weight_decay_skips_norms_biases_and_embeddings(tmp_path):
    from trainers.training.loop import StageJob, optimizer_groups
    from trainers.stages.recipes import param_groups

    model = _model(tmp_path, torch.float32)
    groups = param_groups(model, StageSpec(weight_decay=0.1))
    llm = next(g for g in groups if g.name == "llm")
    skip = {id(p) for p in llm.no_decay}
    assert id(model.llm.get_input_embeddings().weight) in skip
    assert id(model.llm.model.norm.weight) in skip and id(model.llm.model.layers[0].input_layernorm.weight) in skip
    assert id(model.llm.model.layers[0].mlp.up_proj.weight) not in skip
    proj = next(g for g in groups if g.name == "projector")
    assert id(model.projector[0].bias) in {id(p) for p in proj.no_decay}
    opt = optimizer_groups(StageJob("x", "sft", model, groups, [], None, StageSpec()), 0.1)
    decay = {g["name"]: g["weight_decay"] for g in opt}
    assert decay["llm"] == 0.1 and decay["llm/no_decay"] == 0.0 and decay["projector/no_decay"] == 0.0
    assert sum(len(g["params"]) for g in opt) == sum(len(g.params) for g in groups)
