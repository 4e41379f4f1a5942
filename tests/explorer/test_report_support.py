"""Shared helpers for the tracking/report/CLI tests: the paper's greedy table and real trial dirs."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import yaml

BENCHES = ["gqa", "mme", "mmmu", "ocrbench", "scienceqa_img", "pope", "textvqa"]
# The paper's round-robin greedy table (PAPER_TABLES.md): combination -> 7 scores + Avg.
PAPER_GREEDY = {
    "A+B": ([64.0, 1486, 36.0, 533, 72.7, 88.6, 71.9], 658.3),
    "A+B+C": ([64.6, 1497, 35.2, 558, 71.7, 87.9, 72.2], 660.3),
    "A+B+D": ([65.7, 1506, 35.0, 509, 72.6, 87.9, 70.1], 653.6),
    "A+B+E": ([65.5, 1459, 35.3, 565, 73.1, 87.9, 70.8], 660.1),
    "A+B+F": ([64.7, 1506, 35.9, 562, 73.2, 88.3, 72.1], 665.3),
    "A+B+F+C": ([65.9, 1498, 36.6, 540, 72.0, 88.8, 71.6], 662.6),
    "A+B+F+D": ([65.6, 1521, 35.8, 508, 73.0, 89.0, 70.0], 657.5),
    "A+B+F+E": ([65.3, 1539, 37.1, 552, 73.0, 87.4, 71.3], 666.1),
    "A+B+F+E+C": ([65.7, 1511, 37.6, 548, 72.7, 88.6, 71.6], 666.5),
    "A+B+F+E+D": ([65.6, 1512, 36.0, 528, 72.9, 88.4, 70.5], 660.0),
    "A+B+F+E+C+D": ([65.18, 1504, 35.3, 534, 71.9, 87.6, 70.86], 656.3),
}
LETTERS = "ABCDEF"


def write_trial_dir(trial_dir: Path, experts: str, number: int, steps: int = 5, keep_spec: bool = False) -> dict:
    """A real trial directory as trainers.launch writes it, with the paper's figures as results."""
    scores, avg = PAPER_GREEDY[experts]
    trial_dir.mkdir(parents=True, exist_ok=True)
    spec = {"name": f"trial-{number}", "seed": 0,
            "experts": [{"preset": f"tiny-{x}"} for x in experts.split("+")],
            "fusion": {"name": "channel_concat", "options": {}}, "llm": {"preset": "tiny-llama"}}
    if not (keep_spec and (trial_dir / "trial.yaml").is_file()):  # the controller wrote the real one
        (trial_dir / "trial.yaml").write_text(yaml.safe_dump(spec))
    with (trial_dir / "metrics.jsonl").open("w") as fh:
        for stage in ("align_projector", "sft"):
            for step in range(steps):
                fh.write(json.dumps({"step": step, "stage": stage, "loss": 3.0 / (step + 1), "lr": 1e-3,
                                     "samples_per_s": 10.0 + step, "tokens_per_s": 500.0, "time": 1.0 + step}) + "\n")
        fh.write(json.dumps({"stage": "eval", "step": steps, "gqa": scores[0]}) + "\n")
    result = {"scores": dict(zip(BENCHES, scores)), "objective": avg, "objective_name": "avg",
              "heldout_loss": 1.25, "stage_time_s": {"align_projector": 2.5, "sft": 4.0},
              "throughput": {"sft": {"samples_per_s": 12.0, "tokens_per_s": 600.0}},
              "peak_memory_mb": 321.0, "steps": {"sft": steps}, "world_size": 2, "cost": trial_cost(number)}
    (trial_dir / "result.json").write_text(json.dumps(result))
    (trial_dir / "predictions").mkdir(exist_ok=True)
    (trial_dir / "predictions" / "gqa.jsonl").write_text(json.dumps({"id": 0, "prediction": "red", "answer": "red"}) + "\n")
    (trial_dir / "logs").mkdir(exist_ok=True)
    (trial_dir / "logs" / "rank0.log").write_text(f"trial {number} ran\n")
    return result


def trial_cost(number: int) -> dict:
    """result.json's cost record (trainers/result.trial_cost): trial 0 pre-aligned the shared
    experts (6 GPU-seconds), every later trial hit the stage-1 cache and saved that."""
    process = {"align_expert": 0.0 if number else 6.0, "align_projector": 5.0, "sft": 8.0, "eval": 1.0}
    return {"unit": "gpu_s", "process_s": process, "total_process_s": sum(process.values()), "flops": {},
            "saved": {"stage1_cache": {"process_s": 6.0 if number else 0.0, "hits": 2 if number else 0, "unknown": 0},
                      "feature_cache": {"process_s": 0.0, "forwards": 0, "hits": 0}}}


