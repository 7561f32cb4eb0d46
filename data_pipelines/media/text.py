"""BERT WordPiece tokenizer (uncased), on HF ``tokenizers``; equal to transformers' BertTokenizer.

The reference encodes captions with ``BertTokenizer('bert-base-uncased')``,
``padding='max_length'``, ``truncation=True`` (reference section 3.3). bert-base-uncased's
30,522-token vocabulary ships inside this package (``data_pipelines/vocab/bert-base-uncased/``,
Apache-2.0, see its NOTICE), so nothing is downloaded and no PyTorch package is needed.

The pipeline is the ``tokenizers`` library's BERT one, in BERT's order:
1. ``BertNormalizer``: drop NUL, U+FFFD and control characters, every whitespace character
   becomes a space, spaces around CJK ideographs (each is its own word), lower-case and strip
   accents (NFD, drop combining marks) when ``lowercase``;
2. ``BertPreTokenizer``: split on whitespace and around every punctuation character (ASCII
   symbols count as punctuation, as in BERT);
3. ``WordPiece``: greedy longest-match-first against the vocabulary, continuation pieces prefixed
   with ``##``; a word longer than 100 characters or with an unmatched remainder becomes [UNK];
4. template ``[CLS] $A [SEP]``, truncation of the body, [PAD] padding to the asked length.

The vocabulary file is one token per line (line number = id). Which file a pipeline reads is the
data config's ``vocab_file`` (None: :func:`default_vocab_path`); see :func:`from_data_config`.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import tokenizers
from tokenizers import normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"

_VOCAB_DIR = pathlib.Path(__file__).resolve().parent.parent / "vocab"


def default_vocab_path() -> pathlib.Path:
    """bert-base-uncased's vocab.txt (30,522 tokens), shipped in ``data_pipelines/vocab``."""
    return _VOCAB_DIR / "bert-base-uncased" / "vocab.txt"


def _read_vocab(path: pathlib.Path) -> dict[str, int]:
    """token -> id (its line number); a repeated token keeps its first line, as BertTokenizer."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as err:
        raise FileNotFoundError(f"cannot read the WordPiece vocabulary {path}: {err}") from err
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        token = token.rstrip("\r")
        if token and token not in vocab:
            vocab[token] = i
    for special in (PAD, UNK, CLS, SEP):
        if special not in vocab:
            raise ValueError(
                f"vocabulary {path} lacks the special token {special} (expected one token per "
                f"line with {PAD}, {UNK}, {CLS} and {SEP} among them)"
            )
    return vocab


def bert_normalizer_and_pre_tokenizer(
    *, lowercase: bool = True, strip_accents: bool | None = None
) -> tuple[normalizers.Normalizer, pre_tokenizers.PreTokenizer]:
    """BERT's normaliser (``strip_accents`` None: as ``lowercase``) and pre-tokeniser."""
    norm = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=True,
        strip_accents=lowercase if strip_accents is None else strip_accents,
        lowercase=lowercase,
    )
    return norm, pre_tokenizers.BertPreTokenizer()


def _tokenizer_config(vocab_path: pathlib.Path) -> dict:
    """``tokenizer_config.json`` beside the vocabulary (transformers' convention), or {}."""
    path = vocab_path.parent / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: expected a JSON object of tokenizer settings: {err}") from err
    for key in ("do_lower_case", "strip_accents"):
        if config.get(key) is not None and not isinstance(config[key], bool):
            raise ValueError(
                f"{path}: key {key!r}: expected true, false or null, got {config[key]!r}"
            )
    return config


