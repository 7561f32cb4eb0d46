"""Reading PyTorch weight files into a flat ``{name: numpy array}`` state dict.

Accepted: ``.safetensors`` (read with safetensors' numpy API, no torch needed), and torch pickles
(``.bin``, ``.pt``, ``.pth``, ``.ckpt``; read with ``torch.load(weights_only=True)``) whose object
is a state dict or a dict holding one under ``model`` / ``state_dict`` / ``module``. A directory is
searched for ``model.safetensors`` then ``pytorch_model.bin`` (the Hugging Face layout).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

_NESTED_KEYS = ("model", "state_dict", "module", "model_state_dict")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_weights_path(path: str | pathlib.Path) -> pathlib.Path:
    """A weights file, or the Hugging Face weights file inside directory ``path``."""
    path = pathlib.Path(path)
    if path.is_dir():
        for name in _HF_FILES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: directory holds none of {', '.join(_HF_FILES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    return path


def _unwrap(obj: Any, path: pathlib.Path) -> Mapping[str, Any]:
    """The state dict inside a loaded checkpoint object (nested under a known key or not)."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"{path}: expected a state dict (a mapping), got {type(obj).__name__}")
    for key in _NESTED_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            return _unwrap(obj[key], path)
    return obj


def torch_load_error(path, exc: BaseException) -> ValueError:
    """Our words for a failed ``torch.load(weights_only=True)``.

    torch's own message advises ``weights_only=False``, which would run arbitrary code from the
    file: wrong advice for a converter of downloaded weights, so it is not passed on.
    """
    text = str(exc)
    detail = f"{type(exc).__name__}: {text[:80]}"
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0].strip()
    if "Unsupported global" in detail:
        reason = f"it holds Python objects other than tensors ({detail})"
    else:
        reason = f"it is not in torch.save format ({detail})"
    return ValueError(
        f"{path}: cannot be read as weights: {reason}. Expected a state dict of tensors saved "
        "with torch.save, a .safetensors file or a Hugging Face model folder; pickled Python "
        "objects are refused because loading them could run code."
    )


def read_state_dict(path: str | pathlib.Path) -> dict[str, Any]:
    """Flat ``{name: array or tensor}`` from a safetensors file, a torch pickle or an HF folder.

    Float tensors are returned as they are stored (torch tensors from pickles, numpy arrays from
    safetensors); converters turn them into float32 numpy arrays with ``torch_state.to_numpy``.
    Raises FileNotFoundError / TypeError / ValueError naming the file on bad input.
    """
    path = resolve_weights_path(path)
    if path.suffix == ".safetensors":
        # lazy: safetensors is in the torch extra, needed only for .safetensors files
        from safetensors.numpy import load_file  # noqa: PLC0415

        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            # bf16 tensors cannot be read by safetensors' numpy API; torch can.
            try:
                # lazy: needs torch (torch extra); only for bf16 files numpy cannot read
                from safetensors.torch import load_file as load_torch  # noqa: PLC0415
            except ImportError:
                raise ValueError(f"{path}: cannot read safetensors file: {exc}") from exc
            return dict(load_torch(str(path)))
    try:
        # lazy: torch is an optional extra, needed only for torch pickles
        import torch  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            f"{path}: reading a torch pickle needs PyTorch (the torch extra)"
        ) from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise torch_load_error(path, exc) from exc
    state = _unwrap(obj, path)
    bad = [k for k, v in state.items() if not (hasattr(v, "shape") or isinstance(v, np.ndarray))]
    if bad:
        raise ValueError(f"{path}: entries that are not tensors: {', '.join(map(str, bad[:10]))}")
    return dict(state)
