"""Trial-spec generation: the study's base trial + one trial's params -> a validated TrialSpec.

Experts come from the letters through the catalogue (letter -> full or tiny preset), then the
resolution recipe (input_size + highres on the experts it applies to), the freeze setting, the
fusion, hyper-parameters by dotted path, the seed and the shared cache directory."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from explorer.strategies.fidelity import is_proxy_rung
from explorer.study.spec import StudyError, StudySpec
from trainers import trial_dir as TD
from trainers.spec import SpecError, TrialSpec, dump_trial_spec, parse_trial_spec


def letters_of(params: dict[str, Any], user_attrs: dict[str, Any], catalogue: list[str]) -> list[str]:
    """Experts in the order the study added them ("A+B+F" attr), else catalogue order."""
    chosen = [x for x in catalogue if params.get(f"expert_{x}")]
    named = user_attrs.get("experts")
    if named:
        order = str(named).split("+")
        if sorted(order) != sorted(chosen) and chosen:
            raise ValueError(f"experts attr {named!r} disagrees with expert_* params ({'+'.join(chosen)})")
        return order
    return chosen


def set_dotted(data: dict[str, Any], path: str, value: Any) -> None:
    """data[a][b][c] = value for path 'a.b.c', creating missing mappings."""
    node = data
    parts = path.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ValueError(f"hyper-parameter {path}: {'.'.join(parts[:i + 1])} is not a mapping in the base trial")
        node = nxt
    node[parts[-1]] = value


def build_trial_data(spec: StudySpec, params: dict[str, Any], user_attrs: dict[str, Any],
                     *, number: int | None = None, cache_dir: str | Path | None = None) -> dict[str, Any]:
    space = spec.space
    data = spec.base_trial_data
    letters = letters_of(params, user_attrs, space.letters)
    if not letters:
        raise ValueError("a trial needs at least one expert (no expert_* param is true)")
    res = space.resolution[params.get("resolution", "preset")]
    frz = space.freeze[params.get("freeze", "preset")]
    # per-preset settings of the base trial (source, pretrained...) carry over
    base_entries = {e.get("preset"): e for e in data.get("experts") or [] if isinstance(e, dict)}
    entries = []
    for x in letters:
        preset = space.preset(x)
        entry = copy.deepcopy(base_entries.get(preset, {}))
        entry["preset"] = preset
        if space.scale in space.experts[x].define:  # declared in the catalogue, no preset
            entry["define"] = space.experts[x].define[space.scale]
        if res.input_size is not None and (res.applies_to is None or x in res.applies_to):
            entry["input_size"] = getattr(res.input_size, space.scale)
        if res.grid is not None and (res.applies_to is None or x in res.applies_to):
            entry["grid"] = getattr(res.grid, space.scale)
        if res.highres is not None and (res.applies_to is None or x in res.applies_to):
            entry["highres"] = res.highres
            if res.max_tiles is not None:
                entry["max_tiles"] = res.max_tiles
        if frz.experts is not None and (frz.applies_to is None or x in frz.applies_to):
            entry["freeze"] = frz.experts
        entries.append(entry)
    data["experts"] = entries
    if frz.llm is not None:
        data.setdefault("llm", {})["freeze"] = frz.llm
    fusion = params.get("fusion")
    if fusion is not None:
        old = data.get("fusion") or {}
        opts = dict(space.fusion[fusion].options)
        if isinstance(old, dict) and old.get("name") == fusion:
            opts.update(old.get("options") or {})
        data["fusion"] = {"name": fusion, "options": opts}
    for name, value in params.items():
        if "." in name:
            set_dotted(data, name, value)
    for key in ("seed", "align_seed"):
        if user_attrs.get(key) is not None:
            data[key] = int(user_attrs[key])
    if number is not None:
        data["name"] = f"{spec.name}-{number}"
    if cache_dir is not None:
        data["cache_dir"] = str(cache_dir)
    data.setdefault("eval", {})["objective"] = spec.objective.metric
    fidelity = getattr(spec.strategy, "fidelity", None)
    if is_proxy_rung(user_attrs, fidelity):
        apply_proxy(data, fidelity.proxy)
    return data


def apply_proxy(data: dict[str, Any], proxy) -> None:
    """A proxy rung's trial: the proxy's LLM (the freeze recipe's setting kept) and data share."""
    if proxy.llm is not None:
        freeze = (data.get("llm") or {}).get("freeze")
        data["llm"] = {**copy.deepcopy(proxy.llm), **({"freeze": freeze} if freeze is not None else {})}
    if proxy.data_fraction < 1:
        data.setdefault("data", {}).update(fraction=proxy.data_fraction, fraction_seed=proxy.data_seed)


def build_trial_spec(spec: StudySpec, params: dict[str, Any], user_attrs: dict[str, Any],
                     *, number: int | None = None, cache_dir: str | Path | None = None) -> TrialSpec:
    source = f"{spec.name} trial {number}" if number is not None else f"{spec.source}: base_trial"
    try:
        data = build_trial_data(spec, params, user_attrs, number=number, cache_dir=cache_dir)
    except (ValueError, KeyError) as err:
        raise SpecError(f"{source}: {err}") from None
    return parse_trial_spec(data, source)


def write_trial_spec(trial_spec: TrialSpec, trial_dir: str | Path) -> Path:
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    path = trial_dir / TD.TRIAL_SPEC
    dump_trial_spec(trial_spec, path)
    return path


def _check_base_names(spec: StudySpec) -> None:
    """Names of the base trial that the strategy replaces must still mean something: per-preset
    expert settings apply only to the catalogue's presets, the fusion is the search space's, and
    eval.objective is the study's objective.metric."""
    base, space = spec.base_trial_data, spec.space
    where = f"{spec.source}: base_trial"
    presets = [space.preset(x) for x in space.letters]
    for i, entry in enumerate(base.get("experts") or []):
        if entry["preset"] not in presets:
            raise StudyError(f"{where}: experts.{i}.preset: {entry['preset']!r} is not an expert of the search space "
                             f"(its {space.scale} presets: {', '.join(presets)}); its settings would reach no trial")
    fusion = (base.get("fusion") or {}).get("name")
    if fusion is not None and fusion not in space.fusion:
        raise StudyError(f"{where}: fusion.name: unknown fusion {fusion!r} (the search space's: {', '.join(space.fusion)})")
    preset = (base.get("llm") or {}).get("preset")
    if isinstance(preset, str):  # the base's own LLM, even where an axis replaces it in every trial
        from trainers.modeling.llm import LLM_PRESETS

        if preset not in LLM_PRESETS:
            raise StudyError(f"{where}: llm.preset: unknown preset {preset!r}; known: {', '.join(sorted(LLM_PRESETS))}")
    objective = (base.get("eval") or {}).get("objective")
    if objective is not None and objective != spec.objective.metric:
        raise StudyError(f"{where}: eval.objective: {objective!r} differs from the study's objective.metric "
                         f"{spec.objective.metric!r} (which every trial uses); remove it or make them agree")


def check_base_trial(spec: StudySpec, point: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Generate the spec of a representative trial so a bad base trial fails before anything runs."""
    _check_base_names(spec)
    params, attrs = point
    try:
        ts = build_trial_spec(spec, params, attrs)
    except SpecError as err:
        msg = str(err)
        prefix = f"{spec.source}: base_trial: "
        raise StudyError(msg if msg.startswith(prefix) else prefix + msg) from None
    fidelity = getattr(spec.strategy, "fidelity", None)
    if fidelity is not None and fidelity.proxy is not None:  # a proxy rung's trial builds too
        try:
            build_trial_spec(spec, params, {**attrs, "rung": 0, "rungs": 2})
        except SpecError as err:
            msg = str(err).removeprefix(f"{spec.source}: base_trial: ")
            raise StudyError(f"{spec.source}: strategy.fidelity.proxy: {msg}") from None
    metric, direction = spec.objective.metric, spec.objective.direction
    # a trial without benchmarks reports heldout_loss whatever eval.objective says (trainers.stages.runner)
    if metric != "heldout_loss" and not ts.eval.scored():
        raise StudyError(f"{spec.source}: objective.metric: {metric!r} needs eval.benchmarks (or eval.tasks) in the base trial "
                         "(without benchmarks a trial's objective is heldout_loss)")
    if metric == "heldout_loss" and direction != "minimize":
        raise StudyError(f"{spec.source}: objective.direction: heldout_loss is a loss; use minimize")
