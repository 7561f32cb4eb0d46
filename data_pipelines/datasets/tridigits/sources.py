"""The real sources of TriDigits: Debian packages, fetched with apt and unpacked with dpkg-deb.

TriDigits joins three real things that share only the digit they show or say:
- 5,000 handwritten digit images (20x20 grayscale, from MNIST) in ``digits.png`` of ``opencv-doc``;
- 320 human recordings of the words zero..nine, 33 voices in 22 languages, from
  ``tuxpaint-stamps-default`` (Ogg Vorbis) and the Asterisk voice prompt packages (WAV, raw GSM);
- the number word in each clip's language, from Tux Paint's ``symbols/math/N.txt``.

This module only finds and reads those files; ``build.py`` turns them into a dataset. Nothing
here is downloaded from a model or dataset hub: ``apt-get download`` talks to the system's Debian
(or Ubuntu) package mirror, a package registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
from PIL import Image  # pillow comes with matplotlib, a dependency of gram_jax

from data_pipelines.atomic_dir import publish_dir, staging_dir

# Package -> the member glob (inside the package's file system tree) that TriDigits reads.
PACKAGES: dict[str, str] = {
    "opencv-doc": "*/examples/data/digits.png",
    "tuxpaint-stamps-default": "./usr/share/tuxpaint/stamps/symbols/math/[0-9]*",
    "asterisk-core-sounds-en-wav": "./usr/share/asterisk/sounds/*/digits/[0-9].wav",
    "asterisk-core-sounds-es-wav": "./usr/share/asterisk/sounds/*/digits/[0-9].wav",
    "asterisk-core-sounds-fr-wav": "./usr/share/asterisk/sounds/*/digits/[0-9].wav",
    "asterisk-core-sounds-it-wav": "./usr/share/asterisk/sounds/*/digits/[0-9].wav",
    "asterisk-core-sounds-ru-wav": "./usr/share/asterisk/sounds/*/digits/[0-9].wav",
    "asterisk-prompt-es-co": "./usr/share/asterisk/sounds/*/digits/[0-9].gsm",
    "asterisk-prompt-fr-armelle": "./usr/share/asterisk/sounds/*/digits/[0-9].gsm",
    "asterisk-prompt-it-menardi-wav": "./usr/share/asterisk/sounds/*/digits/[0-9].wav",
}

DIGITS_PNG = "usr/share/doc/opencv-doc/examples/data/digits.png"
TUXPAINT_MATH = "usr/share/tuxpaint/stamps/symbols/math"
ASTERISK_SOUNDS = "usr/share/asterisk/sounds"
# Written last into an unpacked source tree: its presence marks a whole tree.
UNPACKED_MARKER = ".unpacked"

# Tux Paint names its clips N.ogg (English), N_<lang>.ogg and N_desc_<lang>.ogg (a second voice).
_TUXPAINT_CLIP = re.compile(r"^(\d)(?:_(desc_)?(.+))?\.ogg$")
# Asterisk voice directories: a bare language code (es-co, fr-armelle) or
# <lang>_<REGION>_<sex>_<name>.
_ASTERISK_VOICE = re.compile(r"^([a-z]{2})(?:_[A-Z]{2}_[fm]_\w+)?$")
# Names of the bare-code Asterisk voices, after the packages that ship them.
_ASTERISK_BARE_NAMES = {"es": "es_co", "fr": "fr_armelle"}


@dataclasses.dataclass(frozen=True)
class SpeechClip:
    """One real recording of one digit word.

    Attributes:
      voice: stable speaker id, e.g. ``tuxpaint_ko``, ``tuxpaint_desc_fr``, ``asterisk_fr_armelle``.
      language: the language code used to look up the word (``en``, ``en_GB``, ``zh_TW``, ...).
      label: the digit 0..9.
      path: the file under the unpacked source tree.
      container: FFmpeg format name to force (``gsm`` for raw GSM, which has no header), or None.
    """

    voice: str
    language: str
    label: int
    path: pathlib.Path
    container: str | None = None


def sha256_file(path: pathlib.Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(cmd: list[str], cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise RuntimeError(
            f"TriDigits needs the command {cmd[0]!r} (Debian/Ubuntu apt and dpkg) to fetch its "
            "sources; on another system unpack the packages yourself and pass --source-dir"
        ) from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(
            f"command failed ({e.returncode}): {' '.join(cmd)}\n{e.stderr.strip()}"
        ) from e


def download_packages(
    deb_dir: pathlib.Path, packages: list[str] | None = None
) -> list[pathlib.Path]:
    """``apt-get download`` each TriDigits package into ``deb_dir`` unless a .deb is already there.

    Returns the .deb paths in the order of ``PACKAGES``. Raises RuntimeError naming the package and
    the apt message when apt cannot find it (run ``apt-get update`` first on a fresh machine).
    """
    deb_dir.mkdir(parents=True, exist_ok=True)
    packages = list(PACKAGES) if packages is None else packages
    missing = [p for p in packages if not list(deb_dir.glob(f"{p}_*.deb"))]
    if missing:
        # Download into a private folder, then move each whole .deb into deb_dir: a concurrent
        # or killed download never leaves a truncated .deb under its final name.
        staged = staging_dir(deb_dir / "download")
        try:
            _run(["apt-get", "download", *missing], cwd=staged)
            for deb in staged.glob("*.deb"):
                os.replace(deb, deb_dir / deb.name)
        except RuntimeError as e:
            raise RuntimeError(
                f"apt-get download failed for {missing} into {deb_dir}: {e}\n"
                "On a fresh machine run `sudo apt-get update` first, or download and unpack the "
                "packages yourself and pass --source-dir DIR (the unpacked root holding usr/share)."
            ) from e
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    debs = []
    for p in packages:
        found = sorted(deb_dir.glob(f"{p}_*.deb"))
        if not found:
            raise RuntimeError(f"apt-get download reported success but no {p}_*.deb in {deb_dir}")
        debs.append(found[-1])
    return debs


def unpack_packages(debs: list[pathlib.Path], source_dir: pathlib.Path) -> pathlib.Path:
    """Extract only the TriDigits members of each .deb into ``source_dir`` (``dpkg-deb``).

    Extracting the needed members only, instead of ``dpkg-deb -x`` of everything, saves about half
    of the 20 s that the 370 MB of packages take to unpack on 2 cores.
    """
    source_dir.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        package = deb.name.split("_", 1)[0]
        pattern = PACKAGES.get(package)
        if pattern is None:
            raise ValueError(f"{deb}: not a TriDigits package (expected one of {list(PACKAGES)})")
        stream = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        tar = subprocess.run(
            ["tar", "-x", "-C", str(source_dir), "--wildcards", pattern],
            stdin=stream.stdout,
            capture_output=True,
            text=True,
        )
        stream.stdout.close()
        if stream.wait() != 0 or tar.returncode != 0:
            raise RuntimeError(f"unpacking {deb} ({pattern}) failed: {tar.stderr.strip()}")
    return source_dir


def _is_unpacked(source_dir: pathlib.Path) -> bool:
    return (source_dir / UNPACKED_MARKER).exists()


def fetch_sources(cache_dir: pathlib.Path) -> pathlib.Path:
    """Download and unpack (each once) all packages under ``cache_dir``; returns the source root.

    The tree is unpacked into a private folder and renamed into place whole (``atomic_dir``), so a
    concurrent fetch or a half-unpacked leftover of a killed run never yields a partial tree.
    """
    source_dir = cache_dir / "sources"
    if _is_unpacked(source_dir):
        return source_dir
    debs = download_packages(cache_dir / "debs")
    staged = staging_dir(source_dir)
    try:
        unpack_packages(debs, staged)
        (staged / UNPACKED_MARKER).write_text("\n".join(d.name for d in debs) + "\n")
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    publish_dir(staged, source_dir, is_complete=_is_unpacked)
    return source_dir


def load_digit_images(source_dir: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digit cells of ``digits.png``.

    Returns:
      images: uint8[5000, 20, 20] (white digit on black, as in the file);
      labels: int32[5000]; the sheet has 50 rows of 100 cells, each block of 5 rows one digit.
    """
    path = source_dir / DIGITS_PNG
    if not path.is_file():
        raise FileNotFoundError(f"TriDigits images: expected {path} (package opencv-doc)")
    sheet = np.asarray(Image.open(path).convert("L"))
    if sheet.shape != (1000, 2000):
        raise ValueError(f"{path}: expected a 1000x2000 sheet of 20x20 digits, got {sheet.shape}")
    cells = sheet.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)
    labels = np.repeat(np.arange(10, dtype=np.int32), 500)
    return np.ascontiguousarray(cells), labels


