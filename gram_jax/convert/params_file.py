"""The converted-weights file: its one writer, its one reader, and loading it into a model.

A converted-weights file holds a nested dict of float32 arrays keyed like a ``GramModel``'s
params (``nnx.to_pure_dict(nnx.state(model, nnx.Param))``), whole or partial. Three layouts are
read: an orbax ``StandardCheckpointer`` directory (what ``gram-convert`` writes, ``DIR/params``;
``DIR`` itself is accepted), a ``.msgpack`` file (flax serialization) and an ``.npz`` of
'/'-joined paths. ``save_params`` writes the first two.

`init_from_file` is what ``config.model_init`` (gram-train, gram-eval) and
``GramInference.load`` run. Every model parameter is accounted for: it is loaded, or it is named
as left at its initial value; a load that leaves parameters at init is refused unless
``config.model_init_allow_missing`` (fnmatch patterns over '/'-joined parameter paths) names
them. Two differences between the file and the model are adapted, as the released code's
``modify_checkpoint`` does when it loads a checkpoint into a model of other sizes:

- the fusion frame (clip) embedding table ``condition_tokens/<m>/frame_embedding`` [n, H] is
  nearest-resized to the model's rows (``F.interpolate(mode='nearest')``: row i reads
  floor(i * n / rows));
- the temperature: a file holding ``contra_temperature/log_temperature`` (log tau) loads into a
  model whose parameter is ``contra_temperature/temperature`` (tau itself, the 'reference'
  parametrisation) as exp(.), and the other way round as log(.).
"""

from __future__ import annotations

import fnmatch
import io
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from etils import epath

from gram_jax.train import workdir as workdir_paths

log = logging.getLogger(__name__)

TEMPERATURE = ("contra_temperature",)
LOG_TAU, TAU = "log_temperature", "temperature"


# ----------------------------------------------------------------------------- writing
def save_params(params: Mapping, output: str | os.PathLike) -> epath.Path:
    """Writes ``params`` (nested dict of arrays, cast to float32).

    ``output`` ending in ``.msgpack``: one flax-serialized file. Anything else: a directory that
    receives an orbax checkpoint ``output/params`` (created; an existing one is refused). A local
    path or a ``gs://`` URI (the workdirs' path type, `gram_jax.train.workdir`). Returns the
    written path (what ``config.model_init`` takes).
    """
    out = workdir_paths.resolve(output)
    tree = _to_float32(params)
    if out.suffix == ".msgpack":
        # lazy: flax imports JAX; `gram-convert --help` must stay light.
        from flax import serialization  # noqa: PLC0415

        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(serialization.msgpack_serialize(tree))
        return out
    # lazy: orbax imports JAX; `gram-convert --help` must stay light.
    import orbax.checkpoint as ocp  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    target = out / "params"
    if target.exists():
        raise FileExistsError(f"{target} exists; choose another --output or remove it")
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(target, tree)
    ckptr.wait_until_finished()
    return target


def _to_float32(tree):
    if isinstance(tree, Mapping):
        return {str(k): _to_float32(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float32)


# ----------------------------------------------------------------------------- reading
def load_params(path: str | os.PathLike) -> dict:
    """The nested dict of arrays of a converted-weights file (any of the three layouts), local or
    on ``gs://`` (`gram_jax.train.workdir.resolve`).

    Raises FileNotFoundError / ValueError naming the path.
    """
    path = workdir_paths.resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"config.model_init: {path} does not exist")
    if path.is_dir():
        if (path / "params").is_dir():
            path = path / "params"
        # lazy: orbax imports JAX; `gram-convert --help` must stay light.
        import orbax.checkpoint as ocp  # noqa: PLC0415

        tree = ocp.StandardCheckpointer().restore(path)
    elif path.suffix == ".npz":
        tree = {}
        with np.load(io.BytesIO(path.read_bytes())) as data:  # np.load wants a local file
            for key in data.files:
                node = tree
                *parents, leaf = key.split("/")
                for k in parents:
                    node = node.setdefault(k, {})
                node[leaf] = data[key]
    elif path.suffix == ".msgpack":
        # lazy: flax imports JAX; `gram-convert --help` must stay light.
        from flax import serialization  # noqa: PLC0415

        tree = serialization.msgpack_restore(path.read_bytes())
    else:
        raise ValueError(
            f"config.model_init: {path} has an unknown format; expected an orbax directory, "
            ".msgpack or .npz"
        )
    if isinstance(tree, Mapping) and "params" in tree and isinstance(tree["params"], Mapping):
        tree = tree["params"]
    return tree


