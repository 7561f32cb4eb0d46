"""The TriDigits WordPiece vocabulary: every word and every character of the build's own texts.

bert-base-uncased's vocabulary has no token for 10 of TriDigits' number words (Korean 셋 넷 다섯
여섯 여덟, Chinese 零 六 七 九, Japanese きゅう): all ten become the one id sequence
``[CLS] [UNK] [SEP]``, and its accent stripping merges Zéro/Zero and Três/Tres. A text tower
trained from scratch gains nothing from BERT's vocabulary, so a build writes its own, derived
deterministically from the texts of all its annotation files:

- ``[PAD] [UNK] [CLS] [SEP] [MASK]`` at ids 0-4 ([PAD] = 0 as the pipeline's padding rows);
- every word (after the tokenizer's normalisation and pre-tokenisation), sorted by code point: a
  word of the dataset is one token, so distinct texts get distinct id sequences;
- every character as a word start and as a ``##`` continuation piece, sorted: an unseen word in
  these scripts (a typed query) is spelt out instead of becoming [UNK].

Normalisation: lower case, accents kept (``tokenizer_config.json`` beside ``vocab.txt`` says so
in the transformers convention, which ``media.text.Tokenizer`` reads), CJK ideographs split into
words of their own, punctuation split off, as BERT.

Files (in the build root): ``vocab.txt`` (one token per line, line number = id) and
``tokenizer_config.json``.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Iterable

from data_pipelines.media import text as text_media

VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS = (
    text_media.PAD,
    text_media.UNK,
    text_media.CLS,
    text_media.SEP,
    text_media.MASK,
)
#: The normalisation of the TriDigits vocabulary (transformers' tokenizer_config.json keys).
TOKENIZER_CONFIG = {"do_lower_case": True, "strip_accents": False, "tokenize_chinese_chars": True}


def vocab_tokens(texts: Iterable[str]) -> list[str]:
    """The vocabulary (token per id) of ``texts``: specials, sorted words, sorted characters."""
    norm, pre = text_media.bert_normalizer_and_pre_tokenizer(
        lowercase=TOKENIZER_CONFIG["do_lower_case"], strip_accents=TOKENIZER_CONFIG["strip_accents"]
    )
    words: set[str] = set()
    for text in texts:
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            words.add(word)
    words -= set(SPECIAL_TOKENS)
    chars = {c for w in words for c in w}
    return [
        *SPECIAL_TOKENS,
        *sorted(words),
        *sorted(chars - words),
        *sorted(f"##{c}" for c in chars),
    ]


def annotation_texts(root: pathlib.Path) -> list[str]:
    """Every ``desc`` of every annotation file of a build (all folds and splits)."""
    files = sorted((pathlib.Path(root) / "annotations").glob("*.json"))
    if not files:
        raise FileNotFoundError(
            f"TriDigits vocabulary: no annotation files in {pathlib.Path(root) / 'annotations'} "
            "(expected a build: gram-data build tridigits)"
        )
    texts = set()
    for path in files:
        for record in json.loads(path.read_text(encoding="utf-8")):
            texts.add(record["desc"])
    return sorted(texts)


def write_vocab(root: pathlib.Path) -> pathlib.Path:
    """Write ``vocab.txt`` and ``tokenizer_config.json`` of the build at ``root``; returns the
    vocab path. Each file is renamed into place whole (readers never see a partial file)."""
    root = pathlib.Path(root)
    tokens = vocab_tokens(annotation_texts(root))
    files = {
        TOKENIZER_CONFIG_FILE: json.dumps(TOKENIZER_CONFIG, indent=1) + "\n",
        VOCAB_FILE: "".join(f"{t}\n" for t in tokens),
    }
    # vocab.txt last: its presence marks both files written.
    for name, content in files.items():
        # A unique temporary name: builders in other threads or processes may write at once.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=root)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.replace(tmp, root / name)
    return root / VOCAB_FILE


def vocab_path(root: pathlib.Path) -> pathlib.Path:
    """``<root>/vocab.txt``: the vocabulary file of the build at ``root``."""
    return pathlib.Path(root) / VOCAB_FILE
