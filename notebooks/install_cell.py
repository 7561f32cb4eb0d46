# Installs gram_jax so that THIS kernel imports it without a restart: a regular (non-editable)
# `pip install` puts the package into site-packages, which is already on sys.path (an editable
# install adds a path hook that a running kernel only sees after a restart). On a GPU or TPU
# runtime it installs the matching JAX in the same pip call, before anything imports jax.
# Inside a clone of the repository (a checkout holding this notebook) it installs that checkout
# instead of the repository URL; when gram_jax is importable already it installs nothing.
import glob
import importlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

# Written in by notebooks/build.py from setup.py's `url=`.
REPO_URL = ""


def accelerator(environ=os.environ, accel_glob="/dev/accel*"):
    """'cuda12' on a GPU runtime (nvidia-smi lists a GPU), 'tpu' on a TPU runtime, else None:
    the name of setup.py's extra that installs the matching JAX."""
    smi = shutil.which("nvidia-smi")
    if smi and subprocess.run([smi, "-L"], capture_output=True).returncode == 0:
        return "cuda12"
    if environ.get("COLAB_TPU_ADDR") or any(k.startswith("TPU_") for k in environ):
        return "tpu"
    return "tpu" if glob.glob(accel_glob) else None


def local_checkout(start):
    """The clone of the repository holding ``start`` (a folder), or None (e.g. on Colab)."""
    for folder in (start, *start.parents):
        if (folder / "setup.py").is_file() and (folder / "gram_jax" / "__init__.py").is_file():
            return folder
    return None


def requirements(checkout, device):
    """pip arguments: the checkout (or the repository URL), with the accelerator's extra."""
    extra = f"[{device}]" if device else ""
    return [f"{checkout}{extra}" if checkout else f"gram_jax{extra} @ git+{REPO_URL}"]


def install():
    if importlib.util.find_spec("gram_jax") is not None:
        print("gram_jax is importable already: nothing installed")
        return
    reqs = requirements(local_checkout(pathlib.Path.cwd().resolve()), accelerator())
    print("pip install", *reqs)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *reqs], check=True)
    importlib.invalidate_caches()  # the new site-packages entries are found by the next import


if __name__ == "__main__":
    install()
