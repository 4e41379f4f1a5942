import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests never reach a hub: everything is tiny, random-init and local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tiny ops on 2 shared cores run far faster single-threaded than under thread contention.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def postgres_url():
    url = os.environ.get("EAGLE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("EAGLE_TEST_POSTGRES_URL is not set (PostgreSQL tests need a server)")
    return url
