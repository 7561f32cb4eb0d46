"""2-D plots of learned embeddings: one shared PCA projection of every modality, coloured by class.

A shared projection (fitted on all modalities together) is what shows alignment: when text, video
and audio of one digit land in one cluster, the three markers of a colour overlap; a collapsed
modality shows up as a single point.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import matplotlib
import numpy as np
from etils import epath
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

MARKERS = {"text": "*", "video": "o", "audio": "^", "subtitle": "s", "depth": "D"}


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project rows onto their first two principal components.

    Args:
      x: float[N, D].
    Returns:
      (projected float32[N, 2], mean float[D], components float[2, D]); components are unit rows.
      With fewer than 2 non-zero directions the missing components are zero.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"pca_2d: expected float[N >= 2, D], got shape {x.shape}")
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = np.zeros((2, x.shape[1]))
    components[: min(2, len(vt))] = vt[:2]
    # SVD signs are arbitrary: fix them so plots of one run are reproducible.
    signs = np.sign(components[np.arange(2), np.abs(components).argmax(axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    return ((x - mean) @ components.T).astype(np.float32), mean, components


def plot_embeddings(
    embeddings: Mapping[str, np.ndarray],
    labels: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
) -> epath.Path:
    """Write a PNG: the joint PCA of all modalities, then one panel per modality.

    Args:
      embeddings: {modality: float[N, D]} unit vectors of the same N items.
      labels: int[N] class of each item (the digit), used for colours.
      path: the PNG to write (folders are created).
    Returns:
      the path written.
    """
    names = list(embeddings)
    if not names:
        raise ValueError("plot_embeddings: no embeddings given")
    n = len(labels)
    for m in names:
        if np.shape(embeddings[m])[0] != n:
            raise ValueError(
                f"plot_embeddings: modality {m!r} has {np.shape(embeddings[m])[0]} rows, labels {n}"
            )
    joint, mean, comps = pca_2d(np.concatenate([embeddings[m] for m in names]))
    cmap = matplotlib.colormaps["tab10"]
    # A bare Figure (no pyplot): no global backend or figure registry, so it works headless and
    # in tests, and needs no closing.
    fig = Figure(figsize=(4.2 * (len(names) + 1), 4.2))
    axes = fig.subplots(1, len(names) + 1)

    def scatter(ax, xy: np.ndarray, modality: str, **kwargs) -> None:
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            c=cmap(labels % 10),
            marker=MARKERS.get(modality, "x"),
            s=22,
            alpha=0.8,
            edgecolors="none",
            **kwargs,
        )

    for i, m in enumerate(names):
        scatter(axes[0], joint[i * n : (i + 1) * n], m, label=m)
        own, _, _ = pca_2d(embeddings[m])
        scatter(axes[i + 1], own, m)
        axes[i + 1].set_title(f"{m} (own PCA)")
    axes[0].set_title("all modalities (shared PCA)")
    legend = axes[0].legend(loc="best", fontsize=8)
    for handle in legend.legend_handles:
        handle.set_color("gray")  # the marker legend is about shapes, not classes
    classes = [int(c) for c in np.unique(labels)]
    handles = [Line2D([], [], ls="", marker="o", color=cmap(c % 10)) for c in classes]
    fig.legend(
        handles, [str(c) for c in classes], loc="lower center", ncol=10, fontsize=8, title="class"
    )
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95 if title else 1))
    path = epath.Path(path)  # a local path or gs://... (written through a file object)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        fig.savefig(f, dpi=110, format="png")
    return path
