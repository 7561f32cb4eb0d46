"""Shared plumbing of the PyTorch -> Flax converters: tensors to numpy, shape checks, reports.

A converter walks a PyTorch ``state_dict`` (name -> tensor or array), writes numpy arrays into a
nested pure dict shaped like ``nnx.to_pure_dict(nnx.state(model, nnx.Param))`` and records every
source key it did not use. ``ParamTarget`` holds the expected shapes (from ``nnx.eval_shape``) so a
shape error names both the source key and the target path.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx


def to_numpy(value: Any, key: str) -> np.ndarray:
    """A torch tensor / numpy array / jax array -> float32 (or integer) numpy array."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - re-raised with the key
        raise TypeError(
            f"state dict key {key!r}: cannot convert {type(value)} to an array"
        ) from exc
    if array.dtype.kind == "f" and array.dtype != np.float32:
        array = array.astype(np.float32)
    return array


@dataclasses.dataclass
class ConversionReport:
    """What a conversion did with each key.

    ``unused``: source keys (full names) that map to no parameter, e.g. a CLIP projection head.
    ``skipped``: source keys outside the converted prefix (other towers of a full checkpoint).
    ``missing``: target parameter paths that no source key filled (an error by default).
    ``notes``: human-readable remarks (resized position table, dropped zero key bias, ...).
    """

    unused: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"unused source keys ({len(self.unused)}): {', '.join(self.unused) or '-'}",
            f"skipped keys outside the prefix: {len(self.skipped)}",
            f"missing target parameters ({len(self.missing)}): {', '.join(self.missing) or '-'}",
        ]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def abstract_params(make_model: Callable[[], nnx.Module]) -> dict:
    """Pure dict of ``jax.ShapeDtypeStruct`` for the ``nnx.Param`` leaves of ``make_model()``."""
    abstract = nnx.eval_shape(make_model)
    return nnx.to_pure_dict(nnx.state(abstract, nnx.Param))


def _path_str(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def leaf_paths(tree: Mapping) -> list[tuple[tuple, Any]]:
    """(path tuple of dict keys, leaf) of every leaf of a nested pure dict, in key order."""
    out = []
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out.append((tuple(getattr(k, "key", getattr(k, "idx", k)) for k in key_path), leaf))
    return out


def keys_under(
    state_dict: Mapping[str, Any], prefix: str, report: ConversionReport
) -> Iterator[tuple[str, str, Any]]:
    """(full key, key without ``prefix``, value) of the entries under ``prefix``; the other keys
    are recorded in ``report.skipped`` (other towers of a full checkpoint)."""
    for full_key, raw in state_dict.items():
        if full_key.startswith(prefix):
            yield full_key, full_key[len(prefix) :], raw
        else:
            report.skipped.append(full_key)


def layer_of(
    pattern: re.Pattern, key: str, full_key: str, depth: int, unit: str
) -> tuple[int, str] | None:
    """(layer index, rest of the key) when ``pattern`` (groups: index, rest) matches ``key``, else
    None. Raises ValueError naming ``full_key`` for an index beyond the config's ``depth``."""
    match = pattern.match(key)
    if match is None:
        return None
    index = int(match.group(1))
    if index >= depth:
        raise ValueError(
            f"state dict key {full_key!r}: {unit} {index} but the config has {depth} {unit}s "
            f"(depth {depth})"
        )
    return index, match.group(2)


class ParamTarget:
    """Collects converted arrays into a pure dict and checks them against expected shapes."""

    def __init__(self, expected: Mapping):
        self.expected = expected
        self.out: dict = {}
        self.filled: set[tuple] = set()

    def shape_of(self, path: tuple) -> tuple[int, ...]:
        node: Any = self.expected
        for part in path:
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(f"the target model has no parameter {_path_str(path)}")
            node = node[part]
        return tuple(node.shape)

    def set(self, path: tuple, value: np.ndarray, source: str) -> None:
        """Writes ``value`` at ``path``; ``source`` names the key(s) it came from for errors."""
        expected = self.shape_of(path)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"state dict key {source!r}: converted shape {tuple(value.shape)} does not match "
                f"parameter {_path_str(path)} of shape {expected}"
            )
        node = self.out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = np.asarray(value, dtype=np.float32)
        self.filled.add(path)

    def check_layer(self, path: tuple, value: np.ndarray, source: str) -> np.ndarray:
        """Checks one layer's slice of the stacked parameter at ``path`` (before stacking)."""
        expected = self.shape_of(path)[1:]
        if tuple(value.shape) != expected:
            raise ValueError(
                f"state dict key {source!r}: converted shape {tuple(value.shape)} does not match "
                f"one layer of parameter {_path_str(path)} ({expected})"
            )
        return value

    def set_tree(self, root: tuple, params: Mapping, source_prefix: str) -> None:
        """Writes every leaf of the pure dict ``params`` below ``root`` (a converted tower);
        errors name the source as ``source_prefix`` + the leaf's path."""
        for path, value in leaf_paths(params):
            self.set((*root, *path), value, f"{source_prefix}{_path_str(path)}")

    def missing(self) -> list[str]:
        return [_path_str(path) for path, _ in leaf_paths(self.expected) if path not in self.filled]


