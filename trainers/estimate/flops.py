"""FLOPs of real model steps (torch's FlopCounterMode) and the GPUs' bf16 dense peaks for MFU.

torch's counter misses the CPU attention kernel (so on CPU and on fake CPU tensors attention would
count zero) and counts a grouped convolution's backward as a dense one (ConvNeXt's depthwise 7x7
came out 250x its forward); both are counted here the way the forward is."""
from __future__ import annotations

import re
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten
# module paths of an EagleModel's parts in the counter's per-module table
_PARTS = {"vision": r"[^.]+\.mixture\.experts\.\d+", "fusion": r"[^.]+\.mixture\.fusion",
          "projector": r"[^.]+\.projector", "llm": r"[^.]+\.llm"}

# bf16 dense tensor-core peaks (TFLOP/s): H100 SXM and H200 989, A100 312 (DESIGN.md facts).
PEAK_BF16_DENSE_TFLOPS: dict[str, float] = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _conv_backward(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                   _output_padding, _groups, output_mask, out_shape=None) -> int:
    # grad_input and grad_weight each cost what the forward costs; w_shape already holds c_in/groups
    fwd = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


CUSTOM_FLOPS: dict[Any, Any] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
    aten.convolution_backward: _conv_backward,
}


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode (no table printed) that also counts the ops above. Attention is counted
    as full (non-causal) score matrices, as torch and most MFU reports do."""
    return FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS)


def peak_tflops(device_name: str, override: float | None = None) -> float:
    """The GPU's bf16 dense peak; `override` (a --gpu-peak-tflops flag) for any GPU not listed."""
    if override is not None:
        if override <= 0:
            raise ValueError(f"--gpu-peak-tflops must be positive, got {override}")
        return float(override)
    for key, value in PEAK_BF16_DENSE_TFLOPS.items():
        if key in device_name.upper():
            if key == "H100" and "PCIE" in device_name.upper():
                break  # the PCIe card is slower (756): not our figure to guess
            return value
    raise ValueError(f"no bf16 peak known for {device_name!r} (known: {', '.join(PEAK_BF16_DENSE_TFLOPS)}); "
                     "pass --gpu-peak-tflops")


def step_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor], bf16: bool = False) -> dict[str, Any]:
    """FLOPs of one real training step (forward + backward) of an EagleModel on `batch`, as it
    trains: frozen experts run forward only, a frozen LLM back-propagates input gradients only.
    Returns {"total", "backward", "forward": {"vision", "fusion_projector", "llm"}}; the forward is
    split by module (the counter's module attribution is reliable only there); the optimizer step
    is not counted."""
    counter = flop_counter()
    device = batch["input_ids"].device
    with counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        table = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
        forward = counter.get_total_flops()
        loss.backward()
    parts = {name: sum(v for k, v in table.items() if re.fullmatch(pattern, k)) for name, pattern in _PARTS.items()}
    model.zero_grad(set_to_none=True)
    total = counter.get_total_flops()
    return {"total": total, "backward": total - forward,
            "forward": {"vision": parts["vision"], "fusion_projector": parts["fusion"] + parts["projector"],
                        "llm": parts["llm"]}}
