"""Loaders on hand-made copies in the official layouts; missing and malformed files give named errors."""
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from trainers.eval import BENCHMARKS, BenchmarkDataError, UnknownBenchmarkError, get_benchmark
from trainers.eval.benchmarks import parse_benchmark_list

SA = "\nAnswer the question using a single word or phrase."


def img(path, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (200, 10, 10)).save(path, format=fmt)


def png_bytes():
    buf = io.BytesIO()
    Image.new("RGB", (5, 5), (0, 0, 255)).save(buf, format="PNG")
    return buf.getvalue()


def test_registry_lists_names_on_unknown():
    assert set(BENCHMARKS) == {"gqa", "textvqa", "pope", "mme", "scienceqa_img", "ocrbench", "mmmu"}
    with pytest.raises(UnknownBenchmarkError, match="unknown benchmark 'vqav2'; known: gqa, mme, mmmu"):
        get_benchmark("vqav2")
    assert parse_benchmark_list("gqa, pope,gqa") == ["gqa", "pope"]
    with pytest.raises(UnknownBenchmarkError, match="'nope'"):
        parse_benchmark_list("gqa,nope")


def test_gqa_official_layout(tmp_path):
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps({
        "20968379": {"imageId": "n288870", "question": "Is the sky blue?", "answer": "yes",
                     "fullAnswer": "Yes, the sky is blue.", "types": {"structural": "verify"}}}))
    img(tmp_path / "images" / "n288870.jpg")
    [it] = get_benchmark("gqa").load(tmp_path)
    assert (it.qid, it.answer, it.prompt) == ("20968379", "yes", "Is the sky blue?" + SA)
    assert it.meta == {"structural": "verify"}
    assert it.load_image().size == (8, 6)


def test_textvqa_official_layout_and_errors(tmp_path):
    bench = get_benchmark("textvqa")
    with pytest.raises(BenchmarkDataError, match=f"textvqa: missing questions file: looked for {tmp_path}/TextVQA_0.5.1_val.json"):
        bench.load(tmp_path)
    (tmp_path / "train_images").mkdir()
    rec = {"question_id": 34602, "question": "what is the brand?", "image_id": "003a8ae2ef43b901",
           "answers": ["nokia"] * 10}
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [rec, {"question_id": 2}]}))
    with pytest.raises(BenchmarkDataError, match=r"TextVQA_0.5.1_val.json: data\[1\]: missing field 'answers'"):
        bench.load(tmp_path)
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": [rec]}))
    [it] = bench.load(tmp_path)
    assert it.image.endswith("train_images/003a8ae2ef43b901.jpg") and it.answer == ["nokia"] * 10
    assert it.prompt == "what is the brand?" + SA
    # with the Rosetta OCR file, LLaVA-1.5's reference-token line
    (tmp_path / "TextVQA_Rosetta_OCR_v0.2_val.json").write_text(json.dumps(
        {"data": [{"image_id": "003a8ae2ef43b901", "ocr_tokens": ["NOKIA", "5800"]}]}))
    [it] = bench.load(tmp_path)
    assert it.prompt == "what is the brand?\nReference OCR token: NOKIA, 5800" + SA


def test_pope_official_layout_and_malformed_line(tmp_path):
    bench = get_benchmark("pope")
    (tmp_path / "images").mkdir()
    line = {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?", "label": "yes"}
    for split in ("random", "popular"):
        (tmp_path / f"coco_pope_{split}.json").write_text(json.dumps(line) + "\n")
    with pytest.raises(BenchmarkDataError, match="missing adversarial split: looked for .*coco_pope_adversarial.json"):
        bench.load(tmp_path)
    (tmp_path / "coco_pope_adversarial.json").write_text(json.dumps(line) + "\n{not json\n")
    with pytest.raises(BenchmarkDataError, match="coco_pope_adversarial.json: line 2: not valid JSON"):
        bench.load(tmp_path)
    (tmp_path / "coco_pope_adversarial.json").write_text(json.dumps({**line, "label": "maybe"}) + "\n")
    with pytest.raises(BenchmarkDataError, match="line 1: label must be yes or no"):
        bench.load(tmp_path)
    (tmp_path / "coco_pope_adversarial.json").write_text(json.dumps(line) + "\n")
    items = bench.load(tmp_path)
    assert [i.qid for i in items] == ["random/1", "popular/1", "adversarial/1"]
    assert items[0].prompt == "Is there a snowboard in the image?" + SA


def test_mme_both_official_layouts(tmp_path):
    q = "Is there a dog in this image? Please answer yes or no."
    img(tmp_path / "existence" / "000000006040.jpg")
    (tmp_path / "existence" / "000000006040.txt").write_text(f"{q}\tYes\n{q.replace('dog', 'cat')}\tNo\n")
    img(tmp_path / "artwork" / "images" / "10002.jpg")
    (tmp_path / "artwork" / "questions_answers_YES_or_NO").mkdir(parents=True)
    (tmp_path / "artwork" / "questions_answers_YES_or_NO" / "10002.txt").write_text("Is this by Monet?\tNo\n")
    items = get_benchmark("mme").load(tmp_path)
    assert [(i.qid, i.answer) for i in items] == [
        ("existence/000000006040/1", "yes"), ("existence/000000006040/2", "no"), ("artwork/10002/1", "no")]
    assert items[0].prompt == "Is there a dog in this image?" + SA  # LLaVA-1.5 swaps MME's instruction
    assert items[2].prompt == "Is this by Monet?" + SA
    (tmp_path / "existence" / "000000006040.txt").write_text(f"{q} Yes\n")
    with pytest.raises(BenchmarkDataError, match=r"000000006040.txt: line 1: expected 'question<TAB>Yes\|No'"):
        get_benchmark("mme").load(tmp_path)
    (tmp_path / "existence" / "000000006040.txt").write_text(f"{q}\tYes\n")
    (tmp_path / "existence" / "orphan.txt").write_text(f"{q}\tYes\n")
    with pytest.raises(BenchmarkDataError, match="no image orphan"):
        get_benchmark("mme").load(tmp_path)


def test_mme_missing_folder(tmp_path):
    with pytest.raises(BenchmarkDataError, match=f"mme: no subtask folders .* in {tmp_path}"):
        get_benchmark("mme").load(tmp_path)


def test_scienceqa_official_layout(tmp_path):
    problems = {
        "5": {"question": "Which animal's mouth is adapted to tear meat?", "choices": ["tiger", "cow"],
              "answer": 0, "hint": "Tigers eat meat.", "image": "image.png", "split": "test"},
        "6": {"question": "No image here?", "choices": ["a", "b"], "answer": 1, "hint": "", "image": None, "split": "test"},
    }
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["5", "6"]}))
    img(tmp_path / "images" / "test" / "5" / "image.png", "PNG")
    [it] = get_benchmark("scienceqa_img").load(tmp_path)  # only questions with an image
    assert it.answer == "A" and it.prompt == (
        "Context: Tigers eat meat.\nWhich animal's mouth is adapted to tear meat?\nA. tiger\nB. cow\n"
        "Answer with the option's letter from the given choices directly.")
    problems["5"]["answer"] = 7
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    with pytest.raises(BenchmarkDataError, match="problems.json: problem 5: answer 7 does not index"):
        get_benchmark("scienceqa_img").load(tmp_path)
    (tmp_path / "problems.json").write_text('{"5": ')
    with pytest.raises(BenchmarkDataError, match="problems.json: not valid JSON"):
        get_benchmark("scienceqa_img").load(tmp_path)


