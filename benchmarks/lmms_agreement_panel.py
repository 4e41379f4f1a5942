"""The answer panel of the scorer agreement report (benchmarks/lmms_agreement.py): for each of the
seven benchmarks, a few questions written as lmms-eval's task documents (the fields its
process_results reads) and, for each question, the answers VLMs give in practice (exact, cased,
with a period, in a sentence, letters in brackets, full-width characters, ...). Every
(question, answer) pair is scored by both scorers. `items(bench)` turns the documents into the
project's EvalItems, as its loaders would build them from the official copies."""
from __future__ import annotations

import ast
from typing import Any

from trainers.data.prompts import OPTION_LETTERS
from trainers.eval.base import EvalItem

# lmms-eval task of each built-in benchmark
TASKS = {"gqa": "gqa", "pope": "pope", "mme": "mme", "mmmu": "mmmu_val", "ocrbench": "ocrbench",
         "scienceqa_img": "scienceqa_img", "textvqa": "textvqa_val"}


def short_answers(gold: str, wrong: str) -> list[str]:
    return [gold, gold.upper(), gold.capitalize() + ".", f" {gold} ", f"{gold}\n", f"The {gold}",
            f"{gold}!", f"It is {gold}.", f"{gold} .", f'"{gold}"', f"{gold}'s", wrong, ""]


def yes_no_answers() -> list[str]:
    return ["Yes", "yes", "YES", "yes.", "Yes, there is.", " yes ", "Yes\n", "No", "no", "NO", "no.",
            "No, there is not.", "Nope", "y", "n", "not sure", ". yes", "There is no cat.", ""]


def choice_answers(letter: str, text: str, wrong: str) -> list[str]:
    return [letter, letter.lower(), f"({letter})", f"{letter}.", f"{letter}. {text}", f"{letter}.{text}",
            f"The answer is {letter}.", f"The answer is {letter}", text, f"Answer: {letter}", f" {letter} ",
            f"{letter} {text}", f"{letter}) {text}", wrong, f"{letter} or {wrong}", "I cannot tell.", ""]


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _gqa() -> list[tuple[dict, list[str]]]:
    rows = [("q1", "What color is the car?", "red", "blue"), ("q2", "Is the man on the left?", "yes", "no"),
            ("q3", "What is he wearing?", "t-shirt", "jacket"), ("q4", "How many dogs are there?", "2", "3"),
            ("q5", "Which room is this?", "living room", "kitchen")]
    extra = {"q3": ["t shirt", "T-Shirt."], "q4": ["two", "2."], "q5": ["living  room", "Living room."]}
    return [({"question_id": q, "question": text, "answer": gold, "imageId": f"img_{q}"},
             short_answers(gold, wrong) + extra.get(q, [])) for q, text, gold, wrong in rows]


def _textvqa() -> list[tuple[dict, list[str]]]:
    rows = [(1, "what brand is this?", ["coca cola"] * 7 + ["coca-cola"] * 2 + ["coke"], "pepsi"),
            (2, "what number is on the jersey?", ["23"] * 8 + ["twenty three", "23."], "32"),
            (3, "what does the sign say?", ["stop"] * 4 + ["stop sign"] * 6, "go"),
            (4, "who wrote this book?", ["tolkien's"] + ["tolkien"] * 2 + ["j.r.r. tolkien"] * 7, "lewis")]
    extra = {1: ["Coca-Cola", "coke"], 2: ["twenty three", "23.0"], 3: ["Stop sign."], 4: ["J.R.R. Tolkien", "Tolkien's"]}
    return [({"question_id": q, "question": text, "answers": answers, "image_id": f"img{q}", "ocr_tokens": []},
             short_answers(answers[0], wrong) + extra[q]) for q, text, answers, wrong in rows]


def _pope() -> list[tuple[dict, list[str]]]:
    rows = [("1", "random", "yes"), ("2", "random", "no"), ("3", "popular", "yes"), ("4", "popular", "no"),
            ("5", "adversarial", "yes"), ("6", "adversarial", "no")]
    return [({"question_id": q, "question": "Is there a cat in the image?", "answer": gold, "category": split,
              "image_source": f"COCO_{q}"}, yes_no_answers()) for q, split, gold in rows]


def _mme() -> list[tuple[dict, list[str]]]:
    # two questions per image, as in MME (acc+ needs both right)
    rows = [("existence/0001.png", "existence", "Yes"), ("existence/0001.png", "existence", "No"),
            ("count/0002.png", "count", "Yes"), ("count/0002.png", "count", "No"),
            ("code_reasoning/0003.png", "code_reasoning", "Yes"), ("code_reasoning/0003.png", "code_reasoning", "No")]
    return [({"question_id": q, "question": "Is there a cat in this image? Please answer yes or no.",
              "answer": gold, "category": cat}, yes_no_answers()) for q, cat, gold in rows]


