"""Reading and validating LLaVA-format records (JSON list or JSONL) before any training starts."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from trainers.data.errors import DataError
from trainers.data.templates import IMAGE_TOKEN

logger = logging.getLogger(__name__)

ROLES = ("human", "gpt")


@dataclass(frozen=True)
class LlavaRecord:
    id: str
    image: str | None  # relative to the image folder
    conversations: list[dict]
    where: str  # "file:line N" / "file:record N", for error messages


def _validate(raw, where: str) -> LlavaRecord:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: a record must be an object, got {type(raw).__name__}")
    rid = raw.get("id", None)
    if rid is not None and not isinstance(rid, (str, int)):
        raise DataError(f"{where}: 'id' must be a string or integer")
    rid = str(rid) if rid is not None else where
    image = raw.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise DataError(f"{where} (id {rid}): 'image' must be a non-empty string (one image per record)")
    convs = raw.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise DataError(f"{where} (id {rid}): 'conversations' must be a non-empty list")
    n_image_tokens = 0
    for i, turn in enumerate(convs):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise DataError(f"{where} (id {rid}): conversations[{i}] needs a string 'value'")
        expected = ROLES[i % 2]
        if turn.get("from") != expected:
            raise DataError(
                f"{where} (id {rid}): conversations[{i}].from is {turn.get('from')!r}, expected {expected!r} "
                "(turns alternate human, gpt)"
            )
        n_image_tokens += turn["value"].count(IMAGE_TOKEN)
        if turn["from"] == "gpt" and IMAGE_TOKEN in turn["value"]:
            raise DataError(f"{where} (id {rid}): conversations[{i}] is a gpt answer containing {IMAGE_TOKEN}")
    if len(convs) < 2:
        raise DataError(f"{where} (id {rid}): conversation has no gpt answer")
    if image is None and n_image_tokens:
        raise DataError(f"{where} (id {rid}): text has {IMAGE_TOKEN} but the record has no 'image'")
    if n_image_tokens > 1:
        raise DataError(f"{where} (id {rid}): {n_image_tokens} {IMAGE_TOKEN} tokens, expected at most one")
    convs = [{"from": t["from"], "value": t["value"]} for t in convs]
    if image is not None and n_image_tokens == 0:
        # LLaVA convention: an image record without the token gets it before the first question.
        convs[0] = {"from": "human", "value": f"{IMAGE_TOKEN}\n{convs[0]['value']}"}
    return LlavaRecord(id=rid, image=image, conversations=convs, where=where)


def read_records(path: str | Path) -> list[LlavaRecord]:
    """All records of a .json (a list) or .jsonl file, validated; errors name file and line/index."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    text = path.read_text(encoding="utf-8")
    records: list[LlavaRecord] = []
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:line {lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: invalid JSON: {err.msg}") from None
            records.append(_validate(raw, where))
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:line {err.lineno}: invalid JSON: {err.msg}") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: a LLaVA .json file holds a list of records (use .jsonl for one per line)")
        records = [_validate(raw, f"{path}:record {i}") for i, raw in enumerate(data)]
    n_dupes = len(records) - len({r.id for r in records})
    if n_dupes:  # real LLaVA mixes repeat ids; messages then also carry file:line
        logger.warning("%s: %d records share an id with an earlier one", path, n_dupes)
    if not records:
        raise DataError(f"{path}: no records")
    return records
