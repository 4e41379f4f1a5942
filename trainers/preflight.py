"""The trial pre-flight: everything about a trial spec that can be checked before a process starts
or a file is written. Beyond the schema and the registries (trainers.validate.validate_spec): each
expert and the fusion built on the meta device (grids and widths, no weights), the local sources,
the data files' first record, the benchmark copies and the objective's name. Errors are SpecError,
one line naming the file and the field.

Planning (`unstaged`, a list): what only a run reads -- data files, the image folder, benchmark
copies, local expert weights -- may be absent; each absent one is appended to the list ("field path")
instead of failing. What is there is still read and checked."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from trainers.expert_entries import resolve_expert
from trainers.meta_shapes import meta_expert_shape, meta_fusion_shape
from trainers.spec import EvalSpec, SpecError, TrialSpec
from trainers.validate import validate_spec

SNIFF_BYTES = 1 << 16  # enough for the first record of a LLaVA file
IMAGES_CHECKED = 8  # image files of a benchmark copy looked up (the questions file is read whole)
_OBJECTIVES = ("avg", "weighted", "heldout_loss")


def check_trial(spec: TrialSpec, source: str, nproc: int = 1, nnodes: int = 1,
                unstaged: list[str] | None = None) -> None:
    """The whole pre-flight of one trial spec; SpecError (one line) on the first problem."""
    validate_spec(spec, source, nproc, nnodes, unstaged)

    def fail(field: str, msg: str) -> None:
        raise SpecError(f"{source}: {field}: {msg}")

    for i, entry in enumerate(spec.experts):
        if entry.source is not None and _looks_local(entry.source) and not Path(entry.source).expanduser().exists():
            if unstaged is None:
                fail(f"experts.{i}.source", f"no such file or directory: {entry.source}")
            unstaged.append(f"experts.{i}.source {entry.source}")  # weights: the meta build needs none
    shapes = []
    for i, cfg_json in enumerate(_expert_configs(spec)):
        try:
            shapes.append(meta_expert_shape(cfg_json))
        except (ValueError, KeyError, TypeError, RuntimeError) as err:
            fail(f"experts.{i}", _line(err))
    try:  # the grids agree (validate_spec): the fusion sees grid*grid tokens of each width
        meta_fusion_shape(spec.fusion.name, tuple(w for _, w in shapes), shapes[0][0] ** 2,
                          json.dumps(spec.fusion.options, sort_keys=True, default=str))
    except KeyError as err:
        fail("fusion.name", _line(err))
    except (ValueError, TypeError, RuntimeError) as err:
        fail("fusion.options", _line(err))
    _check_data(spec, fail, unstaged)
    _check_epochs(spec, fail)
    _check_feature_cache(spec, shapes, fail)
    check_eval_spec(spec.eval, source, unstaged)
    if spec.eval.harness == "lmms-eval" and spec.train.strategy == "deepspeed_zero3":
        fail("eval.harness", "lmms-eval scores on rank 0 alone, which cannot run a ZeRO-3 partitioned model; "
                             "use ddp or deepspeed_zero2")


def _line(err: BaseException) -> str:
    text = (str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)).strip()
    return (text.splitlines() or [type(err).__name__])[0]


def _looks_local(src: str) -> bool:
    return src.startswith(("/", ".", "~"))


def _expert_configs(spec: TrialSpec) -> list[str]:
    # pretrained=False: the preset's architecture is built (on meta), nothing is downloaded
    return [resolve_expert(e).with_overrides(pretrained=False).model_dump_json() for e in spec.experts]


def first_record(path: Path) -> dict[str, Any]:
    """The first record of a LLaVA-format .json (a list) or .jsonl file, read from its first bytes."""
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES).decode("utf-8", errors="replace")
    text = head.lstrip()
    try:
        if path.suffix == ".jsonl":
            rec = json.loads(text.splitlines()[0]) if text else None
        else:
            if not text.startswith("["):
                raise ValueError("a .json data file is a list of records")
            rec, _ = json.JSONDecoder().raw_decode(text[1:].lstrip())
    except (ValueError, IndexError) as err:
        if len(head) == SNIFF_BYTES and "Unterminated" in str(err):
            return {}  # a first record longer than the sniff: left to the data loader
        raise ValueError(f"not a LLaVA-format file ({str(err).splitlines()[0]})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
        raise ValueError("its first record has no 'conversations' list")
    return rec


def _check_data(spec: TrialSpec, fail, unstaged: list[str] | None = None) -> None:
    d = spec.data
    if d.synthetic is not None:
        return
    folder = Path(d.image_folder) if d.image_folder else None
    for field in ("pretrain", "sft", "heldout"):
        path = getattr(d, field)
        if path is None:
            continue
        path = Path(path)
        if path.suffix not in (".json", ".jsonl"):
            fail(f"data.{field}", f"{path}: expected a .json or .jsonl LLaVA-format file")
        if unstaged is not None and not path.exists():
            continue  # listed by validate_spec
        try:
            rec = first_record(path)
        except (OSError, ValueError) as err:
            fail(f"data.{field}", f"{path}: {_line(err)}")
        image = rec.get("image")
        if isinstance(image, str) and image:
            if folder is None:
                fail("data.image_folder", f"{path} has images (first: {image}) but no image_folder is given")
            if unstaged is not None and not (folder / image).exists():
                if folder.is_dir():  # an absent folder is listed by validate_spec
                    unstaged.append(f"data.image_folder {folder / image}")
            elif not (folder / image).is_file():
                fail("data.image_folder", f"{folder}: no {image} (the first image of {path})")


def _check_epochs(spec: TrialSpec, fail) -> None:
    """Synthetic data has a known size: each stage needs at least one global batch of it."""
    from trainers.training.loop import BatchSplitError, total_steps
    from trainers.spec import RECIPE_STAGES

    syn = spec.data.synthetic
    if syn is None:
        return
    for stage in RECIPE_STAGES[spec.train.recipe]:
        n = syn.n_sft if stage == "sft" else syn.n_pretrain  # as trainers.stages.runner picks the data
        try:
            total_steps(spec.train.stages[stage], n, stage)
        except BatchSplitError as err:
            fail(f"data.synthetic.n_{'sft' if stage == 'sft' else 'pretrain'}", str(err))


def _check_feature_cache(spec: TrialSpec, shapes: list[tuple[int, int]], fail) -> None:
    """Synthetic data has a known size: the trial's feature-cache entries (stage 2's, and SFT's when
    every expert is frozen there) fit max_gb (real data: checked when the stage starts, before any
    feature is computed)."""
    from trainers.caches.features import GB, entry_bytes

    fc, syn = spec.train.feature_cache, spec.data.synthetic
    if not fc.enabled or syn is None or spec.train.recipe != "eagle":
        return
    items = syn.n_pretrain + (syn.n_sft if all(resolve_expert(e).freeze for e in spec.experts) else 0)
    need = sum(entry_bytes(items, grid * grid, width) for grid, width in shapes)
    if need > fc.max_gb * GB:
        fail("train.feature_cache.max_gb", f"{fc.max_gb:g}, but this trial's {len(shapes)} experts' features over "
                                           f"{items} items need {need / GB:.3g} GB")


def check_eval_spec(ev: EvalSpec, source: str, unstaged: list[str] | None = None) -> None:
    """Benchmark copies (or the synthetic suite) and the objective's name; SpecError otherwise."""
    def fail(field: str, msg: str) -> None:
        raise SpecError(f"{source}: {field}: {msg}")

    if ev.harness == "lmms-eval":
        _check_lmms_tasks(ev, fail, unstaged)
    elif ev.tasks:
        fail("eval.tasks", "lmms-eval tasks need eval.harness: lmms-eval")
    names = ev.scored()
    if ev.harness == "lmms-eval":
        pass
    elif ev.data_root is not None:
        root = Path(ev.data_root).expanduser()
        staged = root.exists() or unstaged is None
        if not staged:
            unstaged.append(f"eval.data_root {root}")
        elif not root.is_dir():
            fail("eval.data_root", f"directory not found: {root}")
        for name in names if staged else ():
            if unstaged is not None and not (root / name).exists():
                unstaged.append(f"eval.data_root {root / name}")
                continue
            try:
                check_benchmark_copy(name, str(root.resolve()))
            except (OSError, ValueError) as err:
                fail("eval.data_root", _line(err))
    elif names:
        from trainers.eval.synthetic_suite import SYNTHETIC_BENCHMARKS

        missing = [b for b in names if b not in SYNTHETIC_BENCHMARKS]
        if missing:
            fail("eval.benchmarks", f"{', '.join(missing)} not in the synthetic suite; give eval.data_root")
    if not names:
        return  # the objective is the held-out loss (trainers.stages.runner)

    def known(key: str) -> bool:
        return key in names or key.split("/", 1)[0] in names

    if ev.objective == "avg" and ev.harness == "lmms-eval":
        pass  # the mean of the tasks' headline scores
    elif ev.objective == "avg":
        from trainers.eval.aggregate import PAPER_BENCHMARKS

        if not any(b in PAPER_BENCHMARKS for b in names):
            fail("eval.objective", f"avg needs one of {', '.join(PAPER_BENCHMARKS)} in eval.benchmarks")
    elif ev.objective == "weighted":
        if not ev.weights:
            fail("eval.weights", "objective 'weighted' needs weights")
    elif ev.objective not in _OBJECTIVES and not known(ev.objective):
        fail("eval.objective", f"unknown objective {ev.objective!r}; known: {', '.join(_OBJECTIVES)}, "
                               "or a score of eval.benchmarks (gqa, pope/random/f1, ...)")
    bad = [k for k in ev.weights if not known(k)]
    if bad:
        fail("eval.weights", f"{bad[0]!r} is not a score of eval.benchmarks ({', '.join(names)})")