def _clean_word(text: str) -> str:
    # Tux Paint ends most words with sentence punctuation ("Three.", "さん！", "तीन|").
    return text.strip().rstrip(".!|。！").strip()


def load_number_words(source_dir: pathlib.Path) -> dict[int, dict[str, str]]:
    """digit -> {language code: number word} from Tux Paint's ``N.txt`` (first line = English)."""
    words: dict[int, dict[str, str]] = {}
    for digit in range(10):
        path = source_dir / TUXPAINT_MATH / f"{digit}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"TriDigits words: expected {path} (tuxpaint-stamps-default)")
        lines = path.read_text(encoding="utf-8").splitlines()
        table = {"en": _clean_word(lines[0])}
        for line in lines[1:]:
            key, sep, value = line.partition("=")
            if sep and key.endswith(".utf8") and _clean_word(value):
                table[key[: -len(".utf8")]] = _clean_word(value)
        words[digit] = table
    return words


def word_for(words: dict[int, dict[str, str]], digit: int, language: str) -> str:
    """The number word for ``digit`` in ``language`` (case-insensitive code, e.g. ``zh_tw``)."""
    table = words[digit]
    by_lower = {k.lower(): v for k, v in table.items()}
    for key in (language.lower(), language.split("_")[0].lower()):
        if key in by_lower:
            return by_lower[key]
    raise KeyError(f"Tux Paint has no word for digit {digit} in language {language!r}")


