"""Cost of one trial before it runs: per stage, trainable and frozen parameters, FLOPs per sample,
peak memory per GPU and GPU-hours, from the full-size architectures on fake tensors
(trainers.estimate.arch_profiles) and the stage recipe (which parts train in which stage).

GPU-hours = FLOPs per sample x samples / (peak x MFU); MFU is an assumption (lmms-engine reports
30-40 % for VLM SFT), the FLOPs are counted. Evaluation is not included."""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainers.estimate.arch_profiles import ArchProfiler, Profile, llm_config
from trainers.estimate.memory import GiB, activation_bytes, host_bytes, state_bytes
from trainers.spec import RECIPE_STAGES, LLMSpec, StageSpec, TrialSpec

CAPTION_STAGES = ("pretrain", "align_expert", "align_projector")  # these read the pre-training captions


@dataclass(frozen=True)
class Assumptions:
    gpus: int = 1  # processes (GPUs) per trial
    mfu: float = 0.35
    peak_tflops: float = 989.0  # bf16 dense: H100 SXM / H200
    caption_tokens: int = 64  # text tokens of a pre-training sample (a caption and its prompt)
    sft_tokens: int = 512  # text tokens of an SFT sample
    samples: dict[str, int] = field(default_factory=dict)  # "pretrain"/"sft" -> records (overrides the data)
    device: str = "gpu"  # where precision "auto" is resolved: bf16 on a GPU, fp32 on a CPU
    gpus_per_node: int = 8  # a trial of more GPUs spans nodes (host RAM is priced per node)


@dataclass
class StageEstimate:
    trainable_params: int
    frozen_params: int
    flops_per_sample: float
    peak_memory_gb: float
    gpu_hours: float | None
    samples: int | None
    tokens_per_sample: int
    memory_gb: dict[str, float]  # weights, gradients, optimizer, activations
    stage1: list[dict[str, Any]] = field(default_factory=list)  # align_expert: per expert key + hours
    host_memory_gb: float = 0.0  # host RAM per node while the stage builds, loads and saves

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def precision_mode(spec: TrialSpec, device: str) -> str:
    bf16 = spec.train.precision == "bf16" or (spec.train.precision == "auto" and device == "gpu")
    if not bf16:
        return "fp32"
    return "autocast" if spec.train.strategy == "ddp" else "bf16"


def count_records(path: str | Path) -> int:
    path = Path(path)
    if path.suffix == ".jsonl":
        with path.open() as f:
            return sum(1 for line in f if line.strip())
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: a LLaVA-format json file holds a list of records")
    return len(data)


def size_from_name(path: str) -> int | None:
    """'blip_laion_cc_sbu_558k.json' -> 558000, 'eagle-1-sft-1_8M.json' -> 1800000 (used, and said,
    only when the file is not on this machine)."""
    m = re.search(r"(\d+(?:[._]\d+)?)([kKmM])(?![a-zA-Z])", Path(path).stem)
    if not m:
        return None
    return int(float(m.group(1).replace("_", ".")) * (1e3 if m.group(2) in "kK" else 1e6))


def dataset_size(spec: TrialSpec, which: str, a: Assumptions) -> tuple[int | None, str]:
    """(records, where the figure came from) of the pretrain or sft data, data.fraction applied."""
    n, where = _all_records(spec, which, a)
    if n is None or spec.data.fraction >= 1:
        return n, where
    return max(1, round(spec.data.fraction * n)), f"{where} x data.fraction {spec.data.fraction:g}"


def _all_records(spec: TrialSpec, which: str, a: Assumptions) -> tuple[int | None, str]:
    if which in a.samples:
        return a.samples[which], "option"
    syn = spec.data.synthetic
    if syn is not None:
        return (syn.n_pretrain if which == "pretrain" else syn.n_sft), "synthetic"
    path = getattr(spec.data, which)
    if path and Path(path).is_file():
        return count_records(path), "file"
    n = size_from_name(path or "")
    return (n, "file name (file absent)") if n else (None, "unknown (file absent: pass --samples)")


def stage_samples(hp: StageSpec, records: int | None, stage: str) -> int | None:
    """Samples a stage trains on: whole global batches per epoch, capped by max_steps."""
    if records is None:
        return None if hp.max_steps is None else hp.max_steps * hp.global_batch_size
    per_epoch = records // hp.global_batch_size
    if per_epoch == 0:
        raise ValueError(f"train.stages.{stage}: {records} records are fewer than one global batch")
    steps = max(1, math.ceil(hp.epochs * per_epoch))
    return (min(steps, hp.max_steps) if hp.max_steps else steps) * hp.global_batch_size


