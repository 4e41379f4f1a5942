"""Stage-1 (pre-alignment) cache: an expert's aligned weights keyed by a content hash of everything
that determines them, shared by every trial of a study (cache_dir/stage1/<hash>/)."""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from trainers.caches.claims import FileClaim

logger = logging.getLogger(__name__)

META = "meta.json"
ROOT = Path(__file__).resolve().parents[2]  # the repository (this file is trainers/caches/stage1.py)
# the code a stage-1 result depends on: the experts, the model, the data pipeline, the training loop
STAGE1_CODE = ("experts", "trainers/data", "trainers/training", "trainers/modeling", "trainers/expert_entries.py",
               "trainers/stages/recipes.py", "trainers/stages/pre_align.py")


def code_version(parts: tuple[str, ...] = STAGE1_CODE, root: Path | None = None) -> str:
    """sha256 over the contents of the source files of `parts` (default: stage 1's), sorted by
    content and blind to their paths: a change to that code is a new cache version (no constant to
    bump), while moving or renaming a file keeps every cached entry."""
    root, files = root or ROOT, set()
    for part in parts:
        p = root / part
        if not p.exists():
            raise FileNotFoundError(f"cache code part {part!r} is not under {root}: update the cache's code list")
        files |= set(p.rglob("*.py")) if p.is_dir() else {p}
    digests = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()[:16]


def file_identity(path: str | Path) -> dict[str, Any]:
    """Content hash of a data file (sha256), so a changed file changes the key."""
    path = Path(path)
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"file": path.name, "sha256": h.hexdigest()}


def stage1_key(expert_config: dict[str, Any], *, align_llm: dict[str, Any], data_identity: dict[str, Any],
               hyper_params: dict[str, Any], seed: int, template: str, projector: str, precision: str,
               code: str) -> str:
    """sha256 over a canonical JSON of what determines the stage-1 result."""
    blob = {"code": code, "expert": expert_config, "llm": align_llm, "data": data_identity,
            "hp": hyper_params, "seed": seed, "template": template, "projector": projector,
            "precision": precision}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:24]


class KeyedCache:
    """Entries cache_dir/<SUBDIR>/<key>/ (complete once META exists), claimed across processes."""

    SUBDIR = ""

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = Path(cache_dir) / self.SUBDIR
        self.root.mkdir(parents=True, exist_ok=True)
        self._claims: dict[int, FileClaim] = {}
        self._tokens = itertools.count()

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.path(key) / META).is_file()

    def meta(self, key: str) -> dict[str, Any]:
        return json.loads((self.path(key) / META).read_text())

    def try_lock(self, key: str) -> int | None:
        """Non-blocking claim (an O_EXCL lock file with a heartbeat, safe on NFS): a token for
        `unlock`, or None while another process holds it."""
        claim = FileClaim(self.root / f"{key}.lock").acquire()
        if claim is None:
            return None
        token = next(self._tokens)
        self._claims[token] = claim
        return token

    def unlock(self, token: int) -> None:
        self._claims.pop(token).release()

    def publish(self, key: str, tmp: Path, meta: dict[str, Any]) -> Path:
        """Make the filled temporary dir `tmp` the entry `key` (META written last, then one rename)."""
        final = self.path(key)
        (tmp / META).write_text(json.dumps({**meta, "key": key, "created": time.time()}, indent=2))
        if final.exists():  # an incomplete leftover (no meta): moved aside, never deleted under a reader
            final.rename(self.root / f".stale_{key}_{os.getpid()}_{int(time.time())}")
        tmp.rename(final)
        logger.info("%s cache: stored %s", self.SUBDIR, final)
        return final


class Stage1Cache(KeyedCache):
    SUBDIR = "stage1"

    def expert_dir(self, key: str) -> Path:
        if not self.has(key):
            raise FileNotFoundError(f"stage-1 cache {self.path(key)}: no completed entry")
        return self.path(key) / "expert"

    @contextmanager
    def lock(self, key: str, poll_s: float = 0.5) -> Iterator[None]:
        """Exclusive across processes, trials and nodes; the holder trains, the others wait and reuse."""
        waited = False
        while (token := self.try_lock(key)) is None:
            if not waited:
                logger.info("stage-1 %s is being trained by another trial; waiting", key)
                waited = True
            time.sleep(poll_s)
        try:
            yield
        finally:
            self.unlock(token)

    def commit(self, key: str, write_expert, meta: dict[str, Any]) -> Path:
        """Atomically publish an entry: write_expert(dir) fills a temporary dir that is then renamed."""
        tmp = self.root / f".tmp_{key}_{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_expert(tmp / "expert")
        return self.publish(key, tmp, meta)
