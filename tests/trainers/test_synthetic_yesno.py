"""Yes/no SFT kinds: balanced answers, answers true of the scene, MME/POPE phrasing."""
import random

import pytest

from trainers.data.errors import DataError
from trainers.data.prompts import SHORT_ANSWER_SUFFIX
from trainers.data.synthetic_kinds import make_item
from trainers.data.synthetic_yesno import YES_NO_KINDS, exists_question, make_sft_item


@pytest.mark.parametrize("kind", sorted(YES_NO_KINDS))
def test_yes_no_items_are_balanced_and_true_of_the_scene(kind):
    rng = random.Random(3)
    items = [make_sft_item(rng, kind, 32) for _ in range(200)]
    yes = sum(it.answer == "yes" for it in items)
    assert 70 < yes < 130 and {it.answer for it in items} == {"yes", "no"}
    for it in items:
        assert it.kind == kind and it.options is None and it.question.endswith("?\n" + SHORT_ANSWER_SUFFIX)
        asked = it.question.split("?")[0].split()
        if kind == "count_yn":  # "Are there <n> <shape>s ...": yes iff n is the caption's count
            assert asked[:2] == ["Are", "there"] and (asked[2] == it.caption.split()[0]) == (it.answer == "yes")
        else:  # "Is there a <colour> <shape> ...": yes iff the caption names that colour
            colour = it.caption.split()[-2]
            assert asked[:3] == ["Is", "there", "a"] and (asked[3] == colour) == (it.answer == "yes")
    # the question alone does not give the answer
    by_q: dict[str, set[str]] = {}
    for it in items:
        by_q.setdefault(it.question, set()).add(it.answer)
    assert sum(len(a) == 2 for a in by_q.values()) >= 3


def test_exists_question_names_present_or_absent_shapes():
    rng = random.Random(0)
    it = make_item(rng, "exists", 32)
    shapes = [w.removesuffix("s") for w in it.caption.split() if w.removesuffix("s") in
              ("circle", "square", "triangle", "star")]
    assert exists_question(it, True, rng).split()[3] in shapes
    assert exists_question(it, False, rng).split()[3] not in shapes
    full = make_item(rng, "colour", 32)
    full.caption = "a red circle and a blue square and a green triangle and a red star"
    with pytest.raises(DataError, match="no absent shape"):
        exists_question(full, False, rng)
