"""A trained trial (or an `export-model` directory) as an lmms-eval model: `lmms-eval --model
eagle_explorer --model_args trial=DIR[,batch_size=N,device=cpu]`. Registered through the entry point
group `lmms_eval.models` (pyproject.toml); needs the `lmms` extra (`pip install -e '.[lmms]'`).

Requests are answered as the trial's own evaluation answers them: the task's prompt inside the
trial's chat template, after the image token, the first image of the request resized to the
trial's side, greedy decoding. Log-likelihood requests score the continuation's tokens after that
prompt."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from trainers.data.templates import IMAGE_TOKEN
from trainers.modeling.export import ExportedModel, load_exported

MODEL_ID = "eagle_explorer"


def load_trial_model(path: str | Path, device: str | torch.device = "cpu") -> ExportedModel:
    """An export directory as load_exported reads it, or a trial directory (or its saved model) with
    the template, image side and answer length of its trial.yaml."""
    path = Path(path).expanduser()
    if (path / "inference.json").is_file():
        return load_exported(path, device)
    from trainers.eval.cli import resolve_checkpoint
    from trainers.modeling.eagle import EagleModel
    from trainers.spec import load_trial_spec
    from trainers.stages.recipes import data_image_size

    model_dir, trial_yaml = resolve_checkpoint(path)
    spec = load_trial_spec(trial_yaml)
    info = {"template": spec.llm.template, "image_side": data_image_size(spec), "max_new_tokens": spec.eval.max_new_tokens}
    return ExportedModel(EagleModel.from_pretrained(model_dir).to(device).eval(), info)


def _first_image(visuals: Any) -> Image.Image | None:
    while isinstance(visuals, (list, tuple)) and visuals:
        visuals = visuals[0]
    return visuals if isinstance(visuals, Image.Image) else None


def _cut(text: str, until: list[str]) -> str:
    for stop in until:
        if stop and stop in text:
            text = text[:text.index(stop)]
    return text.strip()


class EagleExplorerLMM(lmms):
    """lmms-eval's simple model interface over ExportedModel.answer (batched) and the model's logits."""

    def __init__(self, trial: str | None = None, batch_size: int | str = 8, device: str = "cpu",
                 exported: ExportedModel | None = None, **_: Any) -> None:
        """From a trial or export directory (`trial`), or a model already in memory (`exported`: a
        trial's own evaluation, trainers/eval/lmms_objective.py)."""
        super().__init__()
        if exported is None:
            if trial is None:
                raise ValueError(f"{MODEL_ID}: give model_args trial=<trial or export directory>")
            exported = load_trial_model(trial, device)
        self.exported = exported
        self.batch_size = int(batch_size)
        self.device = next(exported.model.parameters()).device

    def _visual(self, req: Instance) -> Image.Image | None:
        _, _, doc_to_visual, doc_id, task, split = req.args
        return _first_image(doc_to_visual(self.task_dict[task][split][doc_id]))

    def generate_until(self, requests: list[Instance]) -> list[str]:
        out: list[str] = []
        side = self.exported.info["image_side"]
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start:start + self.batch_size]
            kwargs = [dict(r.args[1] or {}) for r in batch]
            length = max(int(k.get("max_new_tokens") or self.exported.info["max_new_tokens"]) for k in kwargs)
            images = [self._visual(r) or Image.new("RGB", (side, side), (128, 128, 128)) for r in batch]
            questions = [r.args[0].replace(IMAGE_TOKEN, "").strip() for r in batch]  # the trial's own image slot
            answers = self.exported.answer(images, questions, max_new_tokens=length)
            for answer, k in zip(answers, kwargs):
                until = k.get("until") or []
                out.append(_cut(answer, [until] if isinstance(until, str) else list(until)))
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        from trainers.data.collate import expand_image_tokens
        from trainers.data.templates import encode_prompt
        from trainers.eval.runner import to_tensor

        model, info = self.exported.model, self.exported.info
        tok, out = model.tokenizer, []
        for req in requests:
            context, target, _, doc_id, task, split = req.args
            cont = target(self.task_dict[task][split][doc_id]) if callable(target) else target
            cont = cont[0] if isinstance(cont, list) else cont
            image = self._visual(req)
            context = context.replace(IMAGE_TOKEN, "").strip()
            prompt = encode_prompt(f"{IMAGE_TOKEN}\n{context}" if image is not None else context, tok, info["template"])
            cont_ids = tok(str(cont), add_special_tokens=False)["input_ids"]
            ids = torch.tensor(prompt + cont_ids, dtype=torch.long)
            ids, _ = expand_image_tokens(ids, ids.clone(), model.image_token_id, model.num_image_tokens)
            images = to_tensor([image], info["image_side"]).to(self.device) if image is not None else None
            with torch.no_grad():
                logits = model(ids[None].to(self.device), torch.ones_like(ids)[None].to(self.device), images=images).logits[0]
            n = len(cont_ids)
            logp = torch.log_softmax(logits[-n - 1:-1].float(), dim=-1)
            want = torch.tensor(cont_ids, device=logp.device)
            out.append((float(logp.gather(1, want[:, None]).sum()), bool((logp.argmax(-1) == want).all())))
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(f"{MODEL_ID}: multi-round generation is not supported (one image, one turn)")


def manifest() -> ModelManifest:
    """The entry point lmms-eval loads (group lmms_eval.models)."""
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.EagleExplorerLMM")
