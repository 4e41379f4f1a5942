"""A trial spec against the registries and the arithmetic, before any process starts: expert
presets, one token grid, the projector, the fusion, the LLM's positions, batch splits, the data
files and the benchmark names. Errors are SpecError, one line naming the file and the field."""
from __future__ import annotations

import json
from pathlib import Path

from trainers.expert_entries import resolve_expert
from trainers.meta_shapes import meta_fusion_shape
from trainers.spec import RECIPE_STAGES, SpecError, TrialSpec


NOT_STAGED = " (not staged yet: stage it before a run; `eagle-explore check` without `--staged` checks everything else)"

def _check_sva_layers(spec: TrialSpec, grid: int, visual_tokens: int, fail) -> None:
    """SVA's llm_layers against the visual tokens and the LLM's depth (when known before loading)."""
    from experts.fusion.sva_layers import check_llm_layers
    from trainers.modeling.llm import llm_num_layers

    try:
        check_llm_layers(tuple(spec.fusion.options["llm_layers"]), grid, visual_tokens, num_layers=llm_num_layers(spec.llm))
    except ValueError as err:
        fail("fusion.options", str(err))


def validate_spec(spec: TrialSpec, source: str, nproc: int, nnodes: int = 1,
                  unstaged: list[str] | None = None) -> None:
    """Everything that can be checked before a process starts; SpecError with one line otherwise.
    `unstaged` (planning): a data file or image folder not there yet is appended to it, not an error."""
    from trainers.training.loop import BatchSplitError, accumulation_steps
    from trainers.modeling.llm import LLMSetupError, check_llm_spec, check_positions, llm_positions
    from trainers.modeling.projector import PROJECTORS
    def fail(field: str, msg: str) -> None:
        raise SpecError(f"{source}: {field}: {msg}")

    if nproc < 1:
        fail("nproc", f"must be >= 1, got {nproc}")
    cfgs = []
    for i, e in enumerate(spec.experts):
        try:
            cfgs.append(resolve_expert(e))
        except KeyError as err:
            fail(f"experts.{i}.preset", str(err.args[0]) if err.args else str(err))
        except ValueError as err:
            fail(f"experts.{i}", str(err).splitlines()[0])
        if e.skill:
            from trainers.skills.train import skill_of

            try:
                skill_of(cfgs[-1], e.skill)
            except ValueError as err:
                fail(f"experts.{i}.skill", str(err))
    grids = {c.grid for c in cfgs}
    if len(grids) > 1:
        fail("experts", f"all experts of a mixture must share a token grid, got {sorted(grids)}")
    if spec.projector.type not in PROJECTORS:
        fail("projector.type", f"unknown projector {spec.projector.type!r}; known: {', '.join(PROJECTORS)}")
    try:  # on the meta device, cached: check_trial asks for the same shape
        fused_tokens, _ = meta_fusion_shape(spec.fusion.name, tuple(c.hidden_size for c in cfgs), cfgs[0].grid ** 2,
                                            json.dumps(spec.fusion.options, sort_keys=True, default=str))
    except KeyError as err:
        fail("fusion.name", str(err.args[0]) if err.args else str(err))
    except (ValueError, TypeError, RuntimeError) as err:
        fail("fusion.options", str(err).splitlines()[0])
    for field, llm in (("llm", spec.llm), ("train.align_llm", spec.train.align_llm)):
        if llm is None:
            continue
        try:
            check_llm_spec(llm)
            positions = llm_positions(llm)
            if positions is not None:  # stage 1 runs one expert (channel_concat: grid x grid tokens)
                check_positions(llm.max_length, fused_tokens if field == "llm" else cfgs[0].grid ** 2, positions)
        except LLMSetupError as err:
            raise SpecError(f"{source}: {str(err).replace('llm.', field + '.', 1)}") from None
        except (KeyError, FileNotFoundError) as err:
            fail(field, str(err.args[0]) if isinstance(err, KeyError) else str(err))
    if spec.fusion.name == "sva" and spec.fusion.options.get("llm_layers"):
        _check_sva_layers(spec, cfgs[0].grid, fused_tokens, fail)
    if spec.eval.interval_steps and spec.train.strategy == "deepspeed_zero3":
        fail("eval.interval_steps", "not supported with deepspeed_zero3 (partitioned weights): evaluate at the end")
    world = nproc * nnodes
    for stage in RECIPE_STAGES[spec.train.recipe]:
        try:
            accumulation_steps(spec.train.stages[stage], world, stage)
        except BatchSplitError as err:
            raise SpecError(f"{source}: {err}") from None
    d = spec.data
    for field in ("pretrain", "sft", "heldout"):
        path = getattr(d, field)
        if path is not None and not Path(path).is_file():
            if unstaged is None or Path(path).exists():
                fail(f"data.{field}", f"file not found: {path}" + ("" if Path(path).exists() else NOT_STAGED))
            unstaged.append(f"data.{field} {path}")
    if d.image_folder is not None and not Path(d.image_folder).is_dir():
        if unstaged is None or Path(d.image_folder).exists():
            fail("data.image_folder", f"directory not found: {d.image_folder}"
                 + ("" if Path(d.image_folder).exists() else NOT_STAGED))
        unstaged.append(f"data.image_folder {d.image_folder}")
    if spec.eval.benchmarks:
        try:
            from trainers.eval import BENCHMARKS
        except ImportError as err:
            fail("eval.benchmarks", f"the evaluation package is not available ({err})")
        unknown = [b for b in spec.eval.benchmarks if b not in BENCHMARKS]
        if unknown:
            fail("eval.benchmarks", f"unknown benchmark {unknown[0]!r}; known: {', '.join(sorted(BENCHMARKS))}")
