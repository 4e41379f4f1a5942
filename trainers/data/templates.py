"""Conversation templates (plain, vicuna_v1, llama3, chatml) and label-masked encoding.

A conversation is rendered to one string while the character spans of the assistant answers
(+ their end-of-turn marker) are recorded; the string is tokenized once with offsets and a token
is supervised iff it starts inside an answer span. This is exact for any fast tokenizer, unlike
tokenizing turn by turn (SentencePiece adds prefix spaces at segment starts).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainers.data.errors import DataError, UnknownNameError

IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100
EOS_PLACEHOLDER = "{eos}"  # resolved to tokenizer.eos_token at encode time

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
ASSISTANT_SYSTEM = "You are a helpful language and vision assistant."


@dataclass(frozen=True)
class ChatTemplate:
    """How turns are laid out. `user` holds {content}; the answer is
    answer_prefix + answer + end_of_turn (supervised), followed by after_turn (not supervised)."""

    name: str
    prefix: str  # once, before the first turn (system prompt, begin-of-text marker)
    user: str
    assistant_header: str
    answer_prefix: str
    end_of_turn: str
    after_turn: str
    add_bos: bool  # prepend tokenizer.bos_token_id (templates that write their own BOS say False)
    markers: tuple[str, ...] = ()  # role markers that must be single special tokens
    image_only_user: bool = False  # plain: the human turn is reduced to its image token

    def render_user(self, content: str) -> str:
        if self.image_only_user:
            return IMAGE_TOKEN if IMAGE_TOKEN in content else ""
        return self.user.format(content=content)


TEMPLATES: dict[str, ChatTemplate] = {
    "plain": ChatTemplate(
        name="plain", prefix="", user="{content}", assistant_header="", answer_prefix="",
        end_of_turn=EOS_PLACEHOLDER, after_turn="", add_bos=True, image_only_user=True,
    ),
    "vicuna_v1": ChatTemplate(
        name="vicuna_v1", prefix=VICUNA_SYSTEM + " ", user="USER: {content} ",
        assistant_header="ASSISTANT:", answer_prefix=" ", end_of_turn=EOS_PLACEHOLDER,
        after_turn="", add_bos=True,
    ),
    "llama3": ChatTemplate(
        name="llama3",
        prefix=("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                + ASSISTANT_SYSTEM + "<|eot_id|>"),
        user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
        assistant_header="<|start_header_id|>assistant<|end_header_id|>\n\n", answer_prefix="",
        end_of_turn="<|eot_id|>", after_turn="", add_bos=False,
        markers=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    "chatml": ChatTemplate(
        name="chatml", prefix="<|im_start|>system\n" + ASSISTANT_SYSTEM + "<|im_end|>\n",
        user="<|im_start|>user\n{content}<|im_end|>\n", assistant_header="<|im_start|>assistant\n",
        answer_prefix="", end_of_turn="<|im_end|>", after_turn="\n", add_bos=False,
        markers=("<|im_start|>", "<|im_end|>"),
    ),
}


def get_template(template: str | ChatTemplate) -> ChatTemplate:
    if isinstance(template, ChatTemplate):
        return template
    if template not in TEMPLATES:
        raise UnknownNameError("conversation template", template, TEMPLATES)
    return TEMPLATES[template]


def template_texts() -> list[str]:
    """Every fixed string the templates write (for building a word vocabulary)."""
    out: list[str] = []
    for t in TEMPLATES.values():
        out += [t.prefix, t.user.format(content=""), t.assistant_header, t.answer_prefix, t.after_turn]
    return [s for s in out if s.strip()]


def all_markers() -> list[str]:
    seen: dict[str, None] = {}
    for t in TEMPLATES.values():
        seen.update(dict.fromkeys(t.markers))
    return list(seen)


def build_prompt(question: str, template: str | ChatTemplate) -> str:
    """The generation prompt: prefix, the user's question, and the assistant header.

    Tokenize it like encode_conversation does: add_special_tokens=False plus the BOS id when the
    template's add_bos is set (see `encode_prompt`)."""
    t = get_template(template)
    return t.prefix + t.render_user(question) + t.assistant_header


def _bos_ids(tokenizer, t: ChatTemplate) -> list[int]:
    if t.add_bos and tokenizer.bos_token_id is not None:
        return [int(tokenizer.bos_token_id)]
    return []


