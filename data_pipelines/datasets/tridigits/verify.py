"""Checks that the unpacked sources hold the content TriDigits is defined by, on Debian or Ubuntu.

The check is on what the dataset takes from the packages, not on the packages' bytes, so the same
dataset builds from any distribution release that ships the same upstream files:

- each digit image: the sha256 of its 20x20 uint8 cell (decoded pixels; ``image_sha256``);
- each speech clip: the sha256 of the recording file as the upstream project ships it
  (Ogg Vorbis, WAV or raw GSM; a package build copies it unchanged; ``clip_sha256``);
- each number word the records use (``words``, keyed ``"<digit>/<language>"``): Tux Paint's
  ``N.txt`` files gain translations and spelling fixes between releases, so their bytes change;
  a verified build writes the committed words into its records and logs where the package's
  words differ (the text of the dataset stays the same on every release).

Measured on the Debian releases that apt reaches here: Debian 11 (tuxpaint-stamps 2014.08.23,
opencv-doc 4.5.1) and Debian 12 (2022.06.04 and 4.6.0) ship byte-identical clips and identical
digit pixels, while all 10 ``N.txt`` files differ; of the words used, one differs (Dutch "one",
"Een" in 2014, "Eén" in 2022). Debian 13 (tuxpaint-stamps 2025.03.31) re-encoded 167 of the 250
Tux Paint clips and moved the Colombian Spanish prompts to another folder: a different dataset,
which this check reports file by file (``--no-verify`` builds it anyway).
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np

from data_pipelines.datasets.tridigits import sources

REFERENCE_MANIFEST = pathlib.Path(__file__).with_name("manifest.json")


def source_content(
    images: np.ndarray,
    words: dict[int, dict[str, str]],
    clips: list[sources.SpeechClip],
    source_dir: pathlib.Path,
) -> dict:
    """What TriDigits reads from its sources, in the committed manifest's form.

    Args:
      images: uint8[5000, 20, 20] digit cells (`sources.load_digit_images`).
      words: digit -> {language: word} (`sources.load_number_words`).
      clips: every speech clip (`sources.find_speech_clips`).
      source_dir: the unpacked root the clip paths are under.
    Returns:
      {'image_sha256': [hex] per cell, 'clip_sha256': {path under the root: hex},
       'words': {'<digit>/<language>': word} for every (digit, language) of a clip}.
    """
    return {
        "image_sha256": [hashlib.sha256(cell.tobytes()).hexdigest() for cell in images],
        "clip_sha256": {
            str(c.path.relative_to(source_dir)): sources.sha256_file(c.path)
            for c in sorted(clips, key=lambda c: str(c.path))
        },
        "words": {
            f"{digit}/{language}": sources.word_for(words, digit, language)
            for digit, language in sorted({(c.label, c.language) for c in clips})
        },
    }


def committed_words(reference: pathlib.Path = REFERENCE_MANIFEST) -> dict[str, str]:
    """{'<digit>/<language>': word} of the committed manifest: the text of a verified build."""
    return json.loads(reference.read_text())["words"]


def verify_content(content: dict, reference: pathlib.Path = REFERENCE_MANIFEST) -> list[str]:
    """Compare `source_content` output with the committed manifest.

    Raises ValueError naming every differing image cell and clip file (missing, unexpected or
    other bytes) and every missing word; returns the words that differ from the committed ones
    ('<digit>/<language>: package word != committed word'), which the build logs and replaces.
    """
    expected = json.loads(reference.read_text())
    problems = []
    images, want_images = content["image_sha256"], expected["image_sha256"]
    if len(images) != len(want_images):
        problems.append(f"{len(images)} digit images, expected {len(want_images)}")
    problems += [
        f"digit image {i}: pixels differ"
        for i, (a, b) in enumerate(zip(images, want_images, strict=False))
        if a != b
    ]
    have, want = content["clip_sha256"], expected["clip_sha256"]
    problems += [f"missing {k}" for k in want if k not in have]
    problems += [f"unexpected {k}" for k in have if k not in want]
    problems += [
        f"{k}: sha256 {have[k]} != expected {v}" for k, v in want.items() if have.get(k, v) != v
    ]
    have, want = content["words"], expected["words"]
    problems += [f"no word for {k} (expected {v!r})" for k, v in want.items() if k not in have]
    if problems:
        raise ValueError(
            f"TriDigits sources differ from {reference} ({len(problems)} problems; other package "
            "versions?): " + "; ".join(problems[:10]) + ". Pass --no-verify to build anyway."
        )
    return [f"{k}: {have[k]!r} != committed {v!r}" for k, v in want.items() if have.get(k, v) != v]
