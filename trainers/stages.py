"""What each stage builds and trains: the recipes (baseline, eagle pre-alignment), freezing with a
log line per module, separate lr groups, and the data each stage reads."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from trainers.engine import ParamGroup
from trainers.spec import LLMSpec, StageSpec, TrialSpec

logger = logging.getLogger(__name__)

PRETRAIN_TEMPLATE = "plain"  # projector pre-training and pre-alignment read captions


@dataclass(frozen=True)
class TrialData:
    pretrain: Path
    sft: Path
    heldout: Path
    image_folder: Path | None
    image_size: int
    identity: dict[str, Any]  # what the stage-1 cache key records about the data


def resolve_experts(spec: TrialSpec) -> list:
    """ExpertConfigs of the trial: presets + per-trial overrides (UnknownNameError on a bad preset)."""
    return [resolve_expert(e) for e in spec.experts]


def resolve_expert(entry):
    """One trial expert entry -> its validated ExpertConfig (preset + the entry's overrides)."""
    import experts

    base = (experts.ExpertConfig.declared({"name": entry.preset, **entry.define}) if entry.define
            else experts.get_preset(entry.preset))
    return base.with_overrides(
        source=entry.source, pretrained=entry.pretrained, input_size=entry.input_size, grid=entry.grid,
        highres=entry.highres, max_tiles=entry.max_tiles, freeze=entry.freeze, grad_checkpointing=entry.grad_checkpointing)


def resolve_data(spec: TrialSpec, cache_dir: str | Path) -> TrialData:
    """File paths of the datasets (synthetic ones are generated here on first use)."""
    from trainers.cache import file_identity

    d = spec.data
    if d.synthetic is not None:
        from trainers.data.synthetic import ensure_synthetic, spec_key

        paths = ensure_synthetic(d.synthetic, cache_dir)
        ident = {"synthetic": spec_key(d.synthetic)}
        return TrialData(paths["pretrain"], paths["sft"], paths["heldout"], paths["image_folder"],
                         d.synthetic.image_size, ident)
    heldout = Path(d.heldout or d.sft)  # no held-out file: the loss over the SFT file (said in the log)
    if d.heldout is None:
        logger.warning("data.heldout not set: the held-out loss is measured on the SFT data")
    size = max(c.input_size for c in resolve_experts(spec))
    return TrialData(Path(d.pretrain), Path(d.sft), heldout, Path(d.image_folder) if d.image_folder else None,
                     size, {"pretrain": file_identity(d.pretrain)})


def build_trial_tokenizer(llm: LLMSpec, data: TrialData, out_dir: Path):
    from trainers.data.llava import read_texts
    from trainers.llm import build_tokenizer

    texts = None
    if llm.preset is not None:
        texts = read_texts(data.pretrain) + read_texts(data.sft) + read_texts(data.heldout)
    return build_tokenizer(llm, texts, out_dir)


def make_dataset(path: Path, data: TrialData, tokenizer, template: str, max_length: int, spec: TrialSpec):
    from trainers.data.llava import LlavaDataset

    return LlavaDataset(path, data.image_folder, data.image_size, tokenizer, template, max_length,
                        on_bad_image=spec.data.on_bad_image)


def make_collate(tokenizer):
    from trainers.data.collate import make_collate as _mk

    return _mk(tokenizer.pad_token_id)


# ----- freezing and lr groups -----
def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def set_trainable(model, stage: str, vision: list[bool], projector: bool, llm: bool) -> None:
    """Freeze/unfreeze per module and log each with its parameter count."""
    for i, (expert, flag) in enumerate(zip(model.mixture.experts, vision)):
        expert.set_trainable(flag)  # not requires_grad_: a frozen expert also runs without autograd
        logger.info("[%s] vision expert %d %s: %s (%.2fM params)", stage, i, expert.config.name,
                    "trainable" if flag else "frozen", _count(expert) / 1e6)
    model.mixture.fusion.requires_grad_(projector)
    model.projector.requires_grad_(projector)
    model.llm.requires_grad_(llm)
    logger.info("[%s] fusion %s: %s (%.3fM params)", stage, model.fusion_name,
                "trainable" if projector else "frozen", _count(model.mixture.fusion) / 1e6)
    logger.info("[%s] projector %s: %s (%.3fM params)", stage, model.projector_type,
                "trainable" if projector else "frozen", _count(model.projector) / 1e6)
    logger.info("[%s] llm: %s (%.2fM params)", stage, "trainable" if llm else "frozen", _count(model.llm) / 1e6)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("[%s] trainable %.3fM of %.3fM params", stage, n_train / 1e6, _count(model) / 1e6)


def param_groups(model, hp: StageSpec) -> list[ParamGroup]:
    """llm / projector (+fusion) / vision groups with their own lr; frozen groups are left out."""
    def trainable(mod: nn.Module) -> list[nn.Parameter]:
        return [p for p in mod.parameters() if p.requires_grad]

    groups = [
        ParamGroup("llm", trainable(model.llm), hp.lr_llm or hp.lr),
        ParamGroup("projector", trainable(model.projector) + trainable(model.mixture.fusion), hp.lr_projector or hp.lr),
        ParamGroup("vision", [p for e in model.mixture.experts for p in trainable(e)], hp.lr_vision or hp.lr),
    ]
    return [g for g in groups if g.params]


def freeze_for_stage(model, stage: str, spec: TrialSpec) -> None:
    """The recipe's trainable set. sft follows the trial's freeze settings (expert.freeze, llm.freeze)."""
    n = len(model.mixture.experts)
    if stage in ("pretrain", "align_projector"):
        set_trainable(model, stage, [False] * n, projector=True, llm=False)
    elif stage == "align_expert":
        set_trainable(model, stage, [True] * n, projector=True, llm=False)
    elif stage == "sft":
        vision = [not e.config.freeze for e in model.mixture.experts]
        set_trainable(model, stage, vision, projector=True, llm=not spec.llm.freeze)
    else:
        raise KeyError(f"unknown stage {stage!r}; known: pretrain, align_expert, align_projector, sft")


# ----- models per stage -----
def build_model(expert_cfgs_or_modules: list, fusion_name: str, fusion_options: dict, projector: str,
                llm_spec: LLMSpec, tokenizer, seed: int):
    """A fresh EagleModel (experts given as configs are built, given as modules are used as they are)."""
    import torch

    import experts
    from trainers.llm import build_llm
    from trainers.model import EagleModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mods = [e if isinstance(e, nn.Module) else experts.build_expert(e) for e in expert_cfgs_or_modules]
        mixture = experts.VisionMixture(mods, fusion_name, fusion_options)
        llm = build_llm(llm_spec, tokenizer, seed)
        torch.manual_seed(seed + 1)
        return EagleModel(mixture, projector, llm, tokenizer, fusion_name, fusion_options)


def stage1_key_for(cfg, spec: TrialSpec, data: TrialData) -> str:
    from trainers.cache import stage1_key

    llm = spec.train.align_llm or spec.llm
    hp = spec.train.stages["align_expert"]
    # freeze is an SFT setting and checkpointing does not change results: neither splits the cache
    expert = cfg.model_dump(mode="json", exclude={"freeze", "grad_checkpointing"})
    return stage1_key(expert, llm.model_dump(mode="json", exclude={"freeze", "grad_checkpointing"}), data.identity,
                      hp.model_dump(mode="json"), spec.seed, PRETRAIN_TEMPLATE, spec.projector.type)