def encode_prompt(question: str, tokenizer, template: str | ChatTemplate) -> list[int]:
    """Token ids of build_prompt(question), BOS included as in training."""
    t = get_template(template)
    ids = tokenizer(build_prompt(question, t), add_special_tokens=False)["input_ids"]
    return _bos_ids(tokenizer, t) + list(ids)


def stop_token_ids(tokenizer, template: str | ChatTemplate) -> list[int]:
    """Ids that end an assistant turn: EOS and the template's end-of-turn marker if it is one token."""
    t = get_template(template)
    out = [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []
    if t.end_of_turn != EOS_PLACEHOLDER:
        ids = tokenizer(t.end_of_turn, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] not in out:
            out.append(int(ids[0]))
    return out


def render_conversation(
    conversations: Sequence[dict], template: str | ChatTemplate, eos_token: str | None
) -> tuple[str, list[tuple[int, int]]]:
    """(text, answer character spans). Turns must alternate human, gpt, human, gpt, ..."""
    t = get_template(template)
    if not conversations:
        raise DataError("empty conversation")
    end = t.end_of_turn
    if end == EOS_PLACEHOLDER:
        if not eos_token:
            raise DataError(f"template {t.name!r} ends answers with EOS but the tokenizer has no eos_token")
        end = eos_token
    parts = [t.prefix]
    pos = len(t.prefix)
    spans: list[tuple[int, int]] = []
    for i, turn in enumerate(conversations):
        role, value = turn.get("from"), turn.get("value")
        expected = "human" if i % 2 == 0 else "gpt"
        if role != expected:
            raise DataError(f"turn {i}: expected from={expected!r}, got {role!r}")
        if not isinstance(value, str):
            raise DataError(f"turn {i}: 'value' must be a string, got {type(value).__name__}")
        if role == "human":
            seg = t.render_user(value) + t.assistant_header
            parts.append(seg)
            pos += len(seg)
        else:
            answer = t.answer_prefix + value.strip() + end
            spans.append((pos, pos + len(answer)))
            parts.append(answer + t.after_turn)
            pos += len(answer) + len(t.after_turn)
    if not spans:
        raise DataError("conversation has no gpt answer to learn from")
    return "".join(parts), spans


def encode_untruncated(conversations: Sequence[dict], tokenizer, template: str | ChatTemplate) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of the whole conversation: labels are IGNORE_INDEX everywhere but the
    assistant answers and their end-of-turn token."""
    t = get_template(template)
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"{type(tokenizer).__name__} is not a fast tokenizer; label masking needs offsets")
    text, spans = render_conversation(conversations, t, tokenizer.eos_token)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    k = 0
    for j, (start, stop) in enumerate(enc["offset_mapping"]):
        if stop <= start:  # zero-width tokens belong to no span
            continue
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        if k < len(spans) and spans[k][0] <= start < spans[k][1]:
            labels[j] = ids[j]
    bos = _bos_ids(tokenizer, t)
    return bos + ids, [IGNORE_INDEX] * len(bos) + labels


def encode_conversation(
    conversations: Sequence[dict], tokenizer, template: str | ChatTemplate, max_length: int
) -> tuple[list[int], list[int]]:
    """encode_untruncated cut to max_length (callers count the cuts: LlavaDataset.truncated); an
    error if that would cut the image token or every answer."""
    if max_length <= 0:
        raise DataError(f"max_length must be positive, got {max_length}")
    ids, labels = encode_untruncated(conversations, tokenizer, template)
    if len(ids) > max_length:
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if image_id in ids and image_id not in ids[:max_length]:
            raise DataError(f"conversation of {len(ids)} tokens truncated to max_length={max_length} loses the image token")
        ids, labels = ids[:max_length], labels[:max_length]
    if all(lab == IGNORE_INDEX for lab in labels):
        raise DataError(f"no answer token left within max_length={max_length}")
    return ids, labels


def conversation_lengths(conversations: Sequence[Sequence[dict]], tokenizer, template: str | ChatTemplate) -> list[int]:
    """Untruncated token counts of many conversations (one batched tokenizer call; same counts as
    encode_untruncated)."""
    t = get_template(template)
    texts = [render_conversation(c, t, tokenizer.eos_token)[0] for c in conversations]
    n_bos = len(_bos_ids(tokenizer, t))
    return [len(ids) + n_bos for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