def greedy_rounds():
    """The paper's greedy rounds from A+B as (round, candidate, experts) lists, decided from the
    paper's Avg values as a controller would."""
    current, rounds = ["A", "B"], [[(0, "base", "A+B")]]
    while len(current) < 6:
        cands = [x for x in "CDEF" if x not in current]
        rnd = [(len(rounds), c, "+".join(current + [c])) for c in cands]
        rounds.append(rnd)
        current = max(((e.split("+")) for _, _, e in rnd), key=lambda e: PAPER_GREEDY["+".join(e)][1])
    return rounds


def scripted_study(storage: str, workdir: Path, tracker=None, fail: set = frozenset(),
                   prune: set = frozenset(), stop_after: int | None = None, name: str = "paper-greedy"):
    """Run the paper's greedy study through Optuna with scripted trials; resumable: trials already
    finished in `storage` are kept. `fail`/`prune` hold expert sets whose trials FAIL/PRUNE."""
    from optuna.trial import TrialState

    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    if tracker is not None:
        tracker.on_study_start(study)
    done = {t.user_attrs.get("experts") for t in study.get_trials() if t.state.is_finished()}
    ran = 0
    for rnd in greedy_rounds():
        for round_no, cand, experts in rnd:
            if experts in done:
                continue
            if stop_after is not None and ran >= stop_after:
                return study
            params = {f"expert_{x}": x in experts.split("+") for x in LETTERS}
            study.enqueue_trial(params, user_attrs={"round": round_no, "candidate": cand, "experts": experts,
                                                   "seed": 0, "attempt": 0})
            trial = study.ask({f"expert_{x}": optuna.distributions.CategoricalDistribution([False, True])
                               for x in LETTERS})
            trial_dir = workdir / "trials" / f"{trial.number:04d}"
            trial.set_user_attr("trial_dir", str(trial_dir))
            if tracker is not None:
                tracker.on_trial_start(study, trial.number, trial_dir)
            result = write_trial_dir(trial_dir, experts, trial.number)
            if experts in fail:
                frozen = study.tell(trial, state=TrialState.FAIL)
            elif experts in prune:
                frozen = study.tell(trial, state=TrialState.PRUNED)
            else:
                frozen = study.tell(trial, result["objective"])
            if tracker is not None:
                tracker.on_trial_end(study, frozen, trial_dir)
            ran += 1
    if tracker is not None:
        tracker.on_study_end(study)
    return study


TINY_BASE = {"experts": [{"preset": "tiny-clip"}], "llm": {"preset": "tiny-llama"}, "data": {"synthetic": {"n_sft": 16}},
             "eval": {"benchmarks": BENCHES, "limit": 4}}


def study_spec(name: str, tmp: Path, **extra):
    """A greedy study over A-F from A+B, validated by explorer.study.spec like a study file."""
    from explorer.study.load import parse_study
    data = {"name": name, "strategy": {"type": "greedy", "base": ["A", "B"], "max_size": 6},
            "search_space": "eagle_tiny", "base_trial": TINY_BASE, "heartbeat_interval_s": 1,
            "grace_period_s": 3, "poll_interval_s": 0.05, **extra}
    return parse_study(data, f"{name}.yaml", tmp)


class PaperRunner:
    """A runner for the real controller: writes a real trial directory with the paper's figures
    for the job's expert set; `fail`/`prune` expert sets raise; `interrupt_at` (n-th call) raises
    KeyboardInterrupt, which stops the controller as a Ctrl-C would."""

    def __init__(self, fail=(), prune=(), interrupt_at=None):
        self.fail, self.prune, self.interrupt_at = set(fail), set(prune), interrupt_at
        self.calls = 0

    def __call__(self, job):
        self.calls += 1
        experts = job.user_attrs["experts"]
        result = write_trial_dir(Path(job.trial_dir), experts, job.number, keep_spec=True)
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        if experts in self.fail:
            raise RuntimeError(f"rank 1 exited with code 1 ({experts})")
        if experts in self.prune:
            job.report(1, 1.0)
            raise optuna.TrialPruned()
        return result
