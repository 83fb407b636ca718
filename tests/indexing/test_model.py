"""The encoder: the init-test checkpoint through the real from_pretrained path, shapes, norms, padding, cache."""

from __future__ import annotations

import asyncio

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hub.search.batching import PromptBatcher
from hub.search.encoder import MAX_TEXT_TOKENS, Encoder, ModelUnavailable, model_key


def test_init_test_cli_writes_a_loadable_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, "-m", "hub", "model", "init-test", str(folder)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "meaningless" in proc.stdout and f"HUB_MODEL={folder}" in proc.stdout
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (folder / name).exists(), name
    encoder = Encoder(str(folder))
    assert encoder.encode_text(["red dress"]).shape == (1, 512)


def test_vectors_are_normalised_512d(test_model):
    encoder = Encoder(str(test_model))
    text = encoder.encode_text(["red dress with floral patterns", "black leather jacket"])
    images = encoder.encode_images([Image.new("RGB", (120, 90), (200, 20, 20)), Image.new("RGB", (40, 60), "navy")])
    for vectors in (text, images):
        assert vectors.shape == (2, 512) and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(text[0], text[1])
    assert not np.allclose(images[0], images[1])


def test_prompts_are_not_padded_to_77(test_model):
    encoder = Encoder(str(test_model))
    tokens = encoder.tokenize(["red dress"])["input_ids"]
    assert tokens.shape[1] < 10
    long = encoder.tokenize(["red dress " * 100])["input_ids"]
    assert long.shape[1] == MAX_TEXT_TOKENS  # truncated, never longer


PROMPTS = ["red dress", "Red  DRESS\twith floral patterns", "", "   ", "a-line skirt, 100% cotton (size M)!",
           "café crème blazer", "T-shirt's neckline", "👗 summer dress", "<|endoftext|> jeans", "ünïcödé ĳ ﬁ",
           "red dress " * 60, "x" * 300, "jacket\nwith\r\nhood"]


