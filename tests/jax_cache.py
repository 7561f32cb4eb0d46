"""A persistent XLA compilation cache shared by the trainer tests and their subprocesses.

The tiny GRAM model takes tens of seconds to compile on 2 busy cores; the resume, multi-device and
multi-process tests compile the same programs several times (in fresh processes), so they share
compiled executables through JAX's persistent cache. Keys include the HLO fingerprint and the JAX
version, so a stale entry is never used for a different program. Concurrent runs may share the
folder: writers of one key write the same bytes, and an entry read while it is being written fails
to deserialize, which JAX reports as a warning and answers by compiling (jax._src.compiler
``_cache_read``), so a race costs a compilation, never a wrong program.
"""

import contextlib
import os
import pathlib
import tempfile

import jax

CACHE_DIR = pathlib.Path(tempfile.gettempdir()) / "gram_jax_test_compilation_cache"
ENV = {
    "JAX_COMPILATION_CACHE_DIR": str(CACHE_DIR),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def subprocess_env(devices: int, root: pathlib.Path) -> dict:
    """Environment of a child process with `devices` CPU devices and the shared cache."""
    env = dict(os.environ)
    env.update(ENV)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(root)
    return env


@contextlib.contextmanager
def in_process_cache():
    """Enables the shared cache in this process; restores the previous settings afterwards."""
    names = {
        "jax_compilation_cache_dir": str(CACHE_DIR),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    previous = {n: getattr(jax.config, n) for n in names}
    for n, v in names.items():
        jax.config.update(n, v)
    try:
        yield
    finally:
        for n, v in previous.items():
            jax.config.update(n, v)
