"""The DataLoader path: the step-indexed sampler (exact resume), modality-length grouping, worker
processes giving the same training as the main process, and num_workers never quietly ignored."""
from __future__ import annotations

import json
import multiprocessing

import pytest
import torch

from experts import get_preset
from trainers.data.collate import make_collate
from trainers.data.llava import LlavaDataset
from trainers.data.synthetic import IMAGE_SUBDIR, vocab_texts, write_sft
from trainers.data.tokenizer import build_word_tokenizer
from trainers.training.distributed import DistEnv
from trainers.training.loop import StageJob
from trainers.training.engines import make_engine
from trainers.training.loader import LoaderError, LoaderOptions, StepBatchSampler, check_workers, rank_micro_batches
from trainers.training.metrics import MetricsWriter
from trainers.spec import LLMSpec, StageSpec, TrialSpec
from trainers.stages.recipes import build_model, freeze_for_stage, param_groups

HP = StageSpec(lr=1e-3, epochs=2, global_batch_size=8, micro_batch_size=2, warmup_ratio=0.1)


def test_sampler_started_at_step_k_continues_the_full_order():
    full = list(StepBatchSampler(40, HP, DistEnv(1, 2), accum=2, seed=3, start=0, steps=10))
    later = list(StepBatchSampler(40, HP, DistEnv(1, 2), accum=2, seed=3, start=4, steps=10))
    assert len(full) == 20 and later == full[8:]
    assert full[:2] == rank_micro_batches(40, 0, HP, DistEnv(1, 2), accum=2, seed=3)


def test_grouping_keeps_each_global_batch_and_cuts_padding():
    hp = StageSpec(global_batch_size=32, micro_batch_size=4)
    g = torch.Generator().manual_seed(0)
    lengths = [int(n) * (1 if i % 3 else -1) for i, n in enumerate(torch.randint(5, 200, (96,), generator=g))]
    width = [abs(n) + (15 if n > 0 else 0) for n in lengths]  # what the LLM sees: 16 image tokens
    padding = {False: 0, True: 0}
    for step in range(6):
        plain = [mb for r in range(2) for mb in rank_micro_batches(96, step, hp, DistEnv(r, 2), accum=4, seed=1)]
        grouped = [mb for r in range(2) for mb in rank_micro_batches(96, step, hp, DistEnv(r, 2), accum=4, seed=1, lengths=lengths)]
        assert sorted(i for mb in plain for i in mb) == sorted(i for mb in grouped for i in mb)  # same global batch
        assert len(grouped) == 8 and all(len(mb) == 4 for mb in grouped)
        for key, mbs in ((False, plain), (True, grouped)):
            padding[key] += sum(max(width[i] for i in mb) - width[i] for mb in mbs for i in mb)
        assert sum(len({lengths[i] > 0 for i in mb}) > 1 for mb in grouped) <= 1  # modalities meet once at most
    assert padding[True] < 0.5 * padding[False], padding  # 0.39 on these lengths


def test_num_workers_is_used_or_an_error(monkeypatch):
    check_workers(2)
    with pytest.raises(LoaderError, match="num_workers must be >= 0"):
        check_workers(-1)

    class Daemon:
        daemon = True

    monkeypatch.setattr(multiprocessing, "current_process", lambda: Daemon())
    with pytest.raises(LoaderError, match="num_workers=2: this process is daemonic"):
        check_workers(2)
    check_workers(0)


def _run(tmp_path, name, num_workers, group, stop_after=None):
    d = tmp_path / "data"
    if not d.exists():
        write_sft(d, 32, seed=0, image_size=32)
    tok = build_word_tokenizer(vocab_texts(), tmp_path / "tok")
    model = build_model([get_preset("tiny-clip")], "channel_concat", {}, "mlp2x_gelu", llm_spec=LLMSpec(preset="tiny-llama"),
                        tokenizer=tok, seed=0)
    spec = TrialSpec(experts=[{"preset": "tiny-clip"}], llm={"preset": "tiny-llama"}, data={"synthetic": {}})
    freeze_for_stage(model, "sft", spec)
    ds = LlavaDataset(d / "sft.json", d / IMAGE_SUBDIR, 32, tokenizer=tok, template="vicuna_v1", max_length=128)
    metrics = tmp_path / f"{name}.jsonl"
    engine = make_engine("ddp", DistEnv(), MetricsWriter(metrics), seed=0, checkpoint_every=2, bf16=False)
    engine.stop_after = stop_after
    job = StageJob("sft", "sft", model, param_groups(model, HP), ds,
                   make_collate(tok.pad_token_id, model.image_token_id, model.num_image_tokens), HP,
                   loader=LoaderOptions(num_workers=num_workers, group_by_length=group))
    try:
        engine.run(job, tmp_path / f"ckpt_{name}")
    except SystemExit:
        pass
    return [json.loads(line)["loss"] for line in metrics.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True])
def test_workers_and_resume_give_the_same_losses(tmp_path, group):
    main = _run(tmp_path, "main", 0, group)
    assert len(main) == 8
    assert _run(tmp_path, "workers", 2, group) == main
    assert _run(tmp_path, "resumed", 2, group, stop_after=3) == main[:3]
    assert _run(tmp_path, "resumed", 2, group) == main  # resumed from step 2: steps 3..8 as before
