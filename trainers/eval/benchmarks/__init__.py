"""The benchmark registry: name -> harness. A data root holds one folder per benchmark, named as here
(<data_root>/gqa, <data_root>/pope, ...), each in the layout its module documents."""
from __future__ import annotations

from experts.lookup import Registry
from trainers.eval.base import DEFAULT_PROFILE, Benchmark, UnknownBenchmarkError
from trainers.eval.benchmarks.gqa import GQA
from trainers.eval.benchmarks.mme import MME
from trainers.eval.benchmarks.mmmu import MMMU
from trainers.eval.benchmarks.ocrbench import OCRBench
from trainers.eval.benchmarks.pope import POPE
from trainers.eval.benchmarks.scienceqa_img import ScienceQAImg
from trainers.eval.benchmarks.textvqa import TextVQA

BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark", error=UnknownBenchmarkError)
for _name, _cls in (("gqa", GQA), ("textvqa", TextVQA), ("pope", POPE), ("mme", MME),
                    ("scienceqa_img", ScienceQAImg), ("ocrbench", OCRBench), ("mmmu", MMMU)):
    BENCHMARKS.register(_name, _cls)


def get_benchmark(name: str, profile: str = DEFAULT_PROFILE) -> Benchmark:
    """The harness for `name`, scoring by `profile`'s rules ("official" or "lmms_eval")."""
    return BENCHMARKS.get(name)(profile)


def parse_benchmark_list(text: str | list[str]) -> list[str]:
    """"gqa,pope" or a list -> validated names (unknown -> error listing the known ones)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise ValueError(f"no benchmark names given; known: {', '.join(BENCHMARKS)}")
    for n in names:
        get_benchmark(n)
    return list(dict.fromkeys(names))