def test_prompts_are_tokenized_as_transformers_tokenizes_them(test_model, tmp_path):
    """The checkpoint's tokenizer.json read directly gives the ids and masks transformers' CLIP tokenizer gives, alone
    and in padded batches; a checkpoint it cannot read exactly gets transformers' tokenizer."""
    import json
    import shutil

    from transformers import CLIPTokenizer

    from hub.search.tokens import FastTokens, TransformersTokens

    encoder = Encoder(str(test_model))
    fast = encoder._load_tokens()
    assert isinstance(fast, FastTokens)
    reference = TransformersTokens(CLIPTokenizer.from_pretrained(str(test_model)), MAX_TEXT_TOKENS)
    for batch in [[prompt] for prompt in PROMPTS] + [PROMPTS, PROMPTS[:3], PROMPTS[9:]]:
        ours, theirs = fast(batch, "np"), reference(batch, "np")
        for name in ("input_ids", "attention_mask"):
            assert ours[name].dtype == np.int64
            assert np.array_equal(ours[name], np.asarray(theirs[name])), (batch, name)
    as_torch = fast(PROMPTS, "pt")
    assert [tuple(t.shape) for t in as_torch.values()] == [fast(PROMPTS)["input_ids"].shape] * 2

    for change in ({"tokenizer_class": "BertTokenizer"}, {"padding_side": "left"}, {"pad_token": None}):
        folder = tmp_path / f"ckpt-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(test_model, folder, ignore=shutil.ignore_patterns("onnx"))
        config = json.loads((folder / "tokenizer_config.json").read_text()) | change
        (folder / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
        assert not isinstance(Encoder(str(folder))._load_tokens(), FastTokens), change
    folder = tmp_path / "no-tokenizer-json"
    shutil.copytree(test_model, folder, ignore=shutil.ignore_patterns("onnx", "tokenizer.json"))
    from hub.search.tokens import fast_tokens

    assert fast_tokens(folder, MAX_TEXT_TOKENS) is None


def test_batching_does_not_change_embeddings(test_model):
    encoder = Encoder(str(test_model))
    images = [Image.new("RGB", (64, 64), (i * 40, 255 - i * 30, 90)) for i in range(5)]
    together = encoder.encode_images(images)
    alone = np.concatenate([encoder.encode_images([img]) for img in images])
    assert np.allclose(together, alone, atol=1e-5)
    prompts = ["red dress", "blue denim jacket with pockets"]
    assert np.allclose(encoder.encode_text(prompts), np.concatenate([encoder.encode_text([p]) for p in prompts]),
                       atol=1e-5)


def test_prompt_cache(test_model):
    encoder = Encoder(str(test_model))
    first = encoder.encode_prompt("Red  Dress")
    again = encoder.encode_prompt("red dress")
    assert encoder.text_cache_hits == 1
    assert np.array_equal(first, again)


async def test_concurrent_prompts_share_one_forward_pass(test_model):
    encoder = Encoder(str(test_model))
    batcher = PromptBatcher(encoder)
    prompts = [f"{colour} {item}" for colour in ("red", "navy blue striped") for item in ("dress", "linen shirt",
                                                                                         "coat", "jeans")]
    try:
        vectors = await asyncio.gather(*(batcher.encode(p) for p in prompts + ["RED  dress"]))
        assert (batcher.passes, batcher.prompts) == (1, 9)  # everything waiting went through together
        for prompt, vector in zip(prompts, vectors, strict=False):  # the same vector as alone, padding aside
            assert np.allclose(vector, encoder.encode_text([prompt])[0], atol=1e-5)
        assert np.array_equal(vectors[-1], vectors[0])  # normalised prompts are one prompt
        await batcher.encode("red dress")
        assert batcher.passes == 1  # cached: no pass at all
    finally:
        await batcher.stop()
    broken = PromptBatcher(Encoder("/no/such/checkpoint"))
    try:
        results = await asyncio.gather(*(broken.encode(p) for p in prompts[:3]), return_exceptions=True)
        assert all(isinstance(r, ModelUnavailable) for r in results)
    finally:
        await broken.stop()


def test_unloadable_model_names_the_setting(tmp_path):
    encoder = Encoder(str(tmp_path / "no-such-checkpoint"))
    with pytest.raises(ModelUnavailable, match="HUB_MODEL"):
        encoder.encode_prompt("red dress")
    with pytest.raises(ModelUnavailable, match="HUB_MODEL"):  # remembered, not retried at once
        encoder.encode_prompt("red dress")


def test_model_key_separates_checkpoints(tmp_path, test_model):
    assert model_key(str(test_model)) == model_key(str(test_model))
    assert model_key("patrickjohncyh/fashion-clip").startswith("fashion-clip-")
    assert model_key(str(test_model)) != model_key("patrickjohncyh/fashion-clip")


@pytest.mark.parametrize("size", [(600, 800), (800, 600), (224, 224), (97, 300)])
def test_fast_preprocess_matches_the_clip_processor(test_model, size):
    import io

    from tests.images import photo

    encoder = Encoder(str(test_model))
    image = Image.open(io.BytesIO(photo(5, size=size, fmt="PNG")))
    fast = encoder.preprocess(image)
    reference = encoder.preprocess_reference(Image.open(io.BytesIO(photo(5, size=size, fmt="PNG"))))
    assert fast.shape == reference.shape
    assert np.abs(fast - reference).max() < 1e-5  # the same steps, the same numbers


def test_fast_preprocess_full_size(tmp_path):
    import io

    from hub.search.test_checkpoint import write_test_checkpoint
    from tests.images import photo

    folder = tmp_path / "full"
    write_test_checkpoint(folder, full_size=True)
    encoder = Encoder(str(folder))
    data = photo(6, size=(600, 800), fmt="JPEG")
    fast = encoder.preprocess(Image.open(io.BytesIO(data)))
    reference = encoder.preprocess_reference(Image.open(io.BytesIO(data)))
    assert fast.shape == reference.shape == (3, 224, 224)
    assert np.abs(fast - reference).mean() < 0.01  # a JPEG is decoded at reduced scale, then resized


PREPROCESSOR = {  # preprocessor_config.json as checkpoints write it (FashionCLIP's is the legacy one, with ints)
    "legacy ints": {"size": 224, "crop_size": 224, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3],
                    "feature_extractor_type": "CLIPFeatureExtractor", "do_resize": True, "resample": 3},
    "dicts": {"size": {"shortest_edge": 256}, "crop_size": {"height": 240, "width": 200},
              "image_processor_type": "CLIPImageProcessor"},
    "defaults": {"image_processor_type": "CLIPImageProcessor"},
    # what the fast path does not do itself: transformers' processor runs
    "exact resize": {"size": [288, 288], "crop_size": [256, 256]},
    "square size": {"size": {"shortest_edge": 200}, "use_square_size": True},
    "no crop": {"size": {"height": 64, "width": 48}, "do_center_crop": False},
    "bilinear": {"size": {"shortest_edge": 64}, "crop_size": 64, "resample": 2},
}
NESTED = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 72},
          "crop_size": {"height": 64, "width": 56}, "image_mean": [0.1, 0.2, 0.3]}