def flatten(tree: Mapping, prefix: tuple = ()) -> dict[tuple[str, ...], Any]:
    """{path tuple of str: leaf} of a nested dict."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, (*prefix, str(key))))
        else:
            out[(*prefix, str(key))] = value
    return out


def unflatten(flat: Mapping[tuple, Any]) -> dict:
    """The nested dict of {path tuple: leaf}."""
    out: dict = {}
    for p, v in flat.items():
        node = out
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node[p[-1]] = v
    return out


def load_param_file(path: str | os.PathLike) -> dict[tuple[str, ...], np.ndarray]:
    """{path tuple of str: numpy array} of a converted-weights file."""
    return {p: np.asarray(v) for p, v in flatten(load_params(path)).items()}


# ----------------------------------------------------------------------------- into a model
def _is_frame_table(path: tuple) -> bool:
    return len(path) == 3 and path[0] == "condition_tokens" and path[2] == "frame_embedding"


def adapt_to_model(
    loaded: Mapping[tuple, Any], model_paths: Mapping[tuple, Any]
) -> tuple[dict[tuple, Any], list[str]]:
    """The file's entries made to fit the model where the released loader adapts them.

    Args:
      loaded: {path: array} of the file.
      model_paths: {path: array or ShapeDtypeStruct} of the model's params.
    Returns:
      (adapted {path: array}, notes naming each adaptation).
    """
    out, notes = dict(loaded), []
    for path, value in loaded.items():
        target = model_paths.get(path)
        if (
            target is not None
            and _is_frame_table(path)
            and value.ndim == 2
            and tuple(target.shape[1:]) == tuple(value.shape[1:])
            and target.shape[0] != value.shape[0]
        ):
            # lazy: the models import flax/JAX; `gram-convert --help` must stay light.
            from gram_jax.models.heads import nearest_indices  # noqa: PLC0415

            out[path] = np.asarray(value)[nearest_indices(target.shape[0], value.shape[0])]
            rows = f"{value.shape[0]}->{target.shape[0]}"
            notes.append(f"{'/'.join(path)} nearest-resized {rows} rows")
    for have, want, fn, name in (
        (LOG_TAU, TAU, np.exp, "exp"),
        (TAU, LOG_TAU, np.log, "log"),
    ):
        src, dst = (*TEMPERATURE, have), (*TEMPERATURE, want)
        if src in out and dst in model_paths and src not in model_paths and dst not in out:
            value = np.asarray(out.pop(src), np.float32)
            if want == LOG_TAU and not float(value) > 0:
                raise ValueError(f"{'/'.join(src)}={float(value)}: tau must be positive")
            out[dst] = fn(value).astype(np.float32)
            notes.append(f"{'/'.join(dst)} = {name}({'/'.join(src)}) = {float(out[dst]):.6g}")
    return out, notes


def merge_partial_params(
    params: Mapping, loaded: Mapping[tuple, Any], source: str = ""
) -> tuple[dict, list[str], list[str]]:
    """Replaces the leaves of ``params`` (a pure dict) found in ``loaded`` ({path: array}).

    Frame tables and the temperature are adapted first (`adapt_to_model`; each adaptation is
    logged). Returns (new params, replaced paths, loaded paths the model does not have), paths
    '/'-joined. Raises ValueError naming the parameter when a shape differs.
    """
    import jax  # noqa: PLC0415 - lazy: `gram-convert --help` must not import JAX

    flat = flatten(params)
    loaded, notes = adapt_to_model(loaded, flat)
    for note in notes:
        log.info("%s: %s", source, note)
    replaced, unexpected = [], []
    for name, value in loaded.items():
        if name not in flat:
            unexpected.append("/".join(name))
            continue
        target = flat[name]
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"{source}: parameter {'/'.join(name)} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(target.shape)}"
            )
        flat[name] = jax.device_put(
            np.asarray(value, dtype=target.dtype), getattr(target, "sharding", None)
        )
        replaced.append("/".join(name))
    if not replaced:
        raise ValueError(f"{source}: none of its {len(loaded)} parameters match the model's names")
    return unflatten(flat), replaced, unexpected


class MissingParamsError(ValueError):
    """A weights file leaves model parameters at their initial values and no
    ``config.model_init_allow_missing`` pattern names them."""


def missing_params(params: Mapping, replaced: Iterable[str]) -> list[str]:
    """'/'-joined paths of ``params`` not in ``replaced``, sorted."""
    done = set(replaced)
    return sorted(p for p in ("/".join(k) for k in flatten(params)) if p not in done)


def init_from_file(
    params: Mapping,
    path: str | os.PathLike,
    *,
    allow_missing: Iterable[str] = (),
    source: str = "config.model_init",
) -> tuple[dict, str]:
    """``params`` (a pure dict, the initialised model) with the file's parameters written in.

    Args:
      params: the model's params (arrays, possibly sharded; their shardings are kept).
      path: a converted-weights file (module docstring).
      allow_missing: fnmatch patterns of '/'-joined parameter paths that may stay at init.
      source: the config key or argument named in messages.
    Returns:
      (params, summary): the summary is one line: how many parameters were loaded, which stay at
      init (allowed by a pattern) and which file entries the model does not have.
    Raises:
      MissingParamsError listing every parameter left at init that no pattern allows.
    """
    where = f"{source}={path}"
    merged, replaced, unexpected = merge_partial_params(params, load_param_file(path), where)
    patterns = tuple(allow_missing)
    missing = missing_params(params, replaced)
    refused = [p for p in missing if not any(fnmatch.fnmatchcase(p, pat) for pat in patterns)]
    if refused:
        raise MissingParamsError(
            f"{where}: {len(refused)} model parameters are not in the file and would stay at "
            f"their initial values: {', '.join(refused)}. Convert the weights for this run's "
            "config (gram-convert --config ...), or name the parameters that may start from "
            "init in config.model_init_allow_missing (fnmatch patterns of these paths)"
        )
    summary = (
        f"{where}: {len(replaced)} parameters loaded; {len(missing)} left at init"
        + (f" ({', '.join(missing)})" if missing else "")
        + f"; {len(unexpected)} file entries unused"
        + (f" ({', '.join(unexpected)})" if unexpected else "")
    )
    return merged, summary
