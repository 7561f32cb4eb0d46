"""One key for the evaluation protocol: ``config.protocol``.

The standard MSR-VTT 1k-A protocol and the released code's differ in which test videos count and
in how missing audio is handled. Four keys carry that choice (``data.caption_mode``,
``data.filter_audio``, ``data.bad_data`` and each retrieval evaluator's ``captions`` and
``require``); ``config.protocol`` sets them together so they cannot disagree:

- ``'standard_1ka'``: every test video (MSR-VTT: all 1,000) and its first caption as the query
  (1k-A: 1,000 queries); a video without an audio file (or with an unreadable one) stays in the
  gallery with its audio marked absent (``present_audio=False``, left out of its Gram matrix;
  ``bad_data='skip'`` counts and logs each one); training reads every caption.
- ``'released_audio_filtered'``: the released code's protocol: records without a readable audio
  file are dropped before anything else (MSR-VTT test: 884 of 1,000 videos with audio), the first
  caption of each row; a file that fails to decode after that stops the run
  (``bad_data='raise'``).
- ``''`` (the default): sets nothing; each key keeps the value the config gives it.

The settings apply to ``config.data``, and to every retrieval evaluator and its own data
overrides (``evals.<name>.data``, the zero-shot rows). Classification evaluators keep theirs.
"""

from __future__ import annotations

import ml_collections

from gram_jax.config.validation import ConfigError

PROTOCOLS = ("", "standard_1ka", "released_audio_filtered")

# {protocol: {data key: value}}; the evaluators' keys are derived in `apply_protocol`.
DATA_SETTINGS = {
    "standard_1ka": dict(caption_mode="all", filter_audio=False, bad_data="skip"),
    "released_audio_filtered": dict(caption_mode="first", filter_audio=True, bad_data="raise"),
}


def apply_protocol(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sets the protocol's keys (in place; returns `config`); ``protocol=''`` sets nothing."""
    protocol = config.get("protocol", "")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"config.protocol={protocol!r}: expected one of {PROTOCOLS}")
    if not protocol or "data" not in config:
        return config
    data = DATA_SETTINGS[protocol]
    for key, value in data.items():
        config.data[key] = value
    released = protocol == "released_audio_filtered"
    for ev in (config.get("evals") or {}).values():
        if ev.get("type") != "retrieval":
            continue
        # An evaluator entry is a user-chosen dict (its keys are optional): adding ours is expected,
        # also when the config was locked by the command-line flag.
        with ev.unlocked():
            ev.captions = "first"
            # The filter already dropped records without audio; `require` also drops those whose
            # audio could not be read, where the evaluator scores audio at all.
            ev.require = ("audio",) if released and "audio" in ev.get("modalities", ()) else ()
        overrides = ev.get("data")
        if overrides:
            # The overrides hold only the keys an evaluator changes: adding ours is expected.
            with overrides.unlocked():
                for key, value in data.items():
                    overrides[key] = value
    return config
