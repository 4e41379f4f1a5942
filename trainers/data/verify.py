"""Images are verified once per dataset, at launch: the result is remembered under
cache_dir/verified/<key>.json, the key a hash of the records file's bytes and each referenced
image's path, size and mtime, so a later trial (or stage, or rank) on the same data opens nothing."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from trainers.data.errors import DataError
from trainers.data.images import check_image
from trainers.data.records import read_records
from trainers import trial_dir as TD

logger = logging.getLogger(__name__)



def _key(records_path: Path, folder: Path | None, images: list[str]) -> str:
    h = hashlib.sha256(records_path.read_bytes())
    h.update(str(folder.resolve() if folder else "").encode())
    for name in images:
        try:
            st = (folder / name).stat()  # type: ignore[operator]
            h.update(f"\0{name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"\0{name}\0missing".encode())
    return h.hexdigest()[:24]


def verify_dataset(records_path: str | Path, folder: str | Path | None, cache_dir: str | Path) -> dict[str, Any]:
    """{"key", "n_images", "bad": {image: reason}} for one LLaVA file, from the cache when known."""
    path, folder = Path(records_path), Path(folder) if folder is not None else None
    images = sorted({r.image for r in read_records(path) if r.image is not None})
    if images and folder is None:
        raise DataError(f"{path}: records have images but no image_folder was given")
    key = _key(path, folder, images)
    memo = Path(cache_dir) / "verified" / f"{key}.json"
    if memo.is_file():
        return json.loads(memo.read_text())
    bad = {name: reason for name in images if (reason := check_image(folder / name)) is not None}  # type: ignore[operator]
    result = {"key": key, "file": str(path), "n_images": len(images), "bad": bad}
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(memo)
    logger.info("%s: verified %d images (%d bad), remembered as %s", path, len(images), len(bad), key)
    return result


def write_checks(paths: list[Path], folder: Path | None, cache_dir: Path, out_dir: Path,
                 on_bad_image: str) -> dict[str, dict[str, Any]]:
    """Verify every dataset of a trial; error mode fails on the first bad image (naming it and the
    count). Writes out_dir/data_checks.json for the workers."""
    checks: dict[str, dict[str, Any]] = {}
    for p in dict.fromkeys(paths):
        res = verify_dataset(p, folder, cache_dir)
        if res["bad"] and on_bad_image == "error":
            name, reason = next(iter(res["bad"].items()))
            raise DataError(f"{p}: image {Path(folder or '') / name}: {reason} ({len(res['bad'])} bad images; "
                            "data.on_bad_image: skip drops them)")
        checks[str(Path(p).resolve())] = res
    (out_dir / TD.DATA_CHECKS).write_text(json.dumps(checks, indent=1))
    return checks


def read_checks(out_dir: Path) -> dict[str, dict[str, Any]]:
    path = out_dir / TD.DATA_CHECKS
    if not path.is_file():
        raise DataError(f"{path}: no image checks (a trial's images are verified by trainers.launch before it starts)")
    return json.loads(path.read_text())
