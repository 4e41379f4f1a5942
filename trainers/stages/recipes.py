"""What each stage builds and trains: the recipes (baseline, eagle pre-alignment), freezing with a
log line per module, separate lr groups, and the data each stage reads."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from trainers.training.loop import ParamGroup
from trainers.expert_entries import resolve_expert
from trainers.spec import LLMSpec, StageSpec, TrialSpec, seed_for

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


def resolve_experts(spec: TrialSpec, cache_dir: str | Path | None = None) -> list:
    """ExpertConfigs of the trial: presets + per-trial overrides (UnknownNameError on a bad preset).
    With `cache_dir`, an entry with `skill` points at its skilled weights (trained there if missing);
    without, it keeps the preset's architecture and random init (enough for checks and estimates)."""
    cfgs = [resolve_expert(e) for e in spec.experts]
    skilled = [i for i, e in enumerate(spec.experts) if e.skill]
    if cache_dir is not None and skilled:
        from trainers.skills.train import SkillCache

        dirs = SkillCache(cache_dir).ensure([cfgs[i] for i in skilled], spec.skill_seed,
                                            skills=[spec.experts[i].skill for i in skilled])
        for i, d in zip(skilled, dirs):
            cfgs[i] = cfgs[i].with_overrides(source=str(d.resolve()), pretrained=True)  # one key across links
    return cfgs


def resolve_data(spec: TrialSpec, cache_dir: str | Path) -> TrialData:
    """File paths of the datasets (synthetic ones are generated here on first use)."""
    from trainers.caches.stage1 import file_identity

    d = spec.data
    share = {"fraction": d.fraction, "fraction_seed": d.fraction_seed} if d.fraction < 1 else {}  # stage-1 cache key
    if d.synthetic is not None:
        from trainers.data.synthetic import ensure_synthetic, spec_key

        paths = ensure_synthetic(d.synthetic, cache_dir)
        ident = {"synthetic": spec_key(d.synthetic), **share}
        return TrialData(paths["pretrain"], paths["sft"], paths["heldout"], paths["image_folder"],
                         data_image_size(spec), ident)
    heldout = Path(d.heldout or d.sft)  # no held-out file: the loss over the SFT file (said in the log)
    if d.heldout is None:
        logger.warning("data.heldout not set: the held-out loss is measured on the SFT data")
    return TrialData(Path(d.pretrain), Path(d.sft), heldout, Path(d.image_folder) if d.image_folder else None,
                     data_image_size(spec), {"pretrain": file_identity(d.pretrain), **share})


def data_image_size(spec: TrialSpec) -> int:
    """The side every image is resized to before the experts, in training and evaluation alike: the
    synthetic image size, else the largest expert input size (no default: an unknown preset fails)."""
    if spec.data.synthetic is not None:
        return spec.data.synthetic.image_size
    return max(c.input_size for c in resolve_experts(spec))


def build_trial_tokenizer(llm: LLMSpec, data: TrialData, out_dir: Path):
    from trainers.data.llava import read_texts
    from trainers.modeling.llm import build_tokenizer

    texts = None
    if llm.preset is not None:
        texts = read_texts(data.pretrain) + read_texts(data.sft) + read_texts(data.heldout)
    return build_tokenizer(llm, texts, out_dir)


def make_dataset(path: Path, data: TrialData, tokenizer, template: str, *, max_length: int, spec: TrialSpec,
                 checks: dict[str, Any], skip_dir: Path | None = None, subset: bool = True):
    """The LLaVA dataset at `path`, its images as verified at launch (`checks`: verify.read_checks);
    skips of every process are recorded under skip_dir/<file stem>/; `subset`: data.fraction applies."""
    from trainers.data.errors import DataError
    from trainers.data.llava import LlavaDataset

    checked = checks.get(str(Path(path).resolve()))
    if checked is None:
        raise DataError(f"{path}: not among the datasets verified at launch ({', '.join(checks) or 'none'})")
    return LlavaDataset(path, data.image_folder, data.image_size, tokenizer=tokenizer, template=template, max_length=max_length,
                        on_bad_image=spec.data.on_bad_image, bad_images=checked["bad"],
                        on_too_long=spec.data.on_too_long,
                        skip_dir=skip_dir / Path(path).stem if skip_dir is not None else None,
                        fraction=spec.data.fraction if subset else 1.0, fraction_seed=spec.data.fraction_seed)


def make_collate(model, stage: str, spec: TrialSpec):
    """The collate for `model` (its image token count and pad id), packed when data.packing says so."""
    from trainers.data.collate import make_collate as _mk

    pack = spec.data.packing == "all" or (spec.data.packing == "sft" and stage == "sft")
    if pack and spec.llm.attn_implementation != "flash_attention_2":
        logger.info("[%s] packed micro batches under %s attention: one block-diagonal mask over the packed row "
                    "(flash_attention_2 runs them varlen, without it)", stage, spec.llm.attn_implementation)
    return _mk(model.tokenizer.pad_token_id, model.image_token_id, model.num_image_tokens, pack)


def loader_options(spec: TrialSpec):
    from trainers.training.loader import LoaderOptions

    return LoaderOptions(num_workers=spec.data.num_workers, group_by_length=spec.data.group_by_length)