CONFIGS = {  # the checkpoint's files → ClipPixels (fast) or not
    **{name: ({"preprocessor_config.json": config}, name in ("legacy ints", "dicts", "defaults"))
       for name, config in PREPROCESSOR.items()},
    # transformers ≥ 5 saves the settings nested in processor_config.json, read before preprocessor_config.json
    "nested beside a flat one": ({"processor_config.json": {"image_processor": NESTED},
                                  "preprocessor_config.json": PREPROCESSOR["dicts"]}, True),
    "nested only": ({"processor_config.json": {"image_processor": NESTED}}, True),
    "a processor config without image settings": ({"processor_config.json": {"processor_class": "CLIPProcessor"},
                                                   "preprocessor_config.json": PREPROCESSOR["dicts"]}, True),
}


@pytest.mark.parametrize("config", [None, *CONFIGS], ids=["the test checkpoint's", *CONFIGS])
def test_preprocessing_follows_the_checkpoints_config_as_the_clip_processor_does(tmp_path, test_model, config):
    """The image tower reads the processor's settings itself (transformers' image processing imports torch) and
    does CLIP's usual steps in NumPy; what it makes must be what ``CLIPImageProcessor`` makes of the same files,
    and anything else must be left to the processor."""
    import io
    import json
    import shutil

    from hub.search.pixels import ClipPixels
    from tests.images import photo

    folder, fast = test_model, True
    if config is not None:
        folder = tmp_path / "ckpt"
        shutil.copytree(test_model, folder, ignore=shutil.ignore_patterns("onnx", "*processor_config.json"))
        files, fast = CONFIGS[config]
        for name, content in files.items():
            (folder / name).write_text(json.dumps(content))
    encoder = Encoder(str(folder))
    pixels = encoder._load_pixels()
    assert isinstance(pixels, ClipPixels) == fast
    for size in ((300, 410), (410, 300)):
        made = pixels(Image.open(io.BytesIO(photo(7, size=size, fmt="PNG"))))
        expected = encoder.preprocess_reference(Image.open(io.BytesIO(photo(7, size=size, fmt="PNG"))))
        assert made.shape == expected.shape and made.shape[1:] == pixels.shape
        assert np.abs(made - expected).max() < 1e-5


def test_clips_default_normalisation_is_transformers_own():
    from transformers.utils import constants

    from hub.search import pixels

    assert pixels.OPENAI_CLIP_MEAN == tuple(constants.OPENAI_CLIP_MEAN)
    assert pixels.OPENAI_CLIP_STD == tuple(constants.OPENAI_CLIP_STD)


def test_a_processor_config_the_processor_rejects_is_not_read_around(tmp_path, test_model):
    """Settings transformers refuses (a size of an unknown kind) fail the image tower's load with the reason,
    rather than being read some other way."""
    import json
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(test_model, folder, ignore=shutil.ignore_patterns("onnx"))
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 300}}))
    with pytest.raises(ModelUnavailable, match="size"):
        Encoder(str(folder))._load_pixels()


def test_a_cached_export_loads_without_torch_or_transformers(test_model):
    """With both towers exported, a process loads them on ONNX Runtime without importing transformers at all (its
    CLIP models, its tokenizer, its import structure) and, on a CPU-only torch, torch itself: seconds of every
    ``hub serve`` and ``hub worker`` start."""
    from importlib.metadata import version

    warm = Encoder(str(test_model))  # (exports both towers if this run has not yet)
    expected = warm.encode_text(["red dress"])[0]
    assert warm.encode_images([Image.new("RGB", (64, 64), "navy")]).shape == (1, 512)
    script = (
        "import sys, json\n"
        "from PIL import Image\n"
        "from hub.search.encoder import Encoder\n"
        f"encoder = Encoder({str(test_model)!r})\n"
        "text = encoder.encode_text(['red dress'])[0].tolist()\n"
        "encoder.encode_images([Image.new('RGB', (64, 64), 'navy')])\n"
        "print(json.dumps({'text': text, 'runtimes': encoder.runtimes,\n"
        "                  'modules': [m for m in ('torch', 'transformers') if m in sys.modules],\n"
        "                  'clip': [m for m in ('transformers.models.clip.modeling_clip',)\n"
        "                              if m in sys.modules]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["runtimes"] == {"text": "onnxruntime", "vision": "onnxruntime"}
    assert np.allclose(seen["text"], expected, atol=1e-6)
    assert seen["clip"] == [] and "transformers" not in seen["modules"]
    if version("torch").endswith("+cpu"):
        assert seen["modules"] == []