class LayerStacks:
    """The per-layer slices of a tower's stacked parameters (``root``: a leading [depth] axis),
    collected in any key order, each checked on arrival, then written stacked by `write`."""

    def __init__(self, target: ParamTarget, root: str, depth: int):
        self.target, self.root, self.depth = target, root, depth
        self.slices: dict[tuple[str, ...], list[np.ndarray | None]] = {}

    def put(self, path: tuple[str, ...], index: int, value: np.ndarray, source: str) -> None:
        """Layer ``index``'s slice of parameter ``root.path``; ``source`` names it in errors."""
        checked = self.target.check_layer((self.root, *path), value, source)
        self.slices.setdefault(path, [None] * self.depth)[index] = checked

    def write(self, source_pattern: str) -> None:
        """Stacks and writes every parameter; ``source_pattern`` (e.g. ``'encoder.layer.N'``)
        names the source keys in errors. Frees the slices (a giant tower's are gigabytes)."""
        for path, arrays in self.slices.items():
            what = f"{source_pattern}.{'.'.join(path)}"
            self.target.set((self.root, *path), stack_layer_arrays(arrays, what), what)
            arrays.clear()
        self.slices.clear()


def stack_layer_arrays(per_layer: list[np.ndarray | None], what: str) -> np.ndarray:
    """Stack one parameter of every layer on a new leading axis; names ``what`` if one is absent."""
    absent = [i for i, a in enumerate(per_layer) if a is None]
    if absent:
        raise KeyError(f"state dict has no {what} for layers {absent}")
    return np.stack(per_layer, axis=0)


def finish(target: ParamTarget, report: ConversionReport, allow_missing: bool) -> dict:
    """Records missing parameters; raises naming them unless ``allow_missing``."""
    report.missing = target.missing()
    if report.missing and not allow_missing:
        raise KeyError(
            "conversion left target parameters unfilled: "
            + ", ".join(report.missing)
            + "\n"
            + report.summary()
        )
    return target.out


def build_with_params(make_model: Callable[[], nnx.Module], params: Mapping) -> nnx.Module:
    """``make_model()`` with its ``nnx.Param`` leaves taken from ``params`` (a pure dict).

    Skips the random initialisation of the parameters (about 30 s for a 1 B-parameter tower on a
    CPU): only the non-parameter state (RNG streams) is computed, under ``jax.jit``, where XLA
    drops the unused parameter initialisers.
    """
    graphdef, abstract_params_state, _ = nnx.split(nnx.eval_shape(make_model), nnx.Param, ...)

    @jax.jit
    def other_state():
        return nnx.split(make_model(), nnx.Param, ...)[2]

    nnx.replace_by_pure_dict(abstract_params_state, params)
    params_state = jax.tree.map(jax.numpy.asarray, abstract_params_state)
    return nnx.merge(graphdef, params_state, other_state())


def write_params(model: nnx.Module, params: Mapping) -> nnx.Module:
    """Writes converted ``params`` (a nested pure dict) into ``model``'s parameters in place.

    ``params`` may cover only part of the model (the rest keeps its init values); a name the model
    does not have raises KeyError and a shape mismatch ValueError, both naming the parameter.
    """
    state = nnx.state(model, nnx.Param)
    pure = nnx.to_pure_dict(state)
    _merge_into(pure, params, "")
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)
    return model


def _merge_into(dst: dict, src: Mapping, where: str) -> None:
    for name, value in src.items():
        if name not in dst:
            raise KeyError(f"converted params hold {where}{name}, which the model does not have")
        if isinstance(value, Mapping):
            _merge_into(dst[name], value, f"{where}{name}.")
        else:
            if tuple(np.shape(value)) != tuple(dst[name].shape):
                raise ValueError(
                    f"converted param {where}{name}: shape {np.shape(value)} but the model "
                    f"expects {tuple(dst[name].shape)}"
                )
            dst[name] = np.asarray(value)
