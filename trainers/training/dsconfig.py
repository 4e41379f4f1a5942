"""DeepSpeed ZeRO-2/3 configs generated from the trial spec (LLaVA's zero2/zero3.json as facts)."""
from __future__ import annotations

from typing import Any

from trainers.spec import StageSpec

ZERO_STAGES = {"deepspeed_zero2": 2, "deepspeed_zero3": 3}


def deepspeed_config(strategy: str, hp: StageSpec, world_size: int, *, accum: int, bf16: bool,
                     on_gpu: bool) -> dict[str, Any]:
    """ZeRO config for one stage. On CPU: torch's AdamW (no fused op build) and fp32."""
    if strategy not in ZERO_STAGES:
        raise KeyError(f"not a DeepSpeed strategy: {strategy!r}; known: {', '.join(ZERO_STAGES)}")
    if hp.micro_batch_size * world_size * accum != hp.global_batch_size:
        raise ValueError(f"micro {hp.micro_batch_size} x world {world_size} x accum {accum} "
                         f"!= global batch {hp.global_batch_size}")
    stage = ZERO_STAGES[strategy]
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": on_gpu, "contiguous_gradients": True,
                            "reduce_bucket_size": 5e7}
    if stage == 2:
        zero.update(allgather_partitions=True, allgather_bucket_size=5e7, reduce_scatter=True)
    else:
        zero.update(stage3_prefetch_bucket_size=5e6, stage3_param_persistence_threshold=1e4,
                    stage3_max_live_parameters=1e9, stage3_max_reuse_distance=1e9,
                    stage3_gather_16bit_weights_on_model_save=True)
    adam: dict[str, Any] = {"lr": hp.lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": hp.weight_decay}
    if not on_gpu:
        adam["torch_adam"] = True
    return {
        "train_batch_size": hp.global_batch_size,
        "train_micro_batch_size_per_gpu": hp.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": hp.max_grad_norm,
        "optimizer": {"type": "AdamW", "params": adam},
        "zero_optimization": zero,
        "bf16": {"enabled": bool(bf16)},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }
