"""Use a trained or converted GRAM checkpoint on your own media: embed, score, rank.

    from gram_jax.inference import GramInference

    gram = GramInference.load("runs/my_run")                  # a gram-train workdir (its config)
    gram = GramInference.load("ckpt/params", config=config)   # gram-convert's DIR/params + config
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

The model is the evaluators' `EvalModel` (the same jitted encoder and matching head as
``gram-eval``) on one device, built from the config after the same `gram_jax.config.prepare`.
Only the parameters and the small non-parameter model state are held: a workdir checkpoint is
restored partially (its optimizer moments are never read), converted weights must cover every
parameter, and no optimizer is built. Each call encodes in chunks of ``batch_size`` rows and runs
only the towers it needs: texts the text tower, media the towers of the given modalities.

Memory: embeddings are kept (float32[N, D] per modality), the fusion tokens of the matching head
are not. ``matching`` recomputes them for the top-k candidates only, ``batch_size`` items at a
time, so re-ranking holds O(batch_size) items' tokens plus O(top_k x queries) probabilities
instead of every item's tokens (at the cost of decoding those candidates' files again).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Sequence

import jax
import numpy as np
from etils import epath

from data_pipelines.config import TEXT_MODALITIES
from data_pipelines.media import audio as media_audio
from data_pipelines.media import text as text_tokenizer
from data_pipelines.media import video as media_video
from data_pipelines.transforms import placeholder_batch
from gram_jax import parallel
from gram_jax.config import prepare
from gram_jax.config.validation import ConfigError
from gram_jax.convert import params_file
from gram_jax.evaluators import scoring as scoring_registry
from gram_jax.evaluators.model import EvalModel, matched_probability
from gram_jax.models.gram import build_model, split_model
from gram_jax.models.modalities import data_modalities
from gram_jax.train import checkpoint
from gram_jax.train import workdir as workdir_paths

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

    embeddings: {modality: float32[N, D]} in Gram order (zeros where absent); present:
    {modality: bool[N]} (an absent modality leaves the Gram matrix); sources: {modality: list of
    N file paths / subtitle strings or None} for the modalities given (what the matching head's
    fusion tokens are recomputed from); names: one label per item.
    """

    names: list[str]
    embeddings: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    sources: dict[str, list]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.embeddings)


def _single_device_mesh():
    return parallel.make_mesh(dict(data=1, fsdp=1, model=1), devices=jax.devices()[:1])


def _checkpoint_directory(path: epath.Path) -> epath.Path | None:
    """The orbax CheckpointManager directory of a gram-train workdir (or that directory itself);
    None when ``path`` is neither (e.g. converted weights)."""
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if path.is_dir() and any(p.name.isdigit() and p.is_dir() for p in path.iterdir()):
        return path
    return None


def abstract_variables(eval_model: EvalModel) -> dict:
    """{'params', 'model_state'}: pure-dict pytrees of ShapeDtypeStructs carrying their shardings
    on the model's mesh, as a gram-train checkpoint stores them (no array is allocated)."""
    config = eval_model.config
    params, rest = jax.eval_shape(lambda: split_model(build_model(config.model, config.seed))[1:])
    shardings = dict(
        params=parallel.state_shardings(eval_model.abstract_params, eval_model.mesh),
        model_state=parallel.state_shardings(eval_model.abstract_rest, eval_model.mesh),
    )
    return checkpoint.abstract_like(dict(params=params, model_state=rest), shardings)


def weights_file_variables(path: epath.Path, config, abstract: dict) -> dict:
    """{'params', 'model_state'} from converted weights (`gram_jax.convert.params_file`): every
    parameter must be in the file unless ``config.model_init_allow_missing`` names it (those, and
    only then, are initialised from ``config.seed``); the model state (dropout RNG counters only)
    is initialised from ``config.seed`` without computing any parameter."""
    params, summary = params_file.init_from_file(
        abstract["params"],
        path,
        allow_missing=config.get("model_init_allow_missing", ()),
        source="checkpoint",
    )
    log.info("%s", summary)

    def init(part: int, shardings):
        # Under jit the initialisers whose output is not returned are dead code.
        return jax.jit(
            lambda: split_model(build_model(config.model, config.seed))[part],
            out_shardings=jax.tree.map(lambda s: s.sharding, shardings),
        )()

    if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params)):
        fresh = init(1, abstract["params"])  # parameters allowed to start from init
        params = jax.tree.map(
            lambda x, f: f if isinstance(x, jax.ShapeDtypeStruct) else x, params, fresh
        )
    return dict(params=params, model_state=init(2, abstract["model_state"]))


