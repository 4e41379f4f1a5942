"""Evaluation: the paper's seven benchmarks (harnesses scored by their official rules), the paper's
Avg aggregate, a synthetic suite in the same file formats, and the distributed generation runner."""
from trainers.eval.aggregate import objective, paper_avg, weighted_mean
from trainers.eval.base import BenchmarkDataError, EvalItem, UnknownBenchmarkError, slim_subset
from trainers.eval.benchmarks import BENCHMARKS, get_benchmark, parse_benchmark_list

__all__ = ["BENCHMARKS", "BenchmarkDataError", "EvalItem", "UnknownBenchmarkError", "evaluate",
           "get_benchmark", "objective", "paper_avg", "parse_benchmark_list", "slim_subset",
           "weighted_mean", "write_suite"]


def __getattr__(name):  # the runner and suite pull in torch / the data generator: import on use
    if name == "evaluate":
        from trainers.eval.runner import evaluate
        return evaluate
    if name == "write_suite":
        from trainers.eval.synthetic_suite import write_suite
        return write_suite
    raise AttributeError(name)
