r"""Zero-shot audio-visual classification (the paper's VGGSound and AudioSet results), GRAM T-VA.

Paper numbers: not in the sources available offline (the paper's classification tables are
not retrieved); take them from the paper's PDF. This config states the protocol and runs it.

The model is the zero-shot T-VA model of Table 1 (`zeroshot_tva.py`: GRAM's losses on the VAST-27M
150k subset, continuing from a VAST checkpoint); this config trains it the same way and evaluates
classification instead of retrieval, so a run of ``zeroshot_tva.py`` can also be evaluated here.

- ``vggsound`` (single label, 309 classes): the released protocol
  (``evaluation/evaluation_classification.py``, which crashes as shipped):
  the class names are the items' captions (one prompt per class), each class ranks all test
  items by volume, the top 50 per class are re-scored by the matching head. Metrics:
  ``class/R@1`` (percent of classes whose best item is theirs), ``class/mAP``, and the item
  accuracy ``top1``/``top5`` of the same matrix. Data: ``$GRAM_DATA/vggsound`` with
  ``annotations/descs_cls_test.json`` (records ``{"video_id", "desc": class name, "label": id}``),
  ``videos/``, ``audios/`` (layout `data_pipelines.datasets.vggsound`).
- ``audioset`` (multi-label, 527 classes): no released protocol exists; each item is scored
  against every class prompt by volume and the metric is mAP over classes. Data:
  ``$GRAM_DATA/audioset`` with ``annotations/descs_cls_eval.json`` (``"label": [ids]``) and
  ``annotations/class_names.json`` (the 527 names in class-id order).

Both use the reference protocol of the retrieval rows: first caption, records without an audio
file dropped (``filter_audio``), 8 frames, one audio slice, plain resize.

Command::

  python -m gram_jax.cli.train --config experiments/paper/classify_tva.py:vggsound \
      --workdir runs/zeroshot_tva --config.model_init=ckpt/vast/params
  gram-eval --config experiments/paper/classify_tva.py:vggsound --workdir runs/zeroshot_tva

Steps: as ``zeroshot_tva.py`` (150,000 // 128 * 5 = 5,855 steps at global batch 128).

Hardware: 4 GPUs with 80 GB each (A100/H100), as ``zeroshot_tva.py``. Not run here: the
development machine has 2 CPU cores and neither dataset. CPU smoke run: ``:runlocal`` (tiny towers
on the 4 real reference clips; classification of them as "a dog" / "a cat" with the released
per-class protocol, matching re-rank of the top 2).
"""

from __future__ import annotations

import ml_collections

from data_pipelines.datasets import get_layout
from data_pipelines.datasets.reference_clips import LAYOUT, MEDIA_DIR
from experiments.paper import paper_base
from gram_jax.config.loading import parse_config_arg

DATASETS = ("vggsound", "audioset")
MODALITIES = paper_base.ROWS["tva"]
# The paper row and the arguments get_config accepts (tests/test_paper_rows.py enumerates them).
ROW = "tva"
ARGUMENTS = ("", *DATASETS)
AUDIOSET_CLASSES = 527


def classification_eval(dataset: str) -> dict:
    """The evaluator entry of one classification dataset (module docstring)."""
    layout = get_layout(dataset)
    root = paper_base.data_root() / dataset
    data = dict(
        dataset=dataset,
        annotations={"test": str(root / "annotations" / layout.annotations["test"])},
        video_dir=str(root / layout.video_dir),
        audio_dir=str(root / layout.audio_dir),
        modalities=(*MODALITIES, "text"),
        eval_num_frames=layout.test_frames,
        resize=layout.resize,
        audio=dict(num_clips=layout.audio_clips),
        caption_mode="first",
        filter_audio=True,
    )
    ev = dict(type="classification", split="test", modalities=MODALITIES, scoring="volume")
    if dataset == "vggsound":
        return dict(ev, data=data, protocol="per_class", rerank_top_k=50)
    data["num_classes"] = AUDIOSET_CLASSES
    prompts = root / "annotations" / "class_names.json"
    return dict(ev, data=data, protocol="per_item", prompts_file=str(prompts))


def runlocal_classification(config) -> None:
    """Replaces the evaluators with the released protocol on the 4 clips as dog / cat."""
    annotations = str(MEDIA_DIR / LAYOUT.annotations["classification"])
    config.evals = ml_collections.ConfigDict(
        {
            "reference_clips_classes": dict(
                type="classification",
                split="classification",
                modalities=MODALITIES,
                data=dict(annotations=dict(classification=annotations)),
                protocol="per_class",
                rerank_top_k=2,
            )
        }
    )


def get_config(arg: str | None = None):
    """``arg``: the datasets to evaluate (default both) and/or ``runlocal``."""
    parsed = parse_config_arg(
        arg, source="experiments/paper/classify_tva.py", words=(*DATASETS, "runlocal")
    )
    datasets = [w for w in parsed.words if w in DATASETS] or list(DATASETS)
    config = paper_base.zeroshot_config("tva", None)
    config.evals = ml_collections.ConfigDict({d: classification_eval(d) for d in datasets})
    if parsed.has("runlocal"):
        paper_base.runlocal(config, row="tva")
        runlocal_classification(config)
    return config
