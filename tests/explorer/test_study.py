"""Study files and search spaces: good files load, every class of bad file gives one clear line
naming the file and the field, and nothing is written."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from explorer.study.trial_specs import build_trial_spec
from explorer.strategies import build_strategy
from explorer.study.spec import StudyError
from explorer.study.load import load_study
from search_spaces import SearchSpaceError, load_search_space
from test_study_fixtures import BASE_TRIAL, study_data, write_study

ROOT = Path(__file__).resolve().parents[2]
GREEDY = {"type": "greedy", "base": ["A", "B"]}


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def test_a_good_study_loads_with_its_defaults(tmp_path):
    spec = load_study(write_study(tmp_path, study_data("ok", GREEDY)))
    assert spec.name == "ok" and spec.strategy.type == "greedy"
    assert spec.objective.metric == "avg" and spec.objective.direction == "maximize"
    assert spec.resources.max_concurrent_trials == 1 and spec.retries == 0 and spec.storage is None
    assert spec.space.scale == "tiny" and spec.space.preset("F") == "tiny-eva02"
    assert build_strategy(spec).total_planned() == 11


def test_base_trial_path_is_relative_to_the_study_file(tmp_path):
    (tmp_path / "trials").mkdir()
    data = dict(BASE_TRIAL, data={"pretrain": "p.json", "sft": "s.json", "image_folder": "imgs"})
    (tmp_path / "trials" / "t.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "trials" / "imgs").mkdir()
    spec = load_study(write_study(tmp_path, study_data("rel", GREEDY, base_trial="trials/t.yaml")))
    assert spec.base_trial_data["data"]["image_folder"] == str((tmp_path / "trials" / "imgs").resolve())


def test_the_repository_studies_all_load():
    files = sorted((ROOT / "studies").glob("*.yaml"))
    if not files:
        pytest.skip("no studies/*.yaml yet")
    for path in files:
        spec = load_study(path)
        assert build_strategy(spec).total_planned() >= 1, path


def test_catalogue_matches_the_expert_presets():
    experts = pytest.importorskip("experts")
    for scale, idx in (("full", 0), ("tiny", 1)):
        space = load_search_space("eagle" if scale == "full" else "eagle_tiny")
        assert {x: space.preset(x) for x in space.letters} == {x: v[idx] for x, v in experts.LETTERS.items()}
        for letter in space.letters:
            assert experts.get_preset(space.preset(letter)).letter == letter
    tiny_clip = experts.get_preset("tiny-clip")  # "original" is the native size, as 336 is for CLIP
    assert load_search_space("eagle_tiny").resolution["original"].input_size.tiny == tiny_clip.native_size


def test_resolution_and_freeze_recipes_reach_the_trial_spec(tmp_path):
    spec = load_study(write_study(tmp_path, study_data("r", GREEDY)))
    params = {"expert_A": True, "expert_B": True, "fusion": "sequence_append",
              "resolution": "tiled_672", "freeze": "unfreeze", "train.stages.sft.lr": 3e-4}
    ts = build_trial_spec(spec, params, {"seed": 7, "experts": "A+B"}, number=4, cache_dir=tmp_path / "c")
    clip, convnext = ts.experts
    assert (clip.preset, clip.input_size, clip.highres, clip.freeze) == ("tiny-clip", 96, "tiled", False)
    assert (convnext.preset, convnext.input_size, convnext.freeze) == ("tiny-convnext", None, False)
    assert ts.fusion.name == "sequence_append" and ts.train.stages["sft"].lr == 3e-4
    assert ts.seed == 7 and ts.name == "r-4" and ts.cache_dir == str(tmp_path / "c") and ts.eval.objective == "avg"


BAD = [
    # (mutation of the study data, expected "field: message" fragment)
    (lambda d: d.update(colour="red"), "colour: unknown key"),
    (lambda d: d.update(objective={"metric": "avg", "dirction": "max"}), "objective.dirction: unknown key"),
    (lambda d: d.update(objective={"direction": "up"}), "objective.direction: Input should be 'maximize' or"),
    (lambda d: d.pop("name"), "name: Field required"),
    (lambda d: d.update(name="has space"), "name: String should match pattern"),
    (lambda d: d.update(strategy={"type": "bayes"}), "strategy: strategy.type must be one of greedy, grid, tpe"),
    (lambda d: d.update(resources={"max_concurrent_trials": 0}), "resources.max_concurrent_trials: Input should be greater than 0"),
    (lambda d: d.update(retries=-1), "retries: Input should be greater than or equal to 0"),
    (lambda d: d.update(search_space="nope"), "search_space: nope: search space not found (bundled: eagle, eagle_plus, eagle_plus_tiny, eagle_tiny)"),
    (lambda d: d.update(search_space={"extends": "eagle", "fusion": {"x": {"opts": 1}}}), "search_space: search_space: fusion.x.opts: unknown key"),
    (lambda d: d.update(base_trial="missing.yaml"), "base_trial: file not found"),
    (lambda d: d["base_trial"].update(llm={"preset": "tiny-llama", "colour": 1}), "base_trial: llm.colour: unknown key"),
    (lambda d: d.update(pruner={"type": "sometimes"}), "pruner.type: unknown pruner 'sometimes' (known: none, median"),
    (lambda d: d.update(pruner={"type": "median", "options": {"warmup": 1}}), "pruner.options: "),
    (lambda d: d.update(storage="mongodb://x/y"), "storage: unsupported database 'mongodb'"),
    (lambda d: d.update(heartbeat_interval_s=10, grace_period_s=5), "grace_period_s must exceed heartbeat_interval_s"),
    (lambda d: d.update(strategy={"type": "tpe", "experts": ["A"]}), "budget.max_trials: a tpe study needs a number of trials"),
    (lambda d: d.update(strategy={"type": "grid", "experts": ["A"], "axes": {"colour": [1]}}), "strategy.axes.colour: unknown axis"),
    (lambda d: d.update(strategy={"type": "grid", "experts": ["A"], "axes": {"resolution": ["huge"]}}), "strategy.axes.resolution: unknown resolution 'huge'"),
    (lambda d: d.update(strategy={"type": "grid", "experts": ["A"], "axes": {"train.stages.sft.colour": [1]}}), "base_trial: train.stages.sft.colour: unknown key"),
    (lambda d: d["base_trial"].update(eval={"benchmarks": []}), "objective.metric: 'avg' needs eval.benchmarks (or eval.tasks) in the base trial"),
    (lambda d: d.update(objective={"metric": "heldout_loss"}), "objective.direction: heldout_loss is a loss; use minimize"),
]


@pytest.mark.parametrize("mutate, expected", BAD, ids=[b[1].split(":")[0] for b in BAD])
def test_bad_study_files_give_one_line_and_write_nothing(tmp_path, mutate, expected):
    data = study_data("bad", GREEDY)
    data["base_trial"] = dict(data["base_trial"])
    mutate(data)
    path = write_study(tmp_path, data)
    before = _files(tmp_path)
    with pytest.raises(StudyError) as err:
        load_study(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
    assert expected in msg, msg
    assert _files(tmp_path) == before


@pytest.mark.parametrize("text, expected", [
    ("name: [unclosed", "not valid YAML"),
    ("- a list", "a study file is a mapping at the top level"),
])
def test_unreadable_study_files(tmp_path, text, expected):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(StudyError, match=expected) as err:
        load_study(path)
    assert "\n" not in str(err.value)
    with pytest.raises(StudyError, match="study file not found"):
        load_study(tmp_path / "absent.yaml")


def test_search_space_errors_name_the_field(tmp_path):
    with pytest.raises(SearchSpaceError, match=r"hparams.lr: Value error, log ranges need low > 0"):
        load_search_space({"experts": {"A": {"name": "a", "family": "clip", "full": "x", "tiny": "y"}},
                           "hparams": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}}})
    with pytest.raises(SearchSpaceError, match=r"resolution.big.applies_to: unknown expert letter 'Q'"):
        load_search_space({"extends": "eagle", "resolution": {"big": {"applies_to": ["Q"]}}})
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(SearchSpaceError, match="loops back"):
        load_search_space(str(tmp_path / "loop.yaml"))
