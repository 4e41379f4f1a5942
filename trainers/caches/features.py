"""Stage-2 feature cache: a frozen expert's outputs over the stage-2 data, computed once and read by
every trial that has that expert (cache_dir/features/<key>/). An entry is the expert's output per
item, float16, in one .npy shard per rank that wrote it (item i in shard i % W, row i // W, read
memory-mapped) plus the record each item read (`src`), and META last. Entries are claimed like the
stage-1 cache's and published by one rename; the directory is bounded by train.feature_cache.max_gb
(least recently used entries are evicted, each eviction logged and returned)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from trainers.caches.stage1 import META, STAGE1_CODE, KeyedCache, code_version

logger = logging.getLogger(__name__)

FEATURE_CODE = STAGE1_CODE + ("trainers/caches/features.py", "trainers/stages/features.py")
GB = 1e9


class FeatureCacheError(RuntimeError):
    """The feature cache cannot hold what a trial needs (one line naming the setting)."""


def feature_key(stage1_key: str, data_identity: dict[str, Any], *, records: str, image_size: int, precision: str,
                code: str | None = None) -> str:
    """sha256 over what an expert's stage-2 features depend on: its stage-1 result (that entry's key),
    the data (identity and the records in dataset order), the image size, the precision and the code."""
    blob = {"stage1": stage1_key, "data": data_identity, "records": records, "image_size": image_size,
            "precision": precision, "code": code if code is not None else code_version(FEATURE_CODE)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:24]


def records_digest(dataset) -> str:
    """sha256 of the dataset's usable records (id and image, in order): skipped images change it."""
    h = hashlib.sha256()
    for r in dataset.records:
        h.update(f"{r.id}\0{r.image}\n".encode())
    return h.hexdigest()[:24]


def entry_bytes(n_items: int, tokens: int, dim: int) -> int:
    return n_items * tokens * dim * 2 + n_items * 8  # float16 rows + the int64 record index


def shard_rows(n_items: int, world: int, rank: int) -> list[int]:
    return list(range(rank, n_items, world))


class FeatureEntry:
    """Read side of one entry: `row(i)` the float16 [T, D] output of item i, `src(i)` its record.
    Shards open lazily per process (DataLoader workers pickle this without the maps)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta = json.loads((path / META).read_text())
        self.world = int(self.meta["world_size"])
        self._maps: list[np.ndarray] | None = None
        self._src: list[np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None, "_src": None}

    def _open(self) -> None:
        self._maps = [np.load(self.path / f"shard{r}.npy", mmap_mode="r") for r in range(self.world)]
        self._src = [np.load(self.path / f"src{r}.npy") for r in range(self.world)]

    def row(self, i: int) -> np.ndarray:
        if self._maps is None:
            self._open()
        return self._maps[i % self.world][i // self.world]

    def sources(self) -> np.ndarray:
        if self._src is None:
            self._open()
        out = np.empty(int(self.meta["items"]), dtype=np.int64)
        for r, s in enumerate(self._src):
            out[r::self.world] = s
        return out


class FeatureCache(KeyedCache):
    SUBDIR = "features"

    def staging(self, key: str) -> Path:
        """The claim holder's temporary entry (every rank of that trial writes its shard there)."""
        return self.root / f".tmp_{key}"

    def begin(self, key: str) -> Path:
        tmp = self.staging(key)
        shutil.rmtree(tmp, ignore_errors=True)  # a crashed attempt's leftover: only the claim holder writes here
        tmp.mkdir(parents=True)
        return tmp

    def open(self, key: str) -> FeatureEntry:
        if not self.has(key):
            raise FeatureCacheError(f"feature cache {self.path(key)}: no completed entry (evicted after its claim? "
                                    "raise train.feature_cache.max_gb)")
        os.utime(self.path(key) / META)  # last use: what eviction orders by
        return FeatureEntry(self.path(key))

    def entries(self) -> list[tuple[str, int, float]]:
        """(key, bytes, last use) of every complete entry."""
        out = []
        for d in self.root.iterdir():
            if d.is_dir() and not d.name.startswith(".") and (d / META).is_file():
                out.append((d.name, sum(f.stat().st_size for f in d.iterdir()), (d / META).stat().st_mtime))
        return out

    def size_bytes(self) -> int:
        return sum(b for _, b, _ in self.entries())

    def make_room(self, need: int, max_bytes: float, keep: set[str]) -> list[dict[str, Any]]:
        """Evict least recently used entries (never those in `keep`) until `need` more bytes fit
        under max_bytes; returns what was evicted. An entry is renamed aside before removal, so a
        trial that already reads it keeps its open maps."""
        entries = sorted(self.entries(), key=lambda e: e[2])
        total = sum(b for _, b, _ in entries)
        evicted = []
        for key, size, used in entries:
            if total + need <= max_bytes:
                break
            if key in keep:
                continue
            aside = self.root / f".evicted_{key}_{os.getpid()}"
            try:
                self.path(key).rename(aside)
            except FileNotFoundError:
                continue  # another trial evicted it first
            shutil.rmtree(aside, ignore_errors=True)
            total -= size
            evicted.append({"key": key, "bytes": size, "last_used": used})
            logger.warning("feature cache: evicted %s (%.3f GB, last used %s) to stay under %.3f GB", key,
                           size / GB, time.strftime("%Y-%m-%d %H:%M", time.localtime(used)), max_bytes / GB)
        if total + need > max_bytes:
            raise FeatureCacheError(f"train.feature_cache.max_gb={max_bytes / GB:g}: {need / GB:.3f} GB more do not fit "
                                    f"beside the {total / GB:.3f} GB this trial's own entries and others in use hold")
        return evicted