def load_model(checkpoint_path: str | os.PathLike, config=None, *, step: int | None = None):
    """(prepared config, EvalModel, {'params', 'model_state'}, source) for
    :meth:`GramInference.load` (see there)."""
    path = workdir_paths.resolve(checkpoint_path)  # a local path or gs://bucket/run
    if not path.exists():
        raise FileNotFoundError(f"checkpoint: {path} does not exist")
    directory = _checkpoint_directory(path)
    if directory is None and config is None:
        raise ConfigError(
            f"checkpoint: {path} is a weights file; pass the experiment config it belongs to "
            "(GramInference.load(path, config=...) or gram-rank --config)"
        )
    if directory is not None:
        manager = checkpoint.make_manager(directory, read_only=True)
        try:
            at = manager.latest_step() if step is None else int(step)
        finally:
            manager.close()
        if at is None:
            raise FileNotFoundError(f"checkpoint: {directory} holds no checkpoint")
        if config is None:
            config = checkpoint.saved_run_config(directory, at)
    config = prepare(config, count_data=False)
    eval_model = EvalModel(config, _single_device_mesh())
    abstract = abstract_variables(eval_model)
    if directory is not None:
        variables = checkpoint.restore_subtree(directory, at, abstract)
        source = f"{directory}:{at}"
    else:
        variables = weights_file_variables(path, config, abstract)
        source = str(path)
    return config, eval_model, variables, source


