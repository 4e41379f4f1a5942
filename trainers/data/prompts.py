"""Question phrasings shared by the synthetic generator and evaluation (LLaVA-1.5 eval suffixes)."""
from __future__ import annotations

from collections.abc import Sequence

from trainers.data.errors import DataError

SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
MULTIPLE_CHOICE_SUFFIX = "Answer with the option's letter from the given choices directly."
YES_NO_SUFFIX = "Please answer yes or no."

OPTION_LETTERS = "ABCDEFGHIJ"


def format_options(options: Sequence[str]) -> str:
    """Render options as LLaVA-1.5 does: "A. red\\nB. blue"."""
    if not 1 <= len(options) <= len(OPTION_LETTERS):
        raise DataError(f"multiple choice needs 1-{len(OPTION_LETTERS)} options, got {len(options)}")
    return "\n".join(f"{OPTION_LETTERS[i]}. {opt}" for i, opt in enumerate(options))


def short_answer_question(question: str) -> str:
    return f"{question}\n{SHORT_ANSWER_SUFFIX}"


def yes_no_question(question: str) -> str:
    return f"{question} {YES_NO_SUFFIX}"


def multiple_choice_question(question: str, options: Sequence[str]) -> str:
    return f"{question}\n{format_options(options)}\n{MULTIPLE_CHOICE_SUFFIX}"