class Tokenizer:
    """BERT WordPiece tokenizer, uncased by default (a ``tokenizers.Tokenizer`` underneath).

    Args:
      vocab_file: one token per line (line number = id); default: :func:`default_vocab_path`.
        A ``tokenizer_config.json`` beside it may set ``do_lower_case`` and ``strip_accents``
        (transformers' keys), the defaults of the next two arguments.
      lowercase: lower-case (True for the uncased vocabulary; None: the file's setting or True).
      strip_accents: NFD and drop combining marks (None: the file's setting, else ``lowercase``,
        BERT's rule).
      max_input_chars_per_word: longer words become [UNK] (BERT's 100).
    """

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        *,
        lowercase: bool | None = None,
        strip_accents: bool | None = None,
        max_input_chars_per_word: int = 100,
    ):
        path = pathlib.Path(vocab_file) if vocab_file is not None else default_vocab_path()
        self.vocab: dict[str, int] = _read_vocab(path)
        settings = _tokenizer_config(path)
        if lowercase is None:
            lowercase = settings.get("do_lower_case", True)
        if strip_accents is None:
            strip_accents = settings.get("strip_accents")
        if strip_accents is None:
            strip_accents = lowercase
        self.vocab_file = path
        self.lowercase = bool(lowercase)
        self.strip_accents = bool(strip_accents)
        self.max_input_chars_per_word = max_input_chars_per_word
        self.pad_id = self.vocab[PAD]
        self.unk_id = self.vocab[UNK]
        self.cls_id = self.vocab[CLS]
        self.sep_id = self.vocab[SEP]
        self._inverse = {i: t for t, i in self.vocab.items()}

        tok = tokenizers.Tokenizer(
            WordPiece(
                self.vocab,
                unk_token=UNK,
                max_input_chars_per_word=max_input_chars_per_word,
                continuing_subword_prefix="##",
            )
        )
        tok.normalizer, tok.pre_tokenizer = bert_normalizer_and_pre_tokenizer(
            lowercase=self.lowercase, strip_accents=self.strip_accents
        )
        tok.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}",
            special_tokens=[(CLS, self.cls_id), (SEP, self.sep_id)],
        )
        # BertTokenizer never splits its special tokens: "[UNK]" inside a text is the [UNK] id.
        tok.add_special_tokens([t for t in (PAD, UNK, CLS, SEP, MASK) if t in self.vocab])
        self._tok = tok
        # One configured copy per max_len (truncation and padding are state of a tokenizers
        # object; copies keep encode() free of shared mutable settings across threads).
        self._by_len: dict[int, tokenizers.Tokenizer] = {}

    def __getstate__(self) -> dict:
        # Grain pickles transforms into worker processes; the per-length copies are rebuilt there.
        state = self.__dict__.copy()
        state["_by_len"] = {}
        return state

    @property
    def vocab_size(self) -> int:
        """V: 1 + the largest id (rows an embedding table needs)."""
        return max(self.vocab.values()) + 1

    @staticmethod
    def _check(texts: Sequence[str]) -> None:
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"Tokenizer expects str texts, got {type(text).__name__}: {text!r}")

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text`` (no [CLS]/[SEP])."""
        self._check([text])
        return self._tok.encode(text, add_special_tokens=False).tokens

    def token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` (no [CLS]/[SEP])."""
        self._check([text])
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Tokens of ``ids`` (for debugging and error messages)."""
        return [self._inverse.get(int(i), UNK) for i in ids]

    def _for_length(self, max_len: int) -> tokenizers.Tokenizer:
        tok = self._by_len.get(max_len)
        if tok is None:
            tok = tokenizers.Tokenizer.from_str(self._tok.to_str())
            # max_length counts [CLS] and [SEP]: the body is cut to max_len - 2, [SEP] stays last.
            tok.enable_truncation(max_length=max_len)
            tok.enable_padding(length=max_len, pad_id=self.pad_id, pad_token=PAD)
            self._by_len[max_len] = tok
        return tok

    def encode(self, texts: str | Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """``[CLS] tokens [SEP]``, truncated and [PAD]-padded to ``max_len``.

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
        texts = list(texts)
        self._check(texts)
        tok = self._for_length(int(max_len))
        # One text (the per-sample pipeline) skips the batch call's thread pool.
        encodings = [tok.encode(texts[0])] if len(texts) == 1 else tok.encode_batch(texts)
        ids = np.zeros((len(texts), max_len), dtype=np.int32)
        mask = np.zeros((len(texts), max_len), dtype=np.int32)
        for row, enc in enumerate(encodings):
            ids[row] = enc.ids
            mask[row] = enc.attention_mask
        return ids, mask


def from_data_config(config) -> Tokenizer:
    """The tokenizer of a data config: its ``vocab_file`` (None or '': the shipped BERT one)."""
    vocab_file = config.get("vocab_file") if hasattr(config, "get") else None
    return Tokenizer(vocab_file or None)
