"""Conversation templates, label masking and the word tokenizer."""
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from trainers.data.errors import DataError, UnknownNameError
from trainers.data.templates import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    TEMPLATES,
    build_prompt,
    encode_conversation,
    encode_prompt,
    stop_token_ids,
)
from trainers.data.tokenizer import build_word_tokenizer, load_tokenizer

CONV = [
    {"from": "human", "value": f"{IMAGE_TOKEN}\nWhat colour is the circle?"},
    {"from": "gpt", "value": "Red"},
    {"from": "human", "value": "And how many circles are there?"},
    {"from": "gpt", "value": "3"},
]
END = {"plain": "</s>", "vicuna_v1": "</s>", "llama3": "<|eot_id|>", "chatml": "<|im_end|>"}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_word_tokenizer([c["value"] for c in CONV], tmp_path_factory.mktemp("wordtok"))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_labels_are_exactly_the_answers(tok, name):
    ids, labels = encode_conversation(CONV, tok, name, 512)
    assert len(ids) == len(labels)
    supervised = [tok.convert_ids_to_tokens(lab) for lab in labels if lab != IGNORE_INDEX]
    assert supervised == ["Red", END[name], "3", END[name]]  # case kept
    words = tok.convert_ids_to_tokens(ids)
    # plain drops the human text (image + caption only); chat templates keep the question
    assert ("What" in words) == (name != "plain")
    # supervised positions carry their own token; everything else is masked
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(ids, labels))
    assert ids.count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == 1


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_round_trip_and_prompt_is_prefix(tok, name):
    ids, _ = encode_conversation(CONV[:2], tok, name, 512)
    prompt = encode_prompt(CONV[0]["value"], tok, name)
    assert ids[: len(prompt)] == prompt
    answer = tok.decode(ids[len(prompt):], skip_special_tokens=True)
    assert answer.strip() == "Red"
    assert tok.convert_tokens_to_ids(END[name]) in stop_token_ids(tok, name)
    # no word of the rendered text is unknown to the word tokenizer
    assert tok.unk_token_id not in ids


def test_vicuna_prompt_text():
    p = build_prompt("<image>\nWhat is it?", "vicuna_v1")
    assert p.startswith("A chat between") and p.endswith("USER: <image>\nWhat is it? ASSISTANT:")
    assert build_prompt("<image>\nWhat is it?", "plain") == "<image>"
    assert build_prompt("q", "chatml").endswith("<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n")


def test_unknown_template_lists_known(tok):
    with pytest.raises(UnknownNameError, match="known: chatml, llama3, plain, vicuna_v1"):
        encode_conversation(CONV, tok, "alpaca", 512)
    with pytest.raises(KeyError):
        build_prompt("q", "alpaca")


def test_bad_turns_and_truncation(tok):
    with pytest.raises(DataError, match="turn 1: expected from='gpt'"):
        encode_conversation([CONV[0], CONV[0]], tok, "vicuna_v1", 512)
    ids, labels = encode_conversation(CONV, tok, "chatml", 512)
    cut = len(ids) - 3  # keeps the first answer only
    ids2, labels2 = encode_conversation(CONV, tok, "chatml", cut)
    assert ids2 == ids[:cut] and labels2 == labels[:cut]
    with pytest.raises(DataError, match="loses the image token"):
        encode_conversation(CONV, tok, "chatml", 5)


def test_word_tokenizer_save_load(tok, tmp_path):
    tok2 = build_word_tokenizer(["Hello, World! option's"], tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert loaded.get_vocab() == tok2.get_vocab()
    for s in ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN, "<|im_start|>", "<|eot_id|>"]:
        assert len(loaded(s, add_special_tokens=False)["input_ids"]) == 1, s
    enc = loaded("Hello, World! <image> zebra HELLO", add_special_tokens=False)["input_ids"]
    assert loaded.convert_ids_to_tokens(enc) == ["Hello", ",", "World", "!", IMAGE_TOKEN, "<unk>", "<unk>"]
    assert loaded.pad_token == "<pad>" and loaded.eos_token == "</s>" and loaded.bos_token == "<s>"
    # role strings of every template are in the vocabulary
    for word in ["USER", "ASSISTANT", "user", "assistant", "system", "chat", "polite"]:
        assert word in loaded.get_vocab()


def test_load_tokenizer_adds_image_and_pad(tmp_path):
    # a "real" tokenizer without <image> or pad: a BPE-free WordLevel one saved bare
    raw = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "hello": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="</s>").save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path, template="chatml")
    assert len(tok(IMAGE_TOKEN, add_special_tokens=False)["input_ids"]) == 1
    assert tok.pad_token is not None and tok.pad_token_id >= 3
    assert len(tok("<|im_end|>", add_special_tokens=False)["input_ids"]) == 1
    with pytest.raises(DataError, match="cannot load a tokenizer from"):
        load_tokenizer(tmp_path / "missing")