def _scienceqa() -> list[tuple[dict, list[str]]]:
    rows = [("Which animal is a mammal?", ["frog", "whale", "shark"], 1, "A"),
            ("Which is a solid?", ["ice", "steam"], 0, "B"),
            ("Which month comes first?", ["May", "March", "June", "April"], 1, "D")]
    return [({"question": q, "choices": choices, "answer": ans, "hint": "" if n else "Look at the picture."},
             choice_answers(OPTION_LETTERS[ans], choices[ans], wrong)) for n, (q, choices, ans, wrong) in enumerate(rows)]


def _mmmu() -> list[tuple[dict, list[str]]]:
    mc = [("validation_Art_1", "Which period is this painting from?", ["Baroque", "Cubism", "Gothic", "Rococo"], "B", "C"),
          ("validation_Physics_2", "What is the unit of force?", ["joule", "watt", "newton"], "C", "A")]
    docs = [({"id": i, "question": q, "options": repr(opts), "answer": ans, "question_type": "multiple-choice"},
             choice_answers(ans, opts[OPTION_LETTERS.index(ans)], wrong)) for i, q, opts, ans, wrong in mc]
    opens = [("validation_Math_3", "What is 6 times 7?", "42", ["42", "42.0", "The answer is 42.", "forty-two", "41",
                                                                "It is 42 units.", "4.2e1", "42, or 43", ""]),
             ("validation_Chemistry_4", "Which gas do plants release?", "oxygen",
              ["oxygen", "Oxygen.", "O2", "The answer is oxygen", "carbon dioxide", ""])]
    docs += [({"id": i, "question": q, "options": "[]", "answer": ans, "question_type": "open"}, answers)
             for i, q, ans, answers in opens]
    return docs


def _ocrbench() -> list[tuple[dict, list[str]]]:
    rows = [("IIIT5K", "Regular Text Recognition", ["HOTEL"], ["HOTEL", "hotel", "The word is HOTEL.",
                                                                 _full_width("HOTEL"), " hotel\n", "HOTE", "MOTEL", ""]),
            ("docVQA", "Doc-oriented VQA", ["$12.50", "12.50"], ["$12.50", "12.50", "It costs $12.50.", _full_width("12.50"),
                                                                 "12.5", "12,50", ""]),
            ("HME100k", "Handwritten Mathematical Expression Recognition", ["x ^ { 2 } + 1"],
             ["x^{2}+1", "x ^ { 2 } + 1", "X^{2}+1", "x^{2}\n+1", "x^{2}\t+1", "x^2+1", ""])]
    return [({"question": "What is written in the image?", "answer": answers, "dataset": ds, "question_type": qt},
             preds) for ds, qt, answers, preds in rows]


PANELS = {"gqa": _gqa, "pope": _pope, "mme": _mme, "mmmu": _mmmu, "ocrbench": _ocrbench,
          "scienceqa_img": _scienceqa, "textvqa": _textvqa}


def panel(bench: str) -> list[tuple[dict[str, Any], list[str]]]:
    return PANELS[bench]()


def to_item(bench: str, n: int, doc: dict[str, Any]) -> EvalItem:
    """The EvalItem the project's loader builds for this question (the prompt plays no part in scoring)."""
    meta: dict[str, Any] = {}
    if bench == "gqa":
        qid, answer = doc["question_id"], doc["answer"]
    elif bench == "textvqa":
        qid, answer = str(doc["question_id"]), list(doc["answers"])
    elif bench == "pope":
        qid, answer, meta = f"{doc['category']}/{doc['question_id']}", doc["answer"], {"split": doc["category"]}
    elif bench == "mme":
        qid, answer = f"{doc['question_id']}/{n}", doc["answer"].lower()
        meta = {"task": doc["category"], "image_id": doc["question_id"].split("/")[-1]}
    elif bench == "scienceqa_img":
        qid, answer, meta = str(n), OPTION_LETTERS[doc["answer"]], {"options": list(doc["choices"])}
    elif bench == "mmmu":
        options = ast.literal_eval(doc["options"])
        qid, answer, meta = doc["id"], doc["answer"], {"type": doc["question_type"], "options": options}
    elif bench == "ocrbench":
        qid, answer, meta = str(n), list(doc["answer"]), {"dataset_name": doc["dataset"], "type": doc["question_type"]}
    else:
        raise KeyError(bench)
    return EvalItem(qid=qid, image="", prompt=str(doc["question"]), answer=answer, meta=meta)