def _check_lmms_tasks(ev: EvalSpec, fail, unstaged: list[str] | None) -> None:
    """The lmms-eval harness: its extra installed, its tasks known and their datasets present (as
    `eagle-explore eval --harness lmms-eval` checks them); local copies may be unstaged for check/plan."""
    if ev.benchmarks:
        fail("eval.benchmarks", "harness lmms-eval scores eval.tasks; leave eval.benchmarks empty")
    if not ev.tasks:
        fail("eval.tasks", "harness lmms-eval needs at least one lmms-eval task")
    if ev.blind:
        fail("eval.blind", "the blind control is not available with harness lmms-eval")
    from trainers.eval.lmms_harness import HarnessError, check_installed, check_tasks

    try:
        check_installed()
        check_tasks(list(ev.tasks), ev.include_path, datasets=unstaged is None)
    except HarnessError as err:
        fail("eval.tasks", str(err).removeprefix("--tasks: "))
    if ev.include_path is not None and unstaged is not None and not Path(ev.include_path).expanduser().is_dir():
        unstaged.append(f"eval.include_path {ev.include_path}")


@lru_cache(maxsize=64)
def check_benchmark_copy(name: str, root: str) -> int:
    """Read a benchmark copy's questions (as evaluation will) and look up its first images;
    returns the number of items. BenchmarkDataError names the path at fault."""
    from trainers.eval import BenchmarkDataError, get_benchmark

    folder = Path(root) / name
    if not folder.is_dir():
        raise BenchmarkDataError(f"{name}: no copy at {folder}")
    items = get_benchmark(name).load(folder)
    if not items:
        raise BenchmarkDataError(f"{name}: {folder} holds no questions")
    for item in items[:IMAGES_CHECKED]:
        if isinstance(item.image, str) and not Path(item.image).is_file():
            raise BenchmarkDataError(f"{name}: question {item.qid}: image not found: {item.image}")
    return len(items)
