"""Classification protocols: 'per_item' (argmin volume per item) and the released 'per_class'
(classes rank the items by volume, optional matching re-rank of each class's top k)."""

from __future__ import annotations

import numpy as np
import pytest

from gram_jax import volume
from gram_jax.evaluators.classification import (
    ZeroShotClassifier,
    mean_average_precision,
    per_class_metrics,
)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_per_class_metrics_hand_computed():
    # 2 classes x 4 items; items 0, 1 are class 0, items 2, 3 class 1.
    scores = np.array([[0.9, 0.1, 0.5, 0.2], [0.3, 0.2, 0.1, 0.4]])
    labels = np.array([0, 0, 1, 1])
    m = per_class_metrics(scores, labels)
    # Class 0 ranks item 0 first (R@1 hit); class 1 ranks item 3 first (hit).
    assert m["class/R@1"] == 100.0 and m["class/R@5"] == 100.0
    # AP class 0: positives at ranks 1 and 4 -> (1/1 + 2/4) / 2; class 1: ranks 1, 4 -> same.
    assert m["class/mAP"] == pytest.approx(100 * 0.75)
    # Items: column argmax -> item 0: class 0 ok; 1: class 1 wrong; 2: class 0 wrong; 3: 1 ok.
    assert m["top1"] == 50.0
    # A tie between the best positive and a negative counts against the class.
    tied = per_class_metrics(np.array([[0.5, 0.1, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]]), labels)
    assert tied["class/R@1"] == 50.0


@pytest.fixture
def dataset():
    """15 items of 3 classes; each item's caption is its class name (one embedding per class)."""
    rng = np.random.default_rng(3)
    classes, dim, n = 3, 16, 15
    prompts = unit(rng.standard_normal((classes, dim)))
    labels = np.repeat(np.arange(classes), n // classes)
    rng.shuffle(labels)
    media = {
        m: unit(prompts[labels] + 0.8 * rng.standard_normal((n, dim))) for m in ("video", "audio")
    }

    def encode(batch):
        index = batch["index"]
        return {"text": prompts[labels[index]], **{m: e[index] for m, e in media.items()}}

    batches = [
        {"index": np.arange(s, s + 4)[np.arange(s, s + 4) < n], "label": labels[s : s + 4]}
        for s in range(0, n, 4)
    ]
    return prompts, labels, media, encode, batches


def test_per_class_volume_ranks_items_for_each_class(dataset):
    prompts, labels, media, encode, batches = dataset
    got = ZeroShotClassifier(protocol="per_class").run(encode, batches)
    data = np.stack([media["video"], media["audio"]])
    scores = -np.asarray(volume.pairwise_volume(prompts, data))  # [C, N], an independent path
    expected = per_class_metrics(scores, labels)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-4), key
    mAP = 100 * mean_average_precision(scores.T, np.eye(3, dtype=bool)[labels])
    assert got["class/mAP"] == pytest.approx(mAP, abs=1e-4)


def test_per_class_matching_rerank_scores_each_class_top_k(dataset):
    prompts, labels, media, encode, batches = dataset
    calls = []

    def oracle_match(text_pos, data_pos):  # a perfect matching head
        calls.append((np.asarray(text_pos), np.asarray(data_pos)))
        return (labels[text_pos] == labels[data_pos]).astype(np.float64)

    got = ZeroShotClassifier(protocol="per_class", rerank_top_k=6).run(
        encode, batches, oracle_match
    )
    text_pos = np.concatenate([c[0] for c in calls])
    data_pos = np.concatenate([c[1] for c in calls])
    assert text_pos.shape == (3 * 6,)  # 6 candidates for each of the 3 classes
    # The text side is the first item of each class (its caption is the class prompt).
    firsts = {int(np.flatnonzero(labels == c)[0]) for c in range(3)}
    assert set(text_pos.tolist()) == firsts
    data = np.stack([media["video"], media["audio"]])
    vol = np.asarray(volume.pairwise_volume(prompts, data))
    for c in range(3):
        top = set(np.argsort(vol[c], kind="stable")[:6].tolist())
        assert set(data_pos[labels[text_pos] == c].tolist()) == top
    # The oracle puts a true item first whenever one is among a class's top 6.
    assert got["class/R@1"] == 100.0


def test_per_class_errors(dataset):
    prompts, labels, media, encode, batches = dataset
    with pytest.raises(ValueError, match="needs match_fn"):
        ZeroShotClassifier(protocol="per_class", rerank_top_k=5).run(encode, batches)
    with pytest.raises(ValueError, match="per_item' needs prompts"):
        ZeroShotClassifier()
    with pytest.raises(ValueError, match="protocol"):
        ZeroShotClassifier(protocol="per_video")

    second = int(np.flatnonzero(labels == 0)[1])  # not the first item of class 0

    def two_captions(batch):  # that item carries another caption (class 1's)
        out = dict(encode(batch))
        out["text"] = np.where((batch["index"] == second)[:, None], prompts[1], out["text"])
        return out

    with pytest.raises(ValueError, match=rf"row {second} \(class 0\) has another caption"):
        ZeroShotClassifier(protocol="per_class").run(two_captions, batches)
    only_two = [
        {"index": b["index"][b["label"] < 2], "label": b["label"][b["label"] < 2]} for b in batches
    ]
    relabel = [dict(b, label=np.where(b["label"] == 1, 2, b["label"])) for b in only_two]
    with pytest.raises(ValueError, match=r"classes \[1\] have no item"):
        ZeroShotClassifier(protocol="per_class").run(encode, relabel)
    multi = [dict(b, label=np.eye(3, dtype=bool)[b["label"]]) for b in batches]
    with pytest.raises(ValueError, match="int class ids"):
        ZeroShotClassifier(protocol="per_class").run(encode, multi)


def test_classification_config_runs_both_protocols_with_the_real_model():
    """experiments/paper/classify_tva.py:runlocal on the 4 real clips (dog, dog, cat, cat) with a
    random-init tiny GRAM: the released per-class protocol with matching re-rank, and per-item
    prompts (a prompts-only batch, which the runner completes with placeholder media)."""
    import jax

    from gram_jax import parallel
    from gram_jax.config.loading import load_config
    from gram_jax.evaluators.runner import run_evaluations
    from gram_jax.train import Trainer

    config = load_config("experiments/paper/classify_tva.py:runlocal")
    released = config.evals.reference_clips_classes.to_dict()
    config.evals.per_item = dict(
        {k: v for k, v in released.items() if k not in ("protocol", "rerank_top_k")},
        protocol="per_item",
        prompts=["a dog", "a cat"],
    )
    mesh = parallel.make_mesh(dict(data=1, fsdp=1, model=1), devices=jax.devices()[:1])
    trainer = Trainer(config, mesh=mesh)
    results = run_evaluations(config, trainer.eval_model, trainer.init_state())
    per_class, per_item = results["reference_clips_classes"], results["per_item"]
    assert {"class/R@1", "class/R@5", "class/mAP", "top1", "top5"} <= set(per_class)
    assert {"top1", "top5", "positive_volume"} <= set(per_item)
    # 2 classes: every class finds one of its items within its top 5 of 4.
    assert per_class["class/R@5"] == 100.0 and per_item["top5"] == 100.0
    for value in (*per_class.values(), per_item["top1"]):
        assert 0.0 <= value <= 100.0