def find_speech_clips(source_dir: pathlib.Path) -> list[SpeechClip]:
    """Every digit recording of both sources, sorted by (voice, label)."""
    clips: list[SpeechClip] = []
    math_dir = source_dir / TUXPAINT_MATH
    if not math_dir.is_dir():
        raise FileNotFoundError(f"TriDigits speech: expected {math_dir} (tuxpaint-stamps-default)")
    for path in math_dir.glob("*.ogg"):
        m = _TUXPAINT_CLIP.match(path.name)
        if m is None:
            continue  # e.g. sound effects of other stamps
        digit, desc, lang = int(m.group(1)), m.group(2) or "", m.group(3) or "en"
        # Region codes are upper case in the word tables (zh_TW, en_GB).
        lang = lang if "_" not in lang else lang.split("_")[0] + "_" + lang.split("_")[1].upper()
        clips.append(SpeechClip(f"tuxpaint_{desc}{lang}", lang, digit, path))
    sounds = source_dir / ASTERISK_SOUNDS
    if not sounds.is_dir():
        raise FileNotFoundError(f"TriDigits speech: expected {sounds} (asterisk sound packages)")
    for voice_dir in sorted(p for p in sounds.iterdir() if p.is_dir()):
        m = _ASTERISK_VOICE.match(voice_dir.name)
        if m is None:
            raise ValueError(f"{voice_dir}: unexpected Asterisk voice directory name")
        name = _ASTERISK_BARE_NAMES.get(voice_dir.name, voice_dir.name)
        for path in (voice_dir / "digits").glob("[0-9].*"):
            container = "gsm" if path.suffix == ".gsm" else None
            clips.append(
                SpeechClip(f"asterisk_{name}", m.group(1), int(path.stem), path, container)
            )
    if not clips:
        raise FileNotFoundError(f"no TriDigits speech clips under {source_dir}")
    return sorted(clips, key=lambda c: (c.voice, c.label))
