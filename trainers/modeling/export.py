"""A trained trial as a self-contained model directory (`eagle-explore export-model TRIAL_DIR OUT`):
the SFT model as saved (experts, fusion, projector and LLM in safetensors, their configs, the
tokenizer), inference.json (chat template, image side, answer length, provenance and scores) and a
model card. `load_exported(OUT)` rebuilds it for inference outside a study, prompting it as the
trial's evaluation did."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from trainers import trial_dir as TD

INFERENCE = "inference.json"
CARD = "README.md"
FORMAT = "eagle-explorer-model"
VERSION = 1
_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")  # pickles: an export holds safetensors only


class ExportError(RuntimeError):
    """The trial cannot be exported, or a directory is not an export (one line)."""


def _provenance(trial_dir: Path) -> dict[str, Any]:
    result_path = trial_dir / TD.RESULT
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    study = trial_dir.parent.name if trial_dir.parent.parent.name == "trials" else None  # <workdir>/trials/<study>/<trial>
    return {"study": study, "trial_dir": str(trial_dir), "objective_name": result.get("objective_name"),
            "objective": result.get("objective"), "objective_ci": result.get("objective_ci"),
            "scores": {k: v for k, v in (result.get("scores") or {}).items() if "/" not in k},
            "blind_scores": {k: v for k, v in (result.get("blind_scores") or {}).items() if "/" not in k}}


def _card(info: dict[str, Any]) -> str:
    lines = [f"# {info['mixture']} ({info['trial']})", "",
             f"An Eagle-style multimodal model trained by Eagle Explorer: vision experts {', '.join(info['experts'])} "
             f"({info['fusion']} fusion, {info['projector']} projector) and the LLM {info['llm']}, "
             f"chat template {info['template']}.", ""]
    if info["study"]:
        lines += [f"Study: {info['study']}; trial directory: {info['trial_dir']}.", ""]
    if info["scores"]:
        blind = info["blind_scores"]
        lines += ["| benchmark | score |" + (" blind |" if blind else ""), "|---|---|" + ("---|" if blind else "")]
        lines += [f"| {b} | {s:.2f} |" + (f" {blind[b]:.2f} |" if b in blind else " |" if blind else "")
                  for b, s in info["scores"].items()]
        lines += ["", f"Objective ({info['objective_name']}): {info['objective']:.2f}", ""]
    lines += ["## Load", "", "```python", "from trainers.modeling.export import load_exported",
              "", "model = load_exported(\"THIS_DIRECTORY\")",
              "print(model.answer([image], [\"What is the colour of the shape?\"]))  # PIL images, questions",
              "```", ""]
    return "\n".join(lines)


def export_model(checkpoint: str | Path, out: str | Path) -> Path:
    """Writes the export of a finished trial (or of a saved model inside one) to `out`, which must
    not exist or be empty; written aside and renamed into place, so a failed export leaves nothing."""
    from trainers.eval.cli import resolve_checkpoint
    from trainers.expert_entries import resolve_expert
    from trainers.spec import load_trial_spec
    from trainers.stages.recipes import data_image_size

    try:
        model_dir, trial_yaml = resolve_checkpoint(checkpoint)
    except FileNotFoundError as err:
        raise ExportError(str(err)) from None
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty directory")
    pickled = [str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.suffix in _WEIGHT_SUFFIXES]
    if pickled:
        raise ExportError(f"{model_dir}: weights not in safetensors: {', '.join(pickled[:3])}")
    spec = load_trial_spec(trial_yaml)
    cfgs = [resolve_expert(e) for e in spec.experts]
    info = {"format": FORMAT, "version": VERSION, "trial": spec.name,
            "mixture": "+".join(c.letter or c.name for c in cfgs), "experts": [c.name for c in cfgs],
            "fusion": spec.fusion.name, "projector": spec.projector.type,
            "llm": spec.llm.preset or spec.llm.source, "template": spec.llm.template,
            "image_side": data_image_size(spec), "max_new_tokens": spec.eval.max_new_tokens,
            **_provenance(trial_yaml.parent)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(model_dir, tmp)
        (tmp / INFERENCE).write_text(json.dumps(info, indent=2) + "\n")
        (tmp / CARD).write_text(_card(info))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass
class _Question:  # what the evaluation's generator reads of an item
    image: Image.Image
    prompt: str

    def load_image(self) -> Image.Image:
        return self.image


@dataclass
class ExportedModel:
    model: Any  # trainers.modeling.eagle.EagleModel, in eval mode
    info: dict[str, Any]

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str],
               max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers, one per (image, question), prompted as the trial's evaluation prompted."""
        from trainers.eval.runner import Generator

        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        gen = Generator(self.model, self.model.tokenizer, self.info["template"],
                        max_new_tokens=max_new_tokens or self.info["max_new_tokens"], side=self.info["image_side"])
        return gen([_Question(im, q) for im, q in zip(images, questions)])


def read_info(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    file = path / INFERENCE
    if not file.is_file():
        raise ExportError(f"{path}: no {INFERENCE} (not a directory written by eagle-explore export-model)")
    info = json.loads(file.read_text())
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise ExportError(f"{file}: format {info.get('format')!r} version {info.get('version')!r}; "
                          f"this code reads {FORMAT!r} version {VERSION}")
    return info


def load_exported(path: str | Path, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> ExportedModel:
    """The exported model on `device` in `dtype`, ready for `answer(images, questions)`."""
    from trainers.modeling.eagle import EagleModel

    info = read_info(path)
    model = EagleModel.from_pretrained(Path(path).expanduser(), dtype=dtype).to(device).eval()
    return ExportedModel(model, info)
