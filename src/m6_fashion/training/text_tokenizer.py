"""The text tokenizer of the stage-2 transformer.

A small lowercase tokenizer trained with `tokenizers` on the train captions (product names such as
"Turtle Check Men Navy Blue Shirt"), wrapped in a `transformers.PreTrainedTokenizerFast` and saved
with `save_pretrained` beside the model. Two models are offered:

* ``"wordlevel"`` (default): one id per lowercase word or punctuation mark seen at least
  ``min_frequency`` times; other words map to ``[UNK]``. About 4.7k words cover 98.6 % of the words
  of the train captions.
* ``"bpe"``: byte-pair encoding with ``vocab_size`` merges, no unknown words.

Special tokens come first, in this order, so their ids are fixed: ``[PAD]`` 0, ``[UNK]`` 1,
``[SEP]`` 2, ``[EOV]`` 3, ``[EOT]`` 4, ``[IMG]`` 5, ``[MASK]`` 6. The tokenizer adds no special
tokens around a caption (the sequence layout places EOV / EOT itself).
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "train_text_tokenizer", "special_token_ids", "config_token_kwargs", "load_text_tokenizer"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[SEP]", "[EOV]", "[EOT]", "[IMG]", "[MASK]")
TOKENIZER_MODELS = ("wordlevel", "bpe")


def _batched(texts: Iterable[str], size: int = 1000) -> Iterator[list]:
    batch = []
    for t in texts:
        if t is None:
            continue
        if not isinstance(t, str):
            raise TypeError(f"captions must be strings; got {type(t).__name__}")
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_text_tokenizer(
    texts: Iterable[str],
    model: str = "wordlevel",
    vocab_size: int = 8192,
    min_frequency: int = 2,
    max_length: int = 32,
) -> PreTrainedTokenizerFast:
    """Trains the caption tokenizer.

    Args:
        texts: the captions (e.g. the ``text`` column of the train split).
        model: ``"wordlevel"`` or ``"bpe"``.
        vocab_size: maximum vocabulary size, special tokens included.
        min_frequency: minimum count of a word (wordlevel) or pair (bpe) to enter the vocabulary.
        max_length: ``model_max_length`` of the returned tokenizer (the transformer's ``max_text_length``).

    Returns:
        a ``PreTrainedTokenizerFast`` with the special tokens of :data:`SPECIAL_TOKENS`.
    """
    if model not in TOKENIZER_MODELS:
        raise ValueError(f"model must be one of {TOKENIZER_MODELS}; got {model!r}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens; got {vocab_size}")
    if model == "wordlevel":
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS), show_progress=False
        )
    else:
        tok = Tokenizer(models.BPE(unk_token="[UNK]", end_of_word_suffix="</w>"))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            end_of_word_suffix="</w>",
            show_progress=False,
        )
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.decoder = decoders.BPEDecoder(suffix="</w>") if model == "bpe" else decoders.WordPiece(prefix="##", cleanup=True)
    tok.train_from_iterator(_batched(texts), trainer=trainer)
    if tok.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise ValueError("no caption token reached min_frequency; pass more captions or a lower min_frequency")
    for i, s in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(s) != i:
            raise RuntimeError(f"special token {s} got id {tok.token_to_id(s)}, expected {i}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        extra_special_tokens=["[EOV]", "[EOT]", "[IMG]"],
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
    )


def load_text_tokenizer(path: str) -> PreTrainedTokenizerFast:
    """Loads a tokenizer saved with ``save_pretrained`` and checks its special tokens."""
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    special_token_ids(tok)
    return tok


def special_token_ids(tokenizer) -> Dict[str, int]:
    """``{"pad": 0, "unk": 1, "sep": 2, "eov": 3, "eot": 4, "img": 5, "mask": 6}`` read from ``tokenizer``.

    Raises ``ValueError`` if one of :data:`SPECIAL_TOKENS` is missing.
    """
    ids = {}
    for s in SPECIAL_TOKENS:
        i = tokenizer.convert_tokens_to_ids(s)
        if i is None or (tokenizer.unk_token_id is not None and i == tokenizer.unk_token_id and s != "[UNK]"):
            raise ValueError(f"the text tokenizer lacks the special token {s}; expected all of {SPECIAL_TOKENS}")
        ids[s.strip("[]").lower()] = int(i)
    return ids


def config_token_kwargs(tokenizer) -> Dict[str, int]:
    """Keyword arguments for :class:`M6FashionConfig`: ``vocab_size`` and the ``*_token_id`` fields."""
    ids = special_token_ids(tokenizer)
    out = {f"{name}_token_id": i for name, i in ids.items()}
    out["vocab_size"] = len(tokenizer)
    return out
