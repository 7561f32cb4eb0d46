"""WordPiece tokenizer: the real 30,522-token vocabulary, and equality with transformers."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from data_pipelines.media.text import Tokenizer, default_vocab_path

# Every real annotation file's captions (desc / caption lists / MSR-VTT audio captions).
CAPTION_FIELDS = ("desc", "caption", "audio_caption")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


@pytest.fixture(scope="module")
def real_texts(reference_data):
    """file name -> unique texts: the captions of every annotation file, and the MSR-VTT test
    subtitles (noisy ASR text)."""
    files = sorted((reference_data / "annotations").glob("*/*.json"))
    assert len(files) == 10
    texts: dict[str, list[str]] = {}
    for path in files:
        found: set[str] = set()
        for record in json.loads(path.read_text()):
            for field in CAPTION_FIELDS:
                value = record.get(field)
                found.update([value] if isinstance(value, str) else value or [])
            if path.name == "descs_ret_test.json" and path.parent.name == "msrvtt":
                found.add(record["subtitle"])
        texts[f"{path.parent.name}/{path.name}"] = sorted(found)
    return texts


def test_vocabulary(tokenizer):
    assert tokenizer.vocab_size == 30522
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id) == (
        0,
        100,
        101,
        102,
    )


def test_encode_layout(tokenizer):
    ids, mask = tokenizer.encode(["A dog is barking", "", "word " * 100], max_len=12)
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == (3, 12)
    assert tokenizer.decode(ids[0][:6]) == ["[CLS]", "a", "dog", "is", "barking", "[SEP]"]
    assert mask[0].tolist() == [1] * 6 + [0] * 6 and not ids[0, 6:].any()
    assert ids[1, :2].tolist() == [101, 102] and mask[1].sum() == 2
    # Truncation keeps [SEP] last.
    assert mask[2].all() and ids[2, -1] == 102 and ids[2, 0] == 101
    single, _ = tokenizer.encode("A dog", max_len=5)
    assert single.shape == (1, 5)
    with pytest.raises(ValueError, match="max_len"):
        tokenizer.encode(["x"], max_len=1)
    with pytest.raises(TypeError, match="str"):
        tokenizer.encode([None], max_len=8)


def test_normalisation_rules(tokenizer):
    # Lower case, accents stripped, punctuation split off, WordPiece continuation pieces.
    assert tokenizer.tokenize("Café  NAÏVE\tdéjà-vu!") == [
        "cafe",
        "naive",
        "de",
        "##ja",
        "-",
        "vu",
        "!",
    ]
    assert tokenizer.tokenize("playing") == ["playing"]
    assert tokenizer.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    assert tokenizer.tokenize("x" * 101) == ["[UNK]"]
    assert tokenizer.tokenize("a\x00b\ufffd c") == ["ab", "c"]
    # CJK ideographs are words of their own; this one is not in the vocabulary. Kana lose the
    # voicing mark with the accents.
    assert tokenizer.tokenize("猫が") == ["[UNK]", "か"]


def test_equal_to_transformers_bert_tokenizer_on_real_text(tokenizer, real_texts):
    """Every word of every real text tokenizes as transformers' BertTokenizer does, and full
    encodings (special tokens, truncation, padding) agree on 300 texts of every file."""
    transformers = pytest.importorskip("transformers")
    theirs = transformers.BertTokenizer.from_pretrained(str(default_vocab_path().parent))
    extra = ["Café  NAÏVE\tdéjà-vu!", "x" * 101, "a\x00b\ufffd c", "猫が", "$5 @home #1 ^_^"]
    # BERT splits on whitespace before anything else, so a text's tokens are the concatenation
    # of its space-separated chunks' tokens: checking the 34k unique chunks covers all 57k texts.
    chunks = sorted({c for texts in real_texts.values() for t in texts for c in t.split(" ")})
    assert len(chunks) > 30_000
    reference = theirs(chunks + extra, add_special_tokens=False)["input_ids"]
    ours = [tokenizer.token_ids(c) for c in chunks + extra]
    mismatched = [c for c, a, b in zip(chunks + extra, ours, reference, strict=True) if a != b]
    assert not mismatched, mismatched[:5]
    sample = [t for texts in real_texts.values() for t in texts[:300]] + extra
    for max_len in (40, 70):
        ids, mask = tokenizer.encode(sample, max_len)
        out = theirs(
            sample, padding="max_length", truncation=True, max_length=max_len, return_tensors="np"
        )
        np.testing.assert_array_equal(out["input_ids"], ids)
        np.testing.assert_array_equal(out["attention_mask"], mask)


def test_pickles_for_worker_processes(tokenizer):
    clone = pickle.loads(pickle.dumps(tokenizer))
    for text in ["A dog is barking", "unaffable déjà-vu"]:
        np.testing.assert_array_equal(clone.encode(text, 16)[0], tokenizer.encode(text, 16)[0])


def test_bad_vocabulary_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocabulary"):
        Tokenizer(tmp_path / "absent.txt")
    partial = tmp_path / "vocab.txt"
    partial.write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        Tokenizer(partial)