# ----- freezing and lr groups -----
def _count(module: nn.Module) -> int:
    return sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())  # ZeRO-3: the whole size


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
    n_train = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    logger.info("[%s] trainable %.3fM of %.3fM params", stage, n_train / 1e6, _count(model) / 1e6)


_NO_DECAY_TYPES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def no_decay_params(module: nn.Module) -> list[nn.Parameter]:
    """Biases, norm weights and embeddings (no weight decay, as the HF Trainer LLaVA used): every
    1-D parameter (biases, norms of any class, e.g. RMSNorm), every embedding table's weight, and
    position/class tables (nn.Parameter named *embed*, *pos*, *token*)."""
    out, seen = [], set()
    for mod in module.modules():
        for name, p in mod.named_parameters(recurse=False):
            lowered = name.lower()
            if id(p) in seen:
                continue
            if (p.ndim <= 1 or isinstance(mod, _NO_DECAY_TYPES) or "norm" in type(mod).__name__.lower()
                    or any(k in lowered for k in ("embed", "pos", "token"))):
                out.append(p)
                seen.add(id(p))
    return out


def param_groups(model, hp: StageSpec) -> list[ParamGroup]:
    """llm / projector (+fusion) / vision groups with their own lr; frozen groups are left out;
    each group says which of its parameters take no weight decay."""
    def trainable(*mods: nn.Module) -> list[nn.Parameter]:
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    def group(name: str, lr: float, *mods: nn.Module) -> ParamGroup:
        params = trainable(*mods)
        ids = {id(p) for p in params}
        skip = [p for m in mods for p in no_decay_params(m) if id(p) in ids]
        return ParamGroup(name, params, lr, skip)

    groups = [
        group("llm", hp.lr_llm or hp.lr, model.llm),
        group("projector", hp.lr_projector or hp.lr, model.projector, model.mixture.fusion),
        group("vision", hp.lr_vision or hp.lr, *model.mixture.experts),
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
                *, llm_spec: LLMSpec, tokenizer, seed: int, dtype=None, engine=None, scratch=None):
    """A fresh EagleModel (experts given as configs are built, given as modules are used as they are),
    every weight in `dtype` (default fp32) before it reaches a device; the LLM is loaded in it.
    With `engine` (trainers.training.loop.Engine) a part with no weights on disk goes through
    engine.first_build (ZeRO-3: rank 0 builds it and writes it under `scratch`, each rank reads its
    range) and a source LLM is read inside engine.build_context: under ZeRO-3 no rank holds the model whole."""
    from contextlib import nullcontext

    import torch

    from trainers.modeling import first_build as FB
    from trainers.modeling.llm import build_llm, check_positions, import_llm_class
    from trainers.modeling.eagle import EagleModel

    place = engine.partition if engine is not None else (lambda m: m)

    def part(name: str):
        return Path(scratch) / name if scratch is not None else None

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        dtype = dtype or torch.float32
        mods = [place(e) if isinstance(e, nn.Module) else FB.expert(engine, part(f"expert{i}"), e, dtype)
                for i, e in enumerate(expert_cfgs_or_modules)]  # one expert at a time
        mixture = FB.mixture(engine, part("fusion"), mods, fusion_name, fusion_options, dtype)
        if llm_spec.source is None:
            llm = FB.preset_llm(engine, part("llm"), llm_spec, tokenizer, seed, dtype)
        else:
            import_llm_class(llm_spec)  # before zero.Init (trainers/modeling/llm.py says why)
            with engine.build_context() if engine is not None else nullcontext():  # read into the partitions
                llm = place(build_llm(llm_spec, tokenizer, seed, dtype=dtype))
        torch.manual_seed(seed + 1)
        model = place(EagleModel(mixture, projector, llm, tokenizer, fusion_name=fusion_name, fusion_options=fusion_options).to(dtype))
    check_positions(llm_spec.max_length, model.num_image_tokens, model.max_length)
    return model


def vocabulary_identity(tokenizer) -> str:
    """sha256 of a tokenizer's vocabulary (a preset LLM's is built from the data's texts)."""
    import hashlib
    import json

    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()


def stage1_key_for(cfg, spec: TrialSpec, data: TrialData, bf16: bool, tokenizer) -> str:
    """The cache key of expert `cfg`'s stage-1 result in this trial: everything that changes it.
    `tokenizer` is the stage-1 LLM's (its vocabulary counts when the LLM is a preset built on it)."""
    from trainers.caches.stage1 import code_version, stage1_key

    llm = spec.train.align_llm or spec.llm
    hp = spec.train.stages["align_expert"]
    expert = cfg.model_dump(mode="json", exclude={"freeze"})  # freeze is an SFT setting
    from trainers.skills.train import skill_weights

    if (weights := skill_weights(cfg)) is not None:  # skilled init: the weights' own content hash
        expert["skill_weights"] = weights
    llm_id = llm.model_dump(mode="json", exclude={"freeze"})
    if llm.preset is not None:
        llm_id["vocabulary"] = vocabulary_identity(tokenizer)
    data_id = {**data.identity, "image_size": data.image_size,
               "image_folder": str(data.image_folder.resolve()) if data.image_folder else None}
    return stage1_key(expert, align_llm=llm_id, data_identity=data_id, hyper_params=hp.model_dump(mode="json"), seed=seed_for(spec, "align_expert"), template=PRETRAIN_TEMPLATE,
                      projector=spec.projector.type, precision="bf16" if bf16 else "fp32", code=code_version())
