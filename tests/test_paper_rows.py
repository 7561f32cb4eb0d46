"""Every paper row and modality-ablation variant trains and scores the modalities its name says.

T-V = (text, video), T-VA = (text, video, audio), T-VAS = (text, video, audio, subtitle), after
`gram_jax.config.prepare` (the fidelity switch and the keys it derives), in the model, the training
data and every retrieval evaluator. The rows are read from the config files themselves (each paper
module's ``ROW`` and ``ARGUMENTS``, each ablation's ``VARIANTS``), so a new row or dataset is
covered without editing this file.
"""

from __future__ import annotations

import pathlib

import pytest

from gram_jax.config import prepare
from gram_jax.config.loading import load_config_module

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
EXPECTED = {
    "tv": ("text", "video"),
    "tva": ("text", "video", "audio"),
    "tvas": ("text", "video", "audio", "subtitle"),
}


def _paper_cases() -> list[tuple[str, str, str]]:
    cases = []
    for path in sorted((EXPERIMENTS / "paper").glob("*.py")):
        if path.name in ("__init__.py", "paper_base.py"):
            continue
        module = load_config_module(path)
        for arg in module.ARGUMENTS:
            cases.append((f"paper/{path.name}", arg, module.ROW))
    return cases


def _ablation_cases() -> list[tuple[str, str, str]]:
    module = load_config_module(EXPERIMENTS / "ablations" / "modalities.py")
    return [("ablations/modalities.py", v, v) for v in module.VARIANTS]


CASES = _paper_cases() + _ablation_cases()


def test_every_row_module_is_enumerated():
    files = {c[0] for c in CASES}
    on_disk = {
        f"paper/{p.name}"
        for p in (EXPERIMENTS / "paper").glob("*.py")
        if p.name not in ("__init__.py", "paper_base.py")
    }
    assert on_disk <= files
    # Every reported dataset of a fine-tuned row is a case (Table 2: 4 + 4 + 2).
    finetune = [c for c in CASES if c[0].startswith("paper/finetune_")]
    assert len(finetune) == 10


@pytest.mark.parametrize(("relative", "arg", "row"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_row_modalities_after_prepare(relative, arg, row):
    config = prepare(
        load_config_module(EXPERIMENTS / relative).get_config(arg or None), count_data=False
    )
    want = EXPECTED[row]
    assert tuple(config.model.modalities) == want, relative
    assert set(config.data.modalities) == set(want), relative
    for name, ev in config.evals.items():
        if ev.type == "retrieval":
            assert ("text", *ev.modalities) == want, (relative, name)
            if "data" in ev and "modalities" in ev.data:
                assert set(ev.data.modalities) == set(want), (relative, name)


@pytest.mark.parametrize("relative", ["paper/finetune_tva.py", "ablations/modalities.py"])
def test_tva_and_tvas_differ(relative):
    module = load_config_module(EXPERIMENTS / relative)
    first, second = ("msrvtt", "msrvtt") if "paper" in relative else ("tva", "tvas")
    tvas_module = (
        load_config_module(EXPERIMENTS / "paper/finetune_tvas.py")
        if "paper" in relative
        else module
    )
    tva = prepare(module.get_config(first), count_data=False)
    tvas = prepare(tvas_module.get_config(second), count_data=False)
    assert "subtitle" not in tva.model.modalities
    assert "subtitle" in tvas.model.modalities


def test_released_subtitle_rule_is_a_stated_exception():
    """The paper configs keep row 2 off under fidelity='released'; setting it back on gives the
    released code's volume (the subtitle joins a T-VA row on MSR-VTT)."""
    config = load_config_module(EXPERIMENTS / "paper/finetune_tva.py").get_config("msrvtt")
    assert config.fidelity == "released"
    assert "model.subtitle_if_annotated" in config.fidelity_exceptions
    config.fidelity_exceptions = ()
    released = prepare(config, count_data=False)
    assert tuple(released.model.modalities) == ("text", "video", "audio", "subtitle")
