"""LLaVA-format reader: json/jsonl, image checks, skip mode, malformed records, collate."""
import json
import logging

import pytest
import torch
from PIL import Image

from trainers.data.collate import collate, make_collate
from trainers.data.errors import DataError
from trainers.data.llava import LlavaDataset, read_texts
from trainers.data.templates import IGNORE_INDEX, IMAGE_TOKEN
from trainers.data.tokenizer import build_word_tokenizer

RECORDS = [
    {"id": "r0", "image": "red.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "red"}]},
    {"id": "r1", "image": "sub/blue.png", "conversations": [  # no <image> in text: prepended
        {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": "blue"}]},
    {"id": "r2", "conversations": [  # text-only
        {"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "hello there"}]},
]


def _write(path, records, jsonl):
    if jsonl:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    else:
        path.write_text(json.dumps(records, indent=1))
    return path


@pytest.fixture()
def folder(tmp_path):
    img = tmp_path / "images"
    (img / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(img / "red.png")
    Image.new("L", (20, 20), 128).save(img / "sub" / "blue.png")  # greyscale -> RGB
    return img


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = [t["value"] for r in RECORDS for t in r["conversations"]]
    return build_word_tokenizer(texts, tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("jsonl", [False, True])
def test_reads_json_and_jsonl(tmp_path, folder, tok, jsonl):
    path = _write(tmp_path / ("d.jsonl" if jsonl else "d.json"), RECORDS, jsonl)
    ds = LlavaDataset(path, folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128)
    assert len(ds) == 3 and ds.skipped == []
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8  # floats on the device
    assert (item["image"][0] == 255).all() and item["image"][1:].max() == 0
    assert item["has_image"] is True
    grey = ds[1]["image"]
    assert (grey == 128).all()
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert (ds[1]["input_ids"] == image_id).sum() == 1  # prepended
    text = ds[2]
    assert text["has_image"] is False and (text["input_ids"] == image_id).sum() == 0
    answer = [t for t in text["labels"].tolist() if t != IGNORE_INDEX]
    assert tok.convert_ids_to_tokens(answer) == ["hello", "there", "</s>"]
    assert "hello there" in read_texts(path)


def test_missing_image_names_id_and_path(tmp_path, folder, tok):
    (folder / "sub" / "blue.png").unlink()
    path = _write(tmp_path / "d.json", RECORDS, False)
    with pytest.raises(DataError, match=r"record r1 .*sub/blue\.png: file not found"):
        LlavaDataset(path, folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128)


def test_skip_mode_counts_and_reports(tmp_path, folder, tok, caplog):
    (folder / "sub" / "blue.png").write_bytes(b"not a png at all")
    records = RECORDS + [dict(RECORDS[0], id="r3", image="gone.png")]
    path = _write(tmp_path / "d.jsonl", records, True)
    with caplog.at_level(logging.WARNING, logger="trainers.data.llava"):
        ds = LlavaDataset(path, folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128, on_bad_image="skip")
    assert len(ds) == 2
    assert [rid for rid, _ in ds.skipped] == ["r1", "r3"]
    assert "unreadable image" in ds.skipped[0][1] and ds.skipped[1][1] == "file not found"
    assert "skipped 2 of 4 records" in caplog.text
    assert all(ds[i]["image"].sum() > 0 or not ds[i]["has_image"] for i in range(len(ds)))


def test_truncated_image_is_an_error_at_open(tmp_path, folder, tok):
    data = (folder / "red.png").read_bytes()
    (folder / "red.png").write_bytes(data[: len(data) // 2])
    path = _write(tmp_path / "d.json", RECORDS, False)
    with pytest.raises(DataError, match=r"record r0 .*red\.png: unreadable image"):
        LlavaDataset(path, folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"id": "x", "conversations": []}, "'conversations' must be a non-empty list"),
        ({"id": "x", "conversations": [{"from": "gpt", "value": "hi"}]}, r"conversations\[0\]\.from is 'gpt'"),
        ({"id": "x", "conversations": [{"from": "human", "value": "<image> hi"},
                                       {"from": "gpt", "value": "yo"}]}, "no 'image'"),
        ({"id": "x", "conversations": [{"from": "human", "value": "hi"}]}, "no gpt answer"),
        ([1, 2], "a record must be an object"),
    ],
)
def test_malformed_record_names_file_and_line(tmp_path, folder, tok, bad, message):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=rf"d\.jsonl:line 3.*{message}"):
        LlavaDataset(path, folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128)
    _write(tmp_path / "d.json", [RECORDS[0], bad], False)
    with pytest.raises(DataError, match=rf"d\.json:record 1.*{message}"):
        LlavaDataset(tmp_path / "d.json", folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128)


def test_invalid_json_and_bad_args(tmp_path, folder, tok):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"d\.jsonl:line 2: invalid JSON"):
        LlavaDataset(path, folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128)
    good = _write(tmp_path / "g.json", RECORDS, False)
    with pytest.raises(DataError, match="on_bad_image must be 'error' or 'skip'"):
        LlavaDataset(good, folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128, on_bad_image="ignore")
    with pytest.raises(DataError, match="image folder .* does not exist"):
        LlavaDataset(good, tmp_path / "nope", 32, tokenizer=tok, template="vicuna_v1", max_length=128)
    with pytest.raises(DataError, match="data file not found"):
        LlavaDataset(tmp_path / "none.json", folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128)


def test_collate_expands_the_image_token_and_pads_right(tmp_path, folder, tok):
    ds = LlavaDataset(_write(tmp_path / "d.json", RECORDS, False), folder, 16, tokenizer=tok, template="chatml", max_length=128)
    items = [ds[i] for i in range(3)]
    image_id, t = tok.convert_tokens_to_ids(IMAGE_TOKEN), 5
    batch = make_collate(tok.pad_token_id, image_id, t)(items)
    lengths = [it["input_ids"].numel() + (t - 1) * bool(it["has_image"]) for it in items]
    assert batch["input_ids"].shape == (3, max(lengths)) and batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["images"].shape == (2, 3, 16, 16) and batch["images"].dtype == torch.uint8  # text-only row: none
    assert (batch["input_ids"] == image_id).sum(1).tolist() == [t, t, 0]
    ids0 = items[0]["input_ids"].tolist()
    p = ids0.index(image_id)
    row = batch["input_ids"][0].tolist()
    assert row[:p] == ids0[:p] and row[p:p + t] == [image_id] * t and row[p + t:lengths[0]] == ids0[p + 1:]
    assert (batch["labels"][0, p:p + t] == IGNORE_INDEX).all()
    assert batch["labels"][0, p + t:lengths[0]].tolist() == items[0]["labels"][p + 1:].tolist()
    for i, n in enumerate(lengths):
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all() and (batch["labels"][i, n:] == IGNORE_INDEX).all()
    assert batch["num_tokens"] == sum(lengths)
    assert batch["num_targets"] == sum(int((it["labels"][1:] != IGNORE_INDEX).sum()) for it in items)
    with pytest.raises(DataError, match="empty batch"):
        collate([], 0, image_id, t)
    bad = dict(items[2], has_image=True)
    with pytest.raises(DataError, match="item 0 has 0 image tokens but has_image=True"):
        collate([bad], 0, image_id, t)


def test_packed_batch_is_one_row_with_restarting_positions(tmp_path, folder, tok):
    ds = LlavaDataset(_write(tmp_path / "d.json", RECORDS, False), folder, 16, tokenizer=tok, template="chatml", max_length=128)
    items = [ds[i] for i in range(3)]
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    padded = collate(items, tok.pad_token_id, image_id, 4)
    packed = collate(items, tok.pad_token_id, image_id, 4, pack=True)
    lengths = padded["attention_mask"].sum(1).tolist()
    assert packed["input_ids"].shape == (1, sum(lengths)) and packed["num_tokens"] == padded["num_tokens"]
    assert packed["position_ids"][0].tolist() == [j for n in lengths for j in range(n)]
    assert packed["input_ids"][0].tolist() == [x for r, n in zip(padded["input_ids"].tolist(), lengths) for x in r[:n]]
    starts = [sum(lengths[:i]) for i in range(3)]
    assert all(packed["labels"][0, s] == IGNORE_INDEX for s in starts)  # no loss across a boundary
    assert packed["num_targets"] == padded["num_targets"] and torch.equal(packed["images"], padded["images"])
    from trainers.data.collate import padding_fraction

    assert padding_fraction(packed) == 0.0 < padding_fraction(padded)


def test_long_conversations_are_counted_or_an_error(tmp_path, folder, tok):
    path = _write(tmp_path / "d.json", RECORDS, False)
    full = LlavaDataset(path, folder, 16, tokenizer=tok, template="vicuna_v1", max_length=128)
    assert full.truncated == 0
    cut = max(abs(n) for n in full.lengths) - 1
    ds = LlavaDataset(path, folder, 16, tokenizer=tok, template="vicuna_v1", max_length=cut)
    longest = [i for i, n in enumerate(full.lengths) if abs(n) > cut]
    assert ds.truncated == len(longest) >= 1 and all(ds[i]["input_ids"].numel() == cut for i in longest)
    assert [n < 0 for n in ds.lengths] == [False, False, True]  # text-only records are negative (modality)
    with pytest.raises(DataError, match=rf"record r\d .*tokens exceed llm.max_length={cut}"):
        LlavaDataset(path, folder, 16, tokenizer=tok, template="vicuna_v1", max_length=cut, on_too_long="error")


def test_images_are_verified_once_and_remembered(tmp_path, folder, monkeypatch):
    from trainers.data import verify

    (folder / "sub" / "blue.png").write_bytes(b"not a png")
    path = _write(tmp_path / "d.json", RECORDS, False)
    cache, out = tmp_path / "cache", tmp_path / "trial"
    out.mkdir()
    with pytest.raises(DataError, match=r"image .*sub/blue\.png: unreadable image .*1 bad images"):
        verify.write_checks([path], folder, cache, out, "error")
    opened = []
    monkeypatch.setattr(verify, "check_image", lambda p: opened.append(p))
    checks = verify.write_checks([path, path], folder, cache, out, "skip")  # remembered: nothing opened
    assert opened == [] and checks == verify.read_checks(out)
    assert list(checks.values())[0]["bad"].keys() == {"sub/blue.png"}
    Image.new("RGB", (8, 8)).save(folder / "sub" / "blue.png")  # changed file: new key, checked again
    checks = verify.write_checks([path], folder, cache, out, "skip")
    assert len(opened) == 2 and list(checks.values())[0]["bad"] == {}
    with pytest.raises(DataError, match="no image checks"):
        verify.read_checks(tmp_path)


def test_decode_failure_after_open(tmp_path, folder, tok):
    """Images checked at launch (bad_images given) are not reopened: a decode error names the record,
    skip moves on."""
    (folder / "red.png").write_bytes(b"garbage")
    path = _write(tmp_path / "d.json", RECORDS, False)
    ds = LlavaDataset(path, folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128, bad_images={})
    with pytest.raises(DataError, match=r"record r0 .*red\.png: cannot decode"):
        ds[0]
    ds = LlavaDataset(path, folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128, on_bad_image="skip", bad_images={})
    item = ds[0]  # r0 is broken: r1 comes instead
    assert item["has_image"] and (item["image"] == 128).all()
    assert [rid for rid, _ in ds.skipped] == ["r0"]


def test_skips_in_loader_workers_are_counted_in_the_main_process(tmp_path, folder, tok):
    from torch.utils.data import DataLoader

    (folder / "red.png").write_bytes(b"garbage")  # passes no check: bad_images={} (launch saw it fine)
    path = _write(tmp_path / "d.json", RECORDS, False)
    ds = LlavaDataset(path, folder, 32, tokenizer=tok, template="vicuna_v1", max_length=128, on_bad_image="skip", bad_images={},
                      skip_dir=tmp_path / "skips")
    assert ds.skipped == []
    items = list(DataLoader(ds, batch_size=None, num_workers=1))
    assert len(items) == 3 and ds._skipped == []  # the skip happened in the worker process
    assert [rid for rid, _ in ds.skipped] == ["r0"] and "cannot decode" in ds.skipped[0][1]
