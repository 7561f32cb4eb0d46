"""The one home of the modality order: the train step and the evaluators both read it from here.

The released code stacks the Gram matrix's vectors as (text, video, audio, subtitle, depth). The
order does not change a volume (a Gram determinant is invariant to permuting its vectors) but it
fixes the layout of stacked tensors, the loss terms' names and which modality a report lists first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Gram order of the data modalities (reference: t, v, a, s, d); the anchor is taken out.
MODALITY_ORDER = ("text", "video", "audio", "subtitle", "depth")


def data_modalities(embeddings: Mapping[str, Any], anchor: str) -> tuple[str, ...]:
    """The non-anchor modalities of `embeddings` in the reference's Gram order.

    Modalities outside ``MODALITY_ORDER`` follow in sorted order. Raises ``ValueError`` naming
    ``config.loss.anchor`` when the anchor has no embedding.
    """
    if anchor not in embeddings:
        raise ValueError(
            f"config.loss.anchor={anchor!r}: the model produced no such embedding "
            f"(it has {sorted(embeddings)})"
        )
    known = [m for m in MODALITY_ORDER if m in embeddings and m != anchor]
    extra = sorted(m for m in embeddings if m not in MODALITY_ORDER and m != anchor)
    return tuple(known + extra)