class GramInference:
    """A GRAM model with its weights, ready to embed and score media (module docstring).

    Build it with :meth:`load`. Attributes: ``config`` (the prepared experiment config: ``model``
    and the evaluation-time preprocessing of ``data``), ``anchor`` (the query modality, 'text'),
    ``data_modalities`` (the tuple's modalities in Gram order), ``source`` (where the weights came
    from), ``eval_model`` (the jitted encoder and matching head).
    """

    def __init__(self, config, eval_model: EvalModel, variables, *, source="", batch_size=8):
        if batch_size <= 0:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size}")
        self.config = config
        self.eval_model = eval_model
        self.source = source
        self.batch_size = int(batch_size)
        self.anchor = config.loss.anchor
        self.modalities = tuple(config.model.modalities)
        self.data_modalities = tuple(
            data_modalities({m: None for m in self.modalities}, self.anchor)
        )
        self._params, self._model_state = variables["params"], variables["model_state"]
        self._tokenizer = text_tokenizer.from_data_config(config.data)  # the run's vocabulary

    @classmethod
    def load(
        cls,
        checkpoint_path: str | os.PathLike,
        config=None,
        *,
        step: int | None = None,
        batch_size: int = 8,
    ) -> GramInference:
        """Weights from a gram-train workdir / checkpoint directory, or gram-convert weights.

        Args:
          checkpoint_path: a workdir holding ``checkpoints/`` (or that directory itself): the
            parameters of ``step`` (default: the latest) are restored, with the config saved
            beside them unless ``config`` is given. Otherwise converted weights (``DIR/params``
            as gram-convert writes it, or a .msgpack / .npz file: what ``config.model_init``
            takes): ``config`` is required and the file must hold every parameter of its model.
          config: the experiment config (required for converted weights).
          step: the checkpoint step (workdirs only).
          batch_size: rows per encoder call.

        Raises:
          FileNotFoundError: the path does not exist, or holds no checkpoint / saved config.
          ValueError: parameters that do not fit the model.
          gram_jax.config.validation.ConfigError (a ValueError): a weights file without a config,
            or a config that `gram_jax.config.prepare` refuses.
        """
        config, eval_model, variables, source = load_model(checkpoint_path, config, step=step)
        return cls(config, eval_model, variables, source=source, batch_size=batch_size)

    @classmethod
    def initialize(cls, config, *, batch_size: int = 8) -> GramInference:
        """A model of ``config`` with freshly initialised (random, seed ``config.seed``) weights:
        for trying the API without a checkpoint; its scores mean nothing."""
        config = prepare(config, count_data=False)
        eval_model = EvalModel(config, _single_device_mesh())
        shardings = jax.tree.map(lambda s: s.sharding, abstract_variables(eval_model))
        params, rest = jax.jit(
            lambda: split_model(build_model(config.model, config.seed))[1:],
            out_shardings=(shardings["params"], shardings["model_state"]),
        )()
        variables = dict(params=params, model_state=rest)
        return cls(config, eval_model, variables, source="random init", batch_size=batch_size)

    def save_params(self, path: str | os.PathLike) -> epath.Path:
        """Writes the parameters as a .msgpack weights file (what :meth:`load` and
        ``config.model_init`` read; `gram_jax.convert.params_file`), local or ``gs://``; returns
        the path."""
        path = workdir_paths.resolve(path)
        if path.suffix != ".msgpack":
            raise ValueError(f"save_params: expected a .msgpack path, got {path}")
        return params_file.save_params(jax.tree.map(np.asarray, self._params), path)

    # ------------------------------------------------------------------ batches
    def encode_batch(self, batch: dict[str, np.ndarray]):
        """The eval-mode encoder on one batch-contract dict; only the towers of the modalities
        whose inputs it holds run.

        Returns ({modality: float32[B, D]} of those modalities, condition float[B, T, H] or None,
        condition_mask int32[B, T] or None; the fusion tokens need every condition modality).
        """
        device_batch, n = self.eval_model.to_device(batch)
        embeddings, condition, condition_mask = self.eval_model.encode(
            self._params, self._model_state, device_batch
        )
        embeddings = {m: np.asarray(e, np.float32)[:n] for m, e in embeddings.items()}
        if condition is not None:
            condition, condition_mask = np.asarray(condition)[:n], np.asarray(condition_mask)[:n]
        return embeddings, condition, condition_mask

    def tokenize(self, texts: Sequence[str], modality: str | None = None):
        """(ids int32[N, L], mask int32[N, L]) of ``texts`` at the config's length for
        ``modality`` (default: the anchor)."""
        modality = modality or self.anchor
        return self._tokenizer.encode(list(texts), int(self.config.data.text_max_len[modality]))

    def _chunks(self, n: int):
        for start in range(0, n, self.batch_size):
            yield range(start, min(start + self.batch_size, n))

    # ------------------------------------------------------------------ embedding
    def embed_texts(self, texts: Sequence[str]) -> EmbeddedTexts:
        """Anchor embeddings of ``texts`` (non-empty strings): float32[N, D] unit vectors. Only
        the text tower and its projection run."""
        texts = [str(t) for t in texts]
        if not texts:
            raise ValueError("embed_texts: no text given")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"embed_texts: texts {empty} are empty; a query needs words")
        ids, mask = self.tokenize(texts)
        chunks = []
        for rows in self._chunks(len(texts)):
            batch = placeholder_batch(self.config.data, (self.anchor,), self.batch_size)
            batch[f"{self.anchor}_ids"][: len(rows)] = ids[rows.start : rows.stop]
            batch[f"{self.anchor}_mask"][: len(rows)] = mask[rows.start : rows.stop]
            # Full-size batches (padding rows cut off) keep one compiled encoder.
            chunks.append(self.encode_batch(batch)[0][self.anchor][: len(rows)])
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

    def _media_batch(self, sources: dict[str, list], rows, modalities) -> tuple[dict, dict]:
        """(batch of ``batch_size`` rows holding the inputs of ``modalities`` for items ``rows``
        (zeros elsewhere), {modality: bool[len(rows)] present})."""
        batch = placeholder_batch(self.config.data, modalities, self.batch_size)
        present = {m: np.zeros(len(rows), bool) for m in modalities}
        for r, i in enumerate(rows):
            for m in modalities:
                source = sources[m][i] if m in sources else None
                if source is None or (m in TEXT_MODALITIES and not str(source).strip()):
                    continue
                if m in TEXT_MODALITIES:
                    ids, mask = self.tokenize([str(source)], m)
                    batch[f"{m}_ids"][r], batch[f"{m}_mask"][r] = ids[0], mask[0]
                elif m == "audio":
                    batch[m][r] = self.load_audio(source)
                else:
                    batch[m][r] = self.load_video(source)
                present[m][r] = True
        return batch, present

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
        modality absent for the item, and so does an empty subtitle. Only the towers of the
        given lists run; a model modality with no list is absent everywhere. Media files are
        decoded with the evaluation settings of ``config.data``; a file that cannot be used
        raises ``data_pipelines.media.MediaError`` naming it.
        """
        given = {"video": videos, "audio": audios, "subtitle": subtitles}
        given = {m: list(v) for m, v in given.items() if v is not None}
        if not given:
            raise ValueError("embed_media: give videos, audios or subtitles")
        lengths = {m: len(v) for m, v in given.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"embed_media: the lists differ in length: {lengths}")
        unknown = [m for m in given if m not in self.data_modalities]
        if unknown:
            raise ValueError(
                f"embed_media: the model has no {unknown} modality (its data modalities: "
                f"{self.data_modalities})"
            )
        n = next(iter(lengths.values()))
        if names is None:
            names = [_item_name(given, i) for i in range(n)]
        run = tuple(m for m in self.data_modalities if m in given)
        dim = int(self.config.model.embed_dim)
        embeddings = {m: np.zeros((n, dim), np.float32) for m in self.data_modalities}
        present = {m: np.zeros(n, bool) for m in self.data_modalities}
        for rows in self._chunks(n):
            batch, found = self._media_batch(given, rows, run)
            encoded = self.encode_batch(batch)[0]
            for m in run:
                embeddings[m][rows.start : rows.stop] = encoded[m][: len(rows)]
                present[m][rows.start : rows.stop] = found[m]
        return EmbeddedMedia(list(names), embeddings, present, given)

    # ------------------------------------------------------------------ scoring
    def condition_tokens(self, media: EmbeddedMedia, rows: Sequence[int]):
        """The matching head's fusion tokens of items ``rows`` (at most ``batch_size``),
        recomputed from their files: (float[len(rows), T, H], int32[len(rows), T]). Every data
        modality's tower runs (absent ones on zero inputs, masked as in evaluation)."""
        rows = list(rows)
        if len(rows) > self.batch_size:
            raise ValueError(f"condition_tokens: {len(rows)} rows > batch_size {self.batch_size}")
        batch, _ = self._media_batch(media.sources, rows, self.data_modalities)
        _, condition, condition_mask = self.encode_batch(batch)
        if condition is None:
            raise ValueError("matching: the model has no matching head (config.model.matching)")
        return condition[: len(rows)], condition_mask[: len(rows)]

    def match_probabilities(
        self, texts: EmbeddedTexts, media: EmbeddedMedia, text_rows, media_rows
    ) -> np.ndarray:
        """float32[n]: the matching head's probability that text_rows[k] matches media_rows[k].

        The pairs are grouped by item: the fusion tokens of ``batch_size`` distinct items at a
        time are recomputed (`condition_tokens`) and matched against all their texts, so memory
        holds O(batch_size) items' tokens and each item's files are decoded once per call.
        """
        text_rows, media_rows = np.asarray(text_rows, int), np.asarray(media_rows, int)
        out = np.empty(text_rows.shape[0], np.float32)
        items = np.unique(media_rows)
        for start in range(0, items.shape[0], self.batch_size):
            chunk = items[start : start + self.batch_size]
            condition, condition_mask = self.condition_tokens(media, chunk)
            slot = {int(item): s for s, item in enumerate(chunk)}
            pairs = np.flatnonzero(np.isin(media_rows, chunk))
            for first in range(0, pairs.shape[0], self.batch_size):
                sel = pairs[first : first + self.batch_size]
                c = np.array([slot[int(i)] for i in media_rows[sel]])
                out[sel] = self._match(
                    texts.ids[text_rows[sel]],
                    texts.mask[text_rows[sel]],
                    condition[c],
                    condition_mask[c],
                )
        return out

    def _match(self, ids, mask, condition, condition_mask) -> np.ndarray:
        """P(matched) float32[n] of n <= batch_size pairs (padded to batch_size: one compile)."""
        n = ids.shape[0]
        pad = self.batch_size - n
        batch = {"ids": ids, "mask": mask, "cond": condition, "cond_mask": condition_mask}
        batch = {
            k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in batch.items()
        }
        device, _ = self.eval_model.to_device(batch)
        logits = self.eval_model.match(
            self._params,
            self._model_state,
            device["ids"],
            device["mask"],
            device["cond"],
            device["cond_mask"],
        )
        return matched_probability(np.asarray(logits)[:n])

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
        head (`match_probabilities`: memory O(batch_size + top_k x N_text) beyond the scores);
        the others keep their volume order below every candidate.
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
        k = min(int(top_k), base.shape[1])
        return scoring_registry.rerank_with_matching(
            base,
            lambda q, c: self.match_probabilities(texts, media, q, c),
            top_k=top_k,
            # One call with every (text, candidate) pair: match_probabilities groups them by item.
            batch_size=max(base.shape[0] * k, 1),
        )


def _item_name(given: dict[str, list], i: int) -> str:
    for m in ("video", "audio"):
        if given.get(m) is not None and given[m][i] is not None:
            return pathlib.Path(given[m][i]).stem
    return f"item{i}"


__all__ = [
    "INFERENCE_SCORINGS",
    "EmbeddedMedia",
    "EmbeddedTexts",
    "GramInference",
    "abstract_variables",
    "weights_file_variables",
    "load_model",
]