class TrialEstimator:
    """Estimates trials; one instance shares the architecture counts across every trial of a plan."""

    def __init__(self, assumptions: Assumptions, cache_path: Path | None = None) -> None:
        self.a = assumptions
        self.cache_path = cache_path
        self.profilers: dict[str, ArchProfiler] = {}

    def profiler(self, mode: str) -> ArchProfiler:
        if mode not in self.profilers:
            self.profilers[mode] = ArchProfiler(mode, self.cache_path)
        return self.profilers[mode]

    def save(self) -> None:
        """The new architecture counts to the cache file (after a plan that succeeded)."""
        for prof in self.profilers.values():
            prof.save()

    def _memory(self, spec: TrialSpec, hp: StageSpec, parts: list[tuple[Profile, bool]], bf16: bool) -> dict[str, float]:
        trainable = sum(p.trainable for p, _ in parts)
        frozen = sum(p.frozen for p, _ in parts)
        mem = state_bytes(trainable, frozen, spec.train.strategy, bf16, self.a.gpus)
        mem["activations"] = activation_bytes([(p.saved, ckpt) for p, ckpt in parts], hp.micro_batch_size)
        return {k: v / GiB for k, v in mem.items()}

    def _stage(self, spec: TrialSpec, stage: str, experts_: list[tuple[Any, bool]], *, llm: LLMSpec,
               llm_trained: bool, vocab: int | None, samples: int | None) -> StageEstimate:
        """One model of the stage: experts (config, trained), head (always trained), LLM."""
        mode = precision_mode(spec, self.a.device)
        prof = self.profiler(mode)
        ex = [(prof.expert(cfg, tr), cfg.grad_checkpointing and tr) for cfg, tr in experts_]
        cfg = llm_config(llm, vocab)
        fusion = (spec.fusion.name, spec.fusion.options) if len(experts_) > 1 or stage != "align_expert" \
            else ("channel_concat", {})
        head = prof.head([p.out_dim for p, _ in ex], ex[0][0].tokens, [tr for _, tr in experts_], fusion=fusion[0],
                         options=dict(fusion[1]), projector=spec.projector.type, hidden=int(cfg.hidden_size))
        text = self.a.caption_tokens if stage in CAPTION_STAGES else self.a.sft_tokens
        seq = min(head.tokens + text, int(getattr(cfg, "max_position_embeddings", head.tokens + text)))
        lm = prof.llm(cfg, seq, llm_trained)
        parts = ex + [(head, False), (lm, llm.grad_checkpointing)]
        hp = spec.train.stages[stage]
        flops = float(sum(p.flops for p, _ in parts))
        mem = self._memory(spec, hp, parts, mode != "fp32")
        hours = None if samples is None else flops * samples / (self.a.peak_tflops * 1e12 * self.a.mfu) / 3600
        host = host_bytes([p.trainable + p.frozen for p, _ in ex], head.trainable + head.frozen, lm.trainable + lm.frozen,
                          spec.train.strategy, mode != "fp32", min(self.a.gpus, self.a.gpus_per_node)) / GiB
        return StageEstimate(sum(p.trainable for p, _ in parts), sum(p.frozen for p, _ in parts), flops,
                             sum(mem.values()), hours, samples, seq, mem, host_memory_gb=host)

    def trial(self, spec: TrialSpec, vocab: int | None = None) -> dict[str, StageEstimate]:
        """Every stage of the trial's recipe. align_expert trains each expert alone (its peak is the
        largest one's, its FLOPs and hours the sum) and lists each expert's stage-1 cache identity."""
        from trainers.stages.recipes import resolve_experts

        cfgs = resolve_experts(spec)
        out: dict[str, StageEstimate] = {}
        for stage in RECIPE_STAGES[spec.train.recipe]:
            data = "sft" if stage == "sft" else "pretrain"
            records, _ = dataset_size(spec, data, self.a)
            samples = stage_samples(spec.train.stages[stage], records, stage)
            if stage == "align_expert":
                llm = spec.train.align_llm or spec.llm
                each = [self._stage(spec, stage, [(c, True)], llm=llm, llm_trained=False, vocab=vocab, samples=samples) for c in cfgs]
                est = StageEstimate(sum(e.trainable_params for e in each), max(e.frozen_params for e in each),
                                    sum(e.flops_per_sample for e in each), max(e.peak_memory_gb for e in each),
                                    None if samples is None else sum(e.gpu_hours for e in each), samples,
                                    each[0].tokens_per_sample, max((e.memory_gb for e in each),
                                                                   key=lambda m: sum(m.values())),
                                    host_memory_gb=max(e.host_memory_gb for e in each))
                est.stage1 = [{"expert": c.name, "key": stage1_identity(c, spec), "gpu_hours": e.gpu_hours}
                              for c, e in zip(cfgs, each)]
                out[stage] = est
            elif stage == "sft":
                out[stage] = self._stage(spec, stage, [(c, not c.freeze) for c in cfgs], llm=spec.llm,
                                         llm_trained=not spec.llm.freeze, vocab=vocab, samples=samples)
            else:  # pretrain / align_projector: experts and LLM frozen, the head trained
                out[stage] = self._stage(spec, stage, [(c, False) for c in cfgs], llm=spec.llm, llm_trained=False, vocab=vocab, samples=samples)
        return out


def stage1_identity(cfg, spec: TrialSpec) -> str:
    """What the stage-1 cache key hashes (trainers.stages.recipes.stage1_key_for), the data named by its spec."""
    llm = spec.train.align_llm or spec.llm
    return json.dumps({"expert": cfg.model_dump(mode="json", exclude={"freeze", "grad_checkpointing"}),
                       "llm": llm.model_dump(mode="json", exclude={"freeze", "grad_checkpointing"}),
                       "hp": spec.train.stages["align_expert"].model_dump(mode="json"), "seed": spec.seed,
                       "projector": spec.projector.type,
                       "data": spec.data.synthetic.model_dump(mode="json") if spec.data.synthetic else spec.data.pretrain},
                      sort_keys=True)
