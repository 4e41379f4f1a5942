"""Label masking with subword tokenizers shaped like the real ones (SentencePiece-style Metaspace
BPE as in Llama/Vicuna, byte-level BPE as in Qwen/Llama-3), trained locally on a few lines."""
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from trainers.data.templates import IGNORE_INDEX, TEMPLATES, build_prompt, encode_conversation, encode_prompt
from trainers.data.tokenizer import load_tokenizer

CORPUS = [s for t in TEMPLATES.values() for s in (t.prefix, t.user, t.assistant_header)] + [
    "What colour is the circle? red blue green", "The answer is red. The circle is blue.",
] * 20
CONV = [{"from": "human", "value": "<image>\nWhat colour is the circle?"}, {"from": "gpt", "value": "red"}]


def _save(tmp_path, kind):
    tok = Tokenizer(models.BPE(unk_token="<unk>" if kind == "sp" else None))
    if kind == "sp":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if kind == "byte" else [])
    tok.train_from_iterator(CORPUS, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>" if kind == "sp" else None).save_pretrained(tmp_path)
    return tmp_path


@pytest.fixture(scope="module", params=["sp", "byte"])
def saved(request, tmp_path_factory):
    return _save(tmp_path_factory.mktemp(request.param), request.param)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_subword_labels_decode_to_the_answer(saved, name):
    tok = load_tokenizer(saved, template=name)
    ids, labels = encode_conversation(CONV, tok, name, 256)
    answer_ids = [lab for lab in labels if lab != IGNORE_INDEX]
    assert tok.decode(answer_ids, skip_special_tokens=True).strip() == "red"
    assert answer_ids[-1] in (tok.eos_token_id, tok.convert_tokens_to_ids(TEMPLATES[name].end_of_turn))
    # the generation prompt is a prefix of the training sequence: what evaluation feeds is what was trained
    prompt = encode_prompt(CONV[0]["value"], tok, name)
    assert ids[: len(prompt)] == prompt
    assert all(lab == IGNORE_INDEX for lab in labels[: len(prompt)])
    text = tok.decode(ids, skip_special_tokens=False)
    assert build_prompt(CONV[0]["value"], name).replace("\n", "").replace(" ", "") in text.replace("\n", "").replace(" ", "")
