"""Use a trained or converted GRAM checkpoint on your own media: embed, score, rank.

    from gram_jax.inference import GramInference

    gram = GramInference.load("runs/my_run")                  # a gram-train workdir (its config)
    gram = GramInference.load("gram.msgpack", config=config)  # gram-convert weights + a config
    texts = gram.embed_texts(["A dog is barking", "A red cat is meowing"])
    media = gram.embed_media(videos=["v1.mp4", "v2.mp4"], audios=["a1.mp3", "a2.mp3"])
    scores = gram.score(texts, media, scoring="volume")       # float[N_text, N_media]

Media go through the same ``data_pipelines`` code as evaluation, with the evaluation settings of
``config.data`` (frames, image size, resize and ``frame_transform``, filterbank, padding), so a
checkpoint sees its files exactly as it saw its test set. Scores come from the evaluators' one
scoring registry (`gram_jax.evaluators.scoring`): higher is better; ``volume`` is minus the Gram
volume of (text, video, audio, ...), ``cosine`` the mean text-modality cosine, ``matching`` the
matching head's probability on the ``top_k`` candidates by volume (the others keep their volume
order below them).

The model runs on one device (a 1 x 1 x 1 mesh); each call encodes in chunks of ``batch_size``.
The towers of every modality of the model run on every chunk (the encoder is one jitted
function), so text-only and media-only chunks carry zero placeholders for the other modalities,
whose outputs are dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from data_pipelines.config import TEXT_MODALITIES, data_config
from data_pipelines.media import audio as media_audio
from data_pipelines.media import video as media_video
from data_pipelines.media.text import Tokenizer
from data_pipelines.transforms import placeholder_batch
from gram_jax import parallel
from gram_jax.config import prepare
from gram_jax.convert import params_file
from gram_jax.evaluators import scoring as scoring_registry
from gram_jax.evaluators.model import matched_probability
from gram_jax.models.modalities import data_modalities
from gram_jax.train import checkpoint
from gram_jax.train import workdir as workdir_paths
from gram_jax.train.state import Trainer

log = logging.getLogger(__name__)

INFERENCE_SCORINGS = ("volume", "cosine", "matching")


@dataclasses.dataclass
class EmbeddedTexts:
    """Anchor embeddings of N texts: ``embeddings`` float32[N, D], their tokens ``ids``/``mask``
    int32[N, L] (the matching head reads them), and the ``texts`` themselves."""

    texts: list[str]
    embeddings: np.ndarray
    ids: np.ndarray
    mask: np.ndarray


@dataclasses.dataclass
class EmbeddedMedia:
    """Data tuples of N media items.

    embeddings: {modality: float32[N, D]} in Gram order; present: {modality: bool[N]} (an absent
    modality leaves the Gram matrix); condition float[N, T, H] and condition_mask int32[N, T]: the
    fusion tokens of the matching head (None when the model has none); names: one label per item.
    """

    names: list[str]
    embeddings: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    condition: np.ndarray | None
    condition_mask: np.ndarray | None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.embeddings)


def _single_device_mesh():
    return parallel.make_mesh(dict(data=1, fsdp=1, model=1), devices=jax.devices()[:1])


def _checkpoint_directory(path: epath.Path) -> epath.Path | None:
    """The orbax CheckpointManager directory of a gram-train workdir (or that directory itself);
    None when ``path`` is neither (e.g. a converted-weights file)."""
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if path.is_dir() and any(p.name.isdigit() and p.is_dir() for p in path.iterdir()):
        return path
    return None


def saved_config(manager, step: int) -> ml_collections.ConfigDict:
    """The experiment config saved with checkpoint ``step`` (the data section validated again).

    Raises FileNotFoundError when that checkpoint has no saved config.
    """
    if not (manager.directory / str(step) / "config").exists():
        raise FileNotFoundError(
            f"checkpoint {manager.directory}/{step} saved no config; pass the experiment config"
        )
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    saved = dict(restored["config"])
    config = ml_collections.ConfigDict(saved)
    with config.ignore_type():
        config.data = data_config(**saved["data"])
    return config


def load_state(checkpoint_path: str | os.PathLike, config=None, *, step: int | None = None):
    """(config, trainer, state, source) for :meth:`GramInference.load` (see there)."""
    path = workdir_paths.resolve(checkpoint_path)  # a local path or gs://bucket/run
    if not path.exists():
        raise FileNotFoundError(f"checkpoint: {path} does not exist")
    directory = _checkpoint_directory(path)
    if directory is not None:
        manager = checkpoint.make_manager(directory, read_only=True)
        try:
            at = manager.latest_step() if step is None else int(step)
            if at is None:
                raise FileNotFoundError(f"checkpoint: {directory} holds no checkpoint")
            if config is None:
                config = saved_config(manager, at)
            config = prepare(config, count_data=False)
            trainer = Trainer(config, mesh=_single_device_mesh())
            state, _ = checkpoint.restore(manager, at, trainer.abstract_state)
        finally:
            manager.close()
        return config, trainer, state, f"{directory}:{at}"
    if config is None:
        raise ValueError(
            f"checkpoint: {path} is a weights file; pass the experiment config it belongs to "
            "(GramInference.load(path, config=...) or gram-rank --config)"
        )
    config = prepare(config, count_data=False)
    trainer = Trainer(config, mesh=_single_device_mesh())
    state = trainer.init_state()
    params, summary = params_file.init_from_file(
        state["params"],
        path,
        allow_missing=config.get("model_init_allow_missing", ()),
        source="checkpoint",
    )
    log.info("%s", summary)
    return config, trainer, dict(state, params=params), str(path)


class GramInference:
    """A GRAM model with its weights, ready to embed and score media (module docstring).

    Build it with :meth:`load`. Attributes: ``config`` (the experiment config: ``model`` and the
    evaluation-time preprocessing of ``data``), ``anchor`` (the query modality, 'text'),
    ``data_modalities`` (the tuple's modalities in Gram order), ``source`` (where the weights came
    from).
    """

    def __init__(self, config, trainer, state, *, source: str = "", batch_size: int = 8):
        if batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size}")
        self.config = config
        self.trainer = trainer
        self.source = source
        self.batch_size = int(batch_size)
        self.anchor = config.loss.anchor
        self.modalities = tuple(config.model.modalities)
        self.data_modalities = tuple(
            data_modalities({m: None for m in self.modalities}, self.anchor)
        )
        self._params, self._model_state = state["params"], state["model_state"]
        self._encode = trainer.eval_model.encode
        self._match = trainer.eval_model.match
        self._tokenizer = Tokenizer()

    @classmethod
    def load(
        cls,
        checkpoint_path: str | os.PathLike,
        config=None,
        *,
        step: int | None = None,
        batch_size: int = 8,
    ) -> GramInference:
        """Weights from a gram-train workdir / checkpoint directory, or a gram-convert file.

        Args:
          checkpoint_path: a workdir holding ``checkpoints/`` (or that directory itself): the
            train state of ``step`` (default: the latest) is restored, with the config saved
            beside it unless ``config`` is given. Otherwise a converted-weights file (.msgpack,
            .npz or an orbax params directory, what ``config.model_init`` takes): ``config`` is
            required, and the file's parameters replace the matching ones of a fresh model.
          config: the experiment config (required for converted weights).
          step: the checkpoint step (workdirs only).
          batch_size: items per encoder call.

        Raises:
          FileNotFoundError: the path does not exist, or holds no checkpoint / saved config.
          ValueError: a weights file without a config, or parameters that do not fit it.
        """
        config, trainer, state, source = load_state(checkpoint_path, config, step=step)
        return cls(config, trainer, state, source=source, batch_size=batch_size)

    @classmethod
    def initialize(cls, config, *, batch_size: int = 8) -> GramInference:
        """A model of ``config`` with freshly initialised (random, seed ``config.seed``) weights:
        for trying the API without a checkpoint; its scores mean nothing."""
        config = prepare(config, count_data=False)
        trainer = Trainer(config, mesh=_single_device_mesh())
        return cls(
            config, trainer, trainer.init_state(), source="random init", batch_size=batch_size
        )

    def save_params(self, path: str | os.PathLike) -> pathlib.Path:
        """Writes the parameters as a .msgpack weights file (what gram-convert writes and
        :meth:`load` / ``config.model_init`` read); returns the path."""
        path = pathlib.Path(path)
        if path.suffix != ".msgpack":
            raise ValueError(f"save_params: expected a .msgpack path, got {path}")
        return params_file.save_params(jax.tree.map(np.asarray, self._params), path)

    # ------------------------------------------------------------------ batches
    def _placeholders(self, n: int) -> dict[str, np.ndarray]:
        """Zero inputs of every modality for ``n`` rows (the encoder runs all its towers)."""
        return placeholder_batch(self.config.data, self.modalities, n)

    def encode_batch(self, batch: dict[str, np.ndarray]):
        """The eval-mode encoder on one batch-contract dict (every model modality present).

        Returns ({modality: float32[B, D]}, condition float[B, T, H] or None, condition_mask
        int32[B, T] or None).
        """
        embeddings, condition, condition_mask = self._encode(self._params, self._model_state, batch)
        embeddings = {m: np.asarray(e, np.float32) for m, e in embeddings.items()}
        if condition is not None:
            condition, condition_mask = np.asarray(condition), np.asarray(condition_mask)
        return embeddings, condition, condition_mask

    def tokenize(self, texts: Sequence[str], modality: str | None = None):
        """(ids int32[N, L], mask int32[N, L]) of ``texts`` at the config's length for
        ``modality`` (default: the anchor)."""
        modality = modality or self.anchor
        return self._tokenizer.encode(list(texts), int(self.config.data.text_max_len[modality]))

    # ------------------------------------------------------------------ embedding
    def embed_texts(self, texts: Sequence[str]) -> EmbeddedTexts:
        """Anchor embeddings of ``texts`` (non-empty strings): float32[N, D] unit vectors."""
        texts = [str(t) for t in texts]
        if not texts:
            raise ValueError("embed_texts: no text given")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"embed_texts: texts {empty} are empty; a query needs words")
        ids, mask = self.tokenize(texts)
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            stop = min(start + self.batch_size, len(texts))
            batch = self._placeholders(stop - start)
            batch[f"{self.anchor}_ids"], batch[f"{self.anchor}_mask"] = (
                ids[start:stop],
                mask[start:stop],
            )
            chunks.append(self.encode_batch(batch)[0][self.anchor])
        return EmbeddedTexts(texts, np.concatenate(chunks), ids, mask)

    def load_video(self, path: str | os.PathLike) -> np.ndarray:
        """uint8[F, S, S, 3]: the evaluation frames of ``path`` under ``config.data``."""
        d = self.config.data
        return media_video.load_frames(
            path,
            num_frames=d.eval_num_frames or d.num_frames,
            train=False,
            size=d.image_size,
            resize=d.resize,
            transform=d.frame_transform,
        )

    def load_audio(self, path: str | os.PathLike) -> np.ndarray:
        """float32[C, T, M]: the evaluation filterbank slices of ``path`` under ``config.data``."""
        a = self.config.data.audio
        return media_audio.load_fbank_slices(
            path,
            num_clips=a.num_clips,
            target_length=a.target_length,
            mel_bins=a.mel_bins,
            train=False,
            mean=a.norm_mean,
            std=a.norm_std,
            padding=a.padding,
            backend=a.backend,
        )

    def embed_media(
        self,
        videos: Sequence[str | os.PathLike | None] | None = None,
        audios: Sequence[str | os.PathLike | None] | None = None,
        subtitles: Sequence[str | None] | None = None,
        *,
        names: Sequence[str] | None = None,
    ) -> EmbeddedMedia:
        """Data tuples of N items: item i is (videos[i], audios[i], subtitles[i]).

        Each list (when given) has one entry per item; None (or a list left out) marks that
        modality absent for the item, and so does an empty subtitle. A model modality with no
        list at all is absent everywhere. Media files are decoded with the evaluation settings
        of ``config.data``; a file that cannot be used raises ``data_pipelines.media.MediaError``
        naming it.
        """
        given = {"video": videos, "audio": audios, "subtitle": subtitles}
        lengths = {m: len(v) for m, v in given.items() if v is not None}
        if not lengths:
            raise ValueError("embed_media: give videos, audios or subtitles")
        if len(set(lengths.values())) != 1:
            raise ValueError(f"embed_media: the lists differ in length: {lengths}")
        n = next(iter(lengths.values()))
        unknown = [m for m in lengths if m not in self.data_modalities]
        if unknown:
            raise ValueError(
                f"embed_media: the model has no {unknown} modality (its data modalities: "
                f"{self.data_modalities})"
            )
        if names is None:
            names = [_item_name(videos, audios, i) for i in range(n)]
        present = {m: np.zeros(n, bool) for m in self.data_modalities}
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, self.batch_size):
            rows = range(start, min(start + self.batch_size, n))
            batch = self._placeholders(len(rows))
            for r, i in enumerate(rows):
                for m in self.data_modalities:
                    source = None if given.get(m) is None else given[m][i]
                    if source is None or (m in TEXT_MODALITIES and not str(source).strip()):
                        continue
                    if m in TEXT_MODALITIES:
                        ids, mask = self.tokenize([str(source)], m)
                        batch[f"{m}_ids"][r], batch[f"{m}_mask"][r] = ids[0], mask[0]
                    elif m == "audio":
                        batch[m][r] = self.load_audio(source)
                    else:
                        batch[m][r] = self.load_video(source)
                    present[m][i] = True
            embeddings, condition, condition_mask = self.encode_batch(batch)
            for m in self.data_modalities:
                parts.setdefault(m, []).append(embeddings[m])
            if condition is not None:
                parts.setdefault("condition", []).append(condition)
                parts.setdefault("condition_mask", []).append(condition_mask)
        return EmbeddedMedia(
            names=list(names),
            embeddings={m: np.concatenate(parts[m]) for m in self.data_modalities},
            present=present,
            condition=np.concatenate(parts["condition"]) if "condition" in parts else None,
            condition_mask=(
                np.concatenate(parts["condition_mask"]) if "condition_mask" in parts else None
            ),
        )

    # ------------------------------------------------------------------ scoring
    def match_probabilities(
        self, texts: EmbeddedTexts, media: EmbeddedMedia, text_rows, media_rows
    ) -> np.ndarray:
        """float32[n]: the matching head's probability that text_rows[k] matches media_rows[k]."""
        if media.condition is None:
            raise ValueError("matching: the model has no matching head (config.model.matching)")
        text_rows, media_rows = np.asarray(text_rows), np.asarray(media_rows)
        out = []
        for start in range(0, text_rows.shape[0], self.batch_size):
            t = text_rows[start : start + self.batch_size]
            c = media_rows[start : start + self.batch_size]
            logits = self._match(
                self._params,
                self._model_state,
                texts.ids[t],
                texts.mask[t],
                media.condition[c],
                media.condition_mask[c],
            )
            out.append(matched_probability(logits))
        return np.concatenate(out)

    def score(
        self,
        texts: EmbeddedTexts,
        media: EmbeddedMedia,
        scoring: str = "volume",
        *,
        top_k: int = 50,
    ) -> np.ndarray:
        """float[N_text, N_media] scores, higher = better (module docstring for ``scoring``).

        ``matching`` re-scores the ``top_k`` candidates per text by volume with the matching
        head; the others keep their volume order below every candidate.
        """
        if scoring not in INFERENCE_SCORINGS:
            raise ValueError(f"scoring: expected one of {INFERENCE_SCORINGS}, got {scoring!r}")
        others = np.stack([media.embeddings[m] for m in media.modalities])
        present = np.stack([media.present[m] for m in media.modalities])
        base = scoring_registry.tuple_scores(
            texts.embeddings, others, "cosine" if scoring == "cosine" else "volume", present
        )
        if scoring != "matching":
            return np.asarray(base)
        return scoring_registry.rerank_with_matching(
            base,
            lambda q, c: self.match_probabilities(texts, media, q, c),
            top_k=top_k,
            batch_size=max(self.batch_size, 1),
        )


def _item_name(videos, audios, i: int) -> str:
    for files in (videos, audios):
        if files is not None and files[i] is not None:
            return pathlib.Path(files[i]).stem
    return f"item{i}"


__all__ = [
    "INFERENCE_SCORINGS",
    "EmbeddedMedia",
    "EmbeddedTexts",
    "GramInference",
    "load_state",
    "saved_config",
]
