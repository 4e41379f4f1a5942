"""LLaVA-format reader: json/jsonl, image checks, skip mode, malformed records, collate."""
import json
import logging

import pytest
import torch
from PIL import Image

from trainers.data.collate import collate, count_supervised_tokens, count_text_tokens, make_collate
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
    ds = LlavaDataset(path, folder, 32, tok, "vicuna_v1", 128)
    assert len(ds) == 3 and ds.skipped == []
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert torch.allclose(item["image"][0], torch.ones(32, 32)) and item["image"][1:].abs().max() == 0
    assert item["has_image"] is True
    grey = ds[1]["image"]
    assert torch.allclose(grey, torch.full_like(grey, 128 / 255))
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
        LlavaDataset(path, folder, 32, tok, "vicuna_v1", 128)


def test_skip_mode_counts_and_reports(tmp_path, folder, tok, caplog):
    (folder / "sub" / "blue.png").write_bytes(b"not a png at all")
    records = RECORDS + [dict(RECORDS[0], id="r3", image="gone.png")]
    path = _write(tmp_path / "d.jsonl", records, True)
    with caplog.at_level(logging.WARNING, logger="trainers.data.llava"):
        ds = LlavaDataset(path, folder, 32, tok, "vicuna_v1", 128, on_bad_image="skip")
    assert len(ds) == 2
    assert [rid for rid, _ in ds.skipped] == ["r1", "r3"]
    assert "unreadable image" in ds.skipped[0][1] and ds.skipped[1][1] == "file not found"
    assert "skipped 2 of 4 records" in caplog.text
    assert all(ds[i]["image"].abs().sum() > 0 or not ds[i]["has_image"] for i in range(len(ds)))


def test_truncated_image_is_an_error_at_open(tmp_path, folder, tok):
    data = (folder / "red.png").read_bytes()
    (folder / "red.png").write_bytes(data[: len(data) // 2])
    path = _write(tmp_path / "d.json", RECORDS, False)
    with pytest.raises(DataError, match=r"record r0 .*red\.png: unreadable image"):
        LlavaDataset(path, folder, 32, tok, "vicuna_v1", 128)


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
        LlavaDataset(path, folder, 32, tok, "vicuna_v1", 128)
    _write(tmp_path / "d.json", [RECORDS[0], bad], False)
    with pytest.raises(DataError, match=rf"d\.json:record 1.*{message}"):
        LlavaDataset(tmp_path / "d.json", folder, 32, tok, "vicuna_v1", 128)


def test_invalid_json_and_bad_args(tmp_path, folder, tok):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r"d\.jsonl:line 2: invalid JSON"):
        LlavaDataset(path, folder, 32, tok, "vicuna_v1", 128)
    good = _write(tmp_path / "g.json", RECORDS, False)
    with pytest.raises(DataError, match="on_bad_image must be 'error' or 'skip'"):
        LlavaDataset(good, folder, 32, tok, "vicuna_v1", 128, on_bad_image="ignore")
    with pytest.raises(DataError, match="image folder .* does not exist"):
        LlavaDataset(good, tmp_path / "nope", 32, tok, "vicuna_v1", 128)
    with pytest.raises(DataError, match="data file not found"):
        LlavaDataset(tmp_path / "none.json", folder, 32, tok, "vicuna_v1", 128)


def test_collate_pads_right(tmp_path, folder, tok):
    ds = LlavaDataset(_write(tmp_path / "d.json", RECORDS, False), folder, 16, tok, "chatml", 128)
    items = [ds[i] for i in range(3)]
    batch = make_collate(tok.pad_token_id)(items)
    lengths = [it["input_ids"].numel() for it in items]
    assert batch["input_ids"].shape == (3, max(lengths)) and batch["images"].shape == (3, 3, 16, 16)
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["has_image"].tolist() == [True, True, False]
    for i, n in enumerate(lengths):
        assert torch.equal(batch["input_ids"][i, :n], items[i]["input_ids"])
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all()
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()
    assert count_text_tokens(batch) == sum(lengths)
    assert count_supervised_tokens(batch) == sum(int((it["labels"] != IGNORE_INDEX).sum()) for it in items)
    with pytest.raises(DataError, match="empty batch"):
        collate([], 0)


def test_decode_failure_after_open(tmp_path, folder, tok):
    """verify_images=False defers checks to loading: error names the record, skip moves on."""
    (folder / "red.png").write_bytes(b"garbage")
    path = _write(tmp_path / "d.json", RECORDS, False)
    ds = LlavaDataset(path, folder, 32, tok, "vicuna_v1", 128, verify_images=False)
    with pytest.raises(DataError, match=r"record r0 .*red\.png: cannot decode"):
        ds[0]
    ds = LlavaDataset(path, folder, 32, tok, "vicuna_v1", 128, on_bad_image="skip", verify_images=False)
    item = ds[0]  # r0 is broken: r1 comes instead
    assert item["has_image"] and torch.allclose(item["image"], torch.full_like(item["image"], 128 / 255))
    assert [rid for rid, _ in ds.skipped] == ["r0"]
