"""What every benchmark harness shares: the item record, the harness interface, errors, slim subsets
and the small file readers that name the line or record at fault."""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from PIL import Image

from trainers.data.errors import UnknownNameError
from trainers.data.prompts import (MULTIPLE_CHOICE_SUFFIX, SHORT_ANSWER_SUFFIX, YES_NO_SUFFIX,
                                    short_answer_question)
from trainers.spec import ScorerProfile

# "official": each benchmark's own script (as LLaVA-1.5 ran it), quirks included; "lmms_eval": the
# rules of EvolvingLMMs-Lab/lmms-eval's task files. Published numbers come from both.
SCORER_PROFILES: tuple[str, ...] = get_args(ScorerProfile)
DEFAULT_PROFILE = "official"


class BenchmarkDataError(ValueError):
    """A benchmark copy that is missing or malformed; the message names the path/line/record."""


class UnknownBenchmarkError(UnknownNameError):
    """An unknown benchmark name; the message lists the known names."""


def check_profile(profile: str) -> str:
    if profile not in SCORER_PROFILES:
        raise UnknownNameError("scorer profile", profile, SCORER_PROFILES)
    return profile


@dataclass
class EvalItem:
    """One question. `image` is a file path or encoded image bytes (parquet layouts); `prompt` is
    the LLaVA-1.5 evaluation prompt (question + its suffix, without the chat template)."""

    qid: str
    image: str | bytes
    prompt: str
    answer: Any
    meta: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        try:
            src = io.BytesIO(self.image) if isinstance(self.image, bytes) else self.image
            with Image.open(src) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as err:
            where = "embedded image" if isinstance(self.image, bytes) else self.image
            raise BenchmarkDataError(f"question {self.qid}: cannot read image {where}: {err}") from None


class Benchmark:
    """A harness: `load(root)` reads the local copy (root = the benchmark's own folder), builds the
    prompts; `score_item` scores one prediction (the per-line score written to predictions);
    `summarize` computes the figures from all predictions. Both follow `profile`'s rules. The
    headline figure is under the benchmark's name; sub-figures are "<name>/<part>"."""

    name: str = ""
    layout: str = ""  # one line: which on-disk layout the loader reads

    def __init__(self, profile: str = DEFAULT_PROFILE) -> None:
        self.profile = check_profile(profile)

    def load(self, root: Path) -> list[EvalItem]:
        raise NotImplementedError

    def score_item(self, item: EvalItem, prediction: str) -> float:
        raise NotImplementedError

    def summarize(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> dict[str, float]:
        raise NotImplementedError

    def undefined(self, summary: dict[str, float]) -> str | None:
        """Why `summary`'s headline is undefined (e.g. an F1 with no positive predictions), else None."""
        return None

    def group_key(self, item: EvalItem) -> str:
        """Items scored together (MME's image pairs) share a key so a slim subset keeps them whole."""
        return item.qid

    def check_lengths(self, items: Sequence[EvalItem], predictions: Sequence[str]) -> None:
        if len(items) != len(predictions):
            raise ValueError(f"{self.name}: {len(items)} items but {len(predictions)} predictions")
        if not items:
            raise ValueError(f"{self.name}: nothing to score (0 items)")


def _stable_rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def slim_subset(bench: Benchmark, items: Sequence[EvalItem], n: int | None, seed: int = 0) -> list[EvalItem]:
    """A deterministic sample of about n items (whole groups, so n may be exceeded by a pair's
    partner); ranked by a hash of (seed, group key), so every process and run picks the same
    items. The original order is kept."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        raise ValueError(f"slim subset size must be positive, got {n}")
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(bench.group_key(item), []).append(i)
    chosen: list[int] = []
    for key in sorted(groups, key=lambda k: _stable_rank(seed, k)):
        if len(chosen) >= n:
            break
        chosen.extend(groups[key])
    return [items[i] for i in sorted(chosen)]


# ---- readers that name the file / line / record at fault --------------------------------------

def require_file(bench: str, path: Path, what: str) -> Path:
    if not path.is_file():
        raise BenchmarkDataError(f"{bench}: missing {what}: looked for {path}")
    return path


def require_dir(bench: str, path: Path, what: str) -> Path:
    if not path.is_dir():
        raise BenchmarkDataError(f"{bench}: missing {what}: looked for directory {path}")
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BenchmarkDataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise BenchmarkDataError(f"{path}: line {lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(rec, dict):
            raise BenchmarkDataError(f"{path}: line {lineno}: expected a JSON object")
        rec["__line__"] = lineno
        out.append(rec)
    return out


def field_of(rec: dict[str, Any], key: str, where: str, types: type | tuple[type, ...] = object) -> Any:
    """rec[key], or an error naming the record (`where`) and the field."""
    if key not in rec:
        raise BenchmarkDataError(f"{where}: missing field {key!r}")
    value = rec[key]
    if not isinstance(value, types):
        raise BenchmarkDataError(f"{where}: field {key!r} has type {type(value).__name__}")
    return value


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0


def short_answer_prompt(question: str) -> str:
    """LLaVA-1.5's short-answer prompt: the question + "\\nAnswer the question using a single word or
    phrase.", unless it already ends with an answer-format instruction of trainers.data.prompts
    (the synthetic suite's yes/no questions carry "Please answer yes or no." as the SFT data does,
    and must reach the model exactly as trained)."""
    q = question.rstrip()
    if q.endswith((SHORT_ANSWER_SUFFIX, YES_NO_SUFFIX, MULTIPLE_CHOICE_SUFFIX)):
        return q
    return short_answer_question(q)
