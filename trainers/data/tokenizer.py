"""Tokenizers: a real word-level tokenizer built from the data (tiny LLM preset), and loading of
hub/local tokenizers with the image token and a pad token guaranteed."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from trainers.data.errors import DataError
from trainers.data.prompts import MULTIPLE_CHOICE_SUFFIX, SHORT_ANSWER_SUFFIX, YES_NO_SUFFIX
from trainers.data.templates import IMAGE_TOKEN, all_markers, get_template, template_texts

logger = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
BASE_SPECIALS = (PAD, BOS, EOS, UNK, IMAGE_TOKEN)


def _word_pipeline() -> Tokenizer:
    # case is kept: option letters and proper answers must decode as written (scorers parse "B")
    tok = Tokenizer(models.WordLevel(vocab={UNK: 0}, unk_token=UNK))
    tok.normalizer = normalizers.NFC()
    # Whitespace split, then every punctuation char its own token (so "option's" -> option ' s).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    return tok


def build_word_tokenizer(texts: Iterable[str], out_dir: str | Path) -> PreTrainedTokenizerFast:
    """WordLevel tokenizer over the words of `texts`, the templates' role strings and the prompt
    suffixes; special tokens <pad> <s> </s> <unk> <image> + role markers. Saved to out_dir."""
    probe = _word_pipeline()
    specials = list(BASE_SPECIALS) + [m for m in all_markers() if m not in BASE_SPECIALS]
    words: dict[str, None] = {}
    corpus = list(template_texts()) + [SHORT_ANSWER_SUFFIX, MULTIPLE_CHOICE_SUFFIX, YES_NO_SUFFIX]
    n_texts = 0
    for text in list(texts) + corpus:
        if not isinstance(text, str):
            raise DataError(f"build_word_tokenizer: texts must be strings, got {type(text).__name__}")
        n_texts += 1
        for s in specials:  # special tokens are matched before normalisation, keep them out of words
            text = text.replace(s, " ")
        norm = probe.normalizer.normalize_str(text)
        for word, _ in probe.pre_tokenizer.pre_tokenize_str(norm):
            words[word] = None
    vocab = {s: i for i, s in enumerate(specials)}
    for w in sorted(words):
        vocab.setdefault(w, len(vocab))
    tok = _word_pipeline()
    tok.model = models.WordLevel(vocab=vocab, unk_token=UNK)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        extra_special_tokens=[s for s in specials if s not in (PAD, BOS, EOS, UNK)],
        clean_up_tokenization_spaces=False,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    logger.info("word tokenizer: %d tokens from %d texts -> %s", len(vocab), n_texts, out_dir)
    return hf


def ensure_special_tokens(tokenizer, template: str | None = None) -> int:
    """Add IMAGE_TOKEN, a pad token and (given a template) its role markers where missing.
    Returns how many tokens were added (the model must then resize its embeddings)."""
    # Added tokens are matched before pre-tokenisation; a marker that is merely a BPE vocab entry
    # would be merged with its neighbours, so it is registered (reusing its id) too.
    added_vocab = tokenizer.get_added_vocab()
    wanted = [IMAGE_TOKEN] + (list(get_template(template).markers) if template else [])
    missing = [AddedToken(s, special=True, normalized=False) for s in wanted if s not in added_vocab]
    # registered as extra special tokens so that decode(skip_special_tokens=True) drops them
    added = tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False) \
        if missing else 0
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": PAD})
    if added:
        logger.info("added %d special tokens to %s (vocab now %d)", added, type(tokenizer).__name__, len(tokenizer))
    return added


def load_tokenizer(src: str | Path, template: str | None = None) -> PreTrainedTokenizerFast:
    """A hub id or local directory; IMAGE_TOKEN (one token) and a pad token are guaranteed."""
    try:
        tok = AutoTokenizer.from_pretrained(str(src))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot load a tokenizer from {src}: {str(err).splitlines()[0]}") from None
    if not getattr(tok, "is_fast", False):
        raise DataError(f"tokenizer at {src} is not a fast tokenizer (label masking needs offsets)")
    ensure_special_tokens(tok, template)
    ids = tok(IMAGE_TOKEN, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise DataError(f"tokenizer at {src}: {IMAGE_TOKEN} encodes to {len(ids)} tokens, expected one")
    return tok
