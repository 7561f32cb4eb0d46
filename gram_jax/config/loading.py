"""Experiment configs by file path: the ``file.py:arg`` spec, the argument parser, the loader.

An experiment config is a Python file defining ``get_config(arg=None) -> ConfigDict``; it is named
on the command line as ``path/to/config.py[:arg]`` (``gram-train --config ...``), where ``arg`` is a
comma-separated list of words (``runlocal``, a dataset, a variant) and ``key=value`` pairs
(``fold=1,seed=2``). This module is the one home of

- `split_config_spec`: ``'file.py:arg'`` -> (path, arg);
- `parse_config_arg`: the argument -> its words and key=value pairs, checked against what the
  config accepts (a ValueError naming the config and the expected words/keys otherwise);
- `load_config_module` / `load_config`: a config file -> its module / its ConfigDict. Files inside
  an importable package (``experiments/`` once installed with ``pip install -e .``, or run from the
  repository root) are imported under their package name, so ``experiments.paper.paper_base`` is
  one module however many configs import it; any other file is loaded from its path;
- `define_config_flag`: the absl ``--config`` flag of ``gram-train``/``gram-eval``: ml_collections'
  config-file flag (``--config path:arg --config.key=value`` overrides), loading through here.

The library never imports ``experiments``: configs import the library, not the reverse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import pathlib
import sys
import traceback
from collections.abc import Iterable
from types import ModuleType

from absl import flags
from ml_collections import config_flags


def split_config_spec(spec: str) -> tuple[str, str | None]:
    """``'experiments/x.py:a,b'`` -> (``'experiments/x.py'``, ``'a,b'``); no colon -> (spec, None).

    The first colon separates the argument, as ml_collections' config flag does.
    """
    path, sep, arg = spec.partition(":")
    if not path:
        raise ValueError(f"config spec {spec!r}: expected 'path/to/config.py[:arg]'")
    return path, (arg if sep else None)


@dataclasses.dataclass(frozen=True)
class ConfigArg:
    """A parsed config argument.

    Attributes:
      words: the bare tokens (``runlocal``, a dataset or variant name), in the order given.
      values: the ``key=value`` tokens (values are strings; the config converts them).
    """

    words: tuple[str, ...] = ()
    values: dict[str, str] = dataclasses.field(default_factory=dict)

    def has(self, word: str) -> bool:
        return word in self.words

    def join(self, words: Iterable[str]) -> str:
        """The argument string of `words` (e.g. to pass the rest on to a base config)."""
        return ",".join(w for w in words if w)


def parse_config_arg(
    arg: str | None,
    *,
    source: str,
    words: Iterable[str] = (),
    keys: Iterable[str] = (),
) -> ConfigArg:
    """Splits a config argument ``'w1,w2,key=value'`` and checks every token.

    Args:
      arg: the text after the colon of ``file.py:arg`` (None or '' = no argument).
      source: what is parsing (e.g. ``'experiments/paper/finetune_tva.py'``), named in errors.
      words: the bare tokens the config accepts.
      keys: the keys of ``key=value`` tokens the config accepts.
    Returns:
      A `ConfigArg`.
    Raises:
      ValueError: naming `source`, the bad token and what was expected.
    """
    words, keys = tuple(words), tuple(keys)
    found_words: list[str] = []
    values: dict[str, str] = {}
    for token in (t.strip() for t in (arg or "").split(",")):
        if not token:
            continue
        key, sep, value = token.partition("=")
        if sep:
            if key not in keys:
                raise ValueError(
                    f"{source}: unknown key {key!r} in argument {arg!r}; expected keys "
                    f"{list(keys)} and words {list(words)}"
                )
            values[key] = value
        elif token in words:
            found_words.append(token)
        else:
            raise ValueError(
                f"{source}: unknown argument {token!r} in {arg!r}; expected words "
                f"{list(words)}" + (f" and keys {list(keys)}" if keys else "")
            )
    return ConfigArg(tuple(found_words), values)


def _package_module_name(path: pathlib.Path) -> tuple[pathlib.Path, str] | None:
    """(root, dotted name) of `path` if its folder and every parent up to root is a package."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.append(folder.name)
        folder = folder.parent
    if len(parts) == 1:
        return None
    return folder, ".".join(reversed(parts))


def _import_from_package(path: pathlib.Path) -> ModuleType | None:
    """The module of `path` imported by its package name, or None when that name belongs to
    another copy of the package (a second clone installed): then `path` is loaded by path.

    A package that is not importable at all (a clone not installed, run from elsewhere) is
    registered from its folder first (its ``__path__`` then finds the submodules), so a config
    can import its bases by package name without any sys.path edit.
    """
    located = _package_module_name(path)
    if located is None:
        return None
    root, name = located
    top = name.split(".")[0]
    package_dir = root / top
    if top not in sys.modules:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            spec = importlib.util.spec_from_file_location(
                top, package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
            )
            package = importlib.util.module_from_spec(spec)
            sys.modules[top] = package
            spec.loader.exec_module(package)
    package = importlib.import_module(top)
    locations = [pathlib.Path(p).resolve() for p in getattr(package, "__path__", [])]
    if package_dir not in locations:
        return None
    return importlib.import_module(name)


def _in_installed_package(relative: pathlib.Path) -> pathlib.Path | None:
    """``experiments/x.py`` inside the installed ``experiments`` package, if there is one: the
    README's ``--config experiments/...`` commands then work from any directory."""
    top = relative.parts[0] if relative.parts else ""
    if not top.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = pathlib.Path(location).resolve().parent / relative
        if candidate.is_file():
            return candidate
    return None


def load_config_module(path: str | pathlib.Path) -> ModuleType:
    """The module of the config file `path` (imported once; see the module docstring).

    Raises:
      FileNotFoundError: `path` is not a file.
    """
    given = pathlib.Path(path).expanduser()
    path = given.resolve()
    if not path.is_file() and not given.is_absolute():
        path = _in_installed_package(given) or path
    if not path.is_file():
        raise FileNotFoundError(f"config file {given} does not exist (resolved: {path})")
    module = _import_from_package(path)
    if module is None:
        # Outside an importable package: load from the path, once per path, under a name that
        # cannot clash with a real module (dataclasses look their module up in sys.modules).
        name = "gram_jax_config_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
    return module


def load_config(spec: str):
    """The ConfigDict of ``'path/to/config.py[:arg]'``: ``get_config(arg)`` (no colon: no arg)."""
    path, arg = split_config_spec(spec)
    module = load_config_module(path)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"config file {path} defines no get_config(arg=None)")
    return module.get_config(arg) if arg is not None else module.get_config()


def define_config_flag(name: str, help_string: str, *, lock_config: bool = True):
    """The absl flag ``--<name> path.py[:arg]`` (ml_collections' config-file flag: accepts
    ``--<name>.key=value`` overrides) whose file is loaded by `load_config`. Returns its holder."""

    class _Parser(flags.ArgumentParser):
        def parse(self, spec):
            try:
                config = load_config(spec)
            except (TypeError, ValueError, OSError) as err:
                # absl reports ValueErrors as a one-line flag error: keep the trace in it.
                message = f"error while loading config {spec}:\n\n{traceback.format_exc()}"
                raise ValueError(message) from err
            if lock_config and callable(getattr(config, "lock", None)):
                config.lock()
            return config

        def flag_type(self):
            return "config object"

    holder = config_flags.DEFINE_config_file(name, None, help_string, lock_config=lock_config)
    flags.FLAGS[name].parser = _Parser()
    return holder