def test_ocrbench_official_layout(tmp_path):
    recs = [{"dataset_name": "IIIT5K", "id": 0, "image_path": "IIIT5K/1002_1.png", "question": "what is written in the image?",
             "answers": "PRIVATE", "type": "Regular Text Recognition"},
            {"dataset_name": "HME100k", "id": 1, "image_path": "./OCRBench_Images/HME100k/3.jpg",
             "question": "Please write out the expression.", "answers": ["x ^ { 2 }"],
             "type": "Handwritten Mathematical Expression Recognition"}]
    (tmp_path / "OCRBench_Images").mkdir()
    (tmp_path / "OCRBench.json").write_text(json.dumps(recs))
    a, b = get_benchmark("ocrbench").load(tmp_path)
    assert a.answer == ["PRIVATE"] and a.prompt == "what is written in the image?"
    assert b.image == str(tmp_path / "OCRBench_Images" / "HME100k" / "3.jpg")
    (tmp_path / "OCRBench.json").write_text(json.dumps([{**recs[0], "answers": 3}]))
    with pytest.raises(BenchmarkDataError, match="OCRBench.json: record 0: field 'answers' has type int"):
        get_benchmark("ocrbench").load(tmp_path)


def _mmmu_table(**over):
    row = {"id": "validation_Art_1", "question": "<image 1> Which style is this?", "options": "['Baroque', 'Cubism']",
           "explanation": "", "image_1": {"bytes": png_bytes(), "path": "a.png"}, "img_type": "['Paintings']",
           "answer": "B", "topic_difficulty": "Easy", "question_type": "multiple-choice", "subfield": "Art"}
    open_row = {**row, "id": "validation_Math_2", "question": "What is x?", "options": "[]", "answer": "['3', '3.0']",
                "question_type": "open"}
    rows = [{**row, **over}, open_row]
    return pa.Table.from_pylist(rows)


def test_mmmu_parquet_layout(tmp_path):
    bench = get_benchmark("mmmu")
    with pytest.raises(BenchmarkDataError, match="mmmu: missing validation parquet files: looked for"):
        bench.load(tmp_path)
    (tmp_path / "Art").mkdir()
    pq.write_table(_mmmu_table(), tmp_path / "Art" / "validation-00000-of-00001.parquet")
    mc, op = bench.load(tmp_path)
    assert mc.prompt == ("<image 1> Which style is this?\nA. Baroque\nB. Cubism\n"
                         "Answer with the option's letter from the given choices directly.")
    assert mc.load_image().size == (5, 5) and op.answer == ["3", "3.0"]
    assert bench.summarize([mc, op], ["(B) Cubism", "x = 3"])["mmmu"] == 100.0
    pq.write_table(_mmmu_table(options="not a list"), tmp_path / "Art" / "validation-00000-of-00001.parquet")
    with pytest.raises(BenchmarkDataError, match="row 0 \\(id validation_Art_1\\): options is not a list literal"):
        bench.load(tmp_path)


def test_broken_image_is_named(tmp_path):
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(
        {"1": {"imageId": "bad", "question": "q?", "answer": "a"}}))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "bad.jpg").write_bytes(b"not an image")
    [it] = get_benchmark("gqa").load(tmp_path)
    with pytest.raises(BenchmarkDataError, match="question 1: cannot read image .*bad.jpg"):
        it.load_image()
