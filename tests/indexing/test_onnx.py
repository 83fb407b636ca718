"""ONNX Runtime towers: parity with torch (the reference), the export cache, the fallback to torch, and what an
operator sees (``hub model prepare``, ``/ready``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx as onnx_format
import pytest
from PIL import Image, ImageDraw

from hub.search import onnx
from hub.search.encoder import Encoder
from tests.api.test_health import wait_ready

PROMPTS = ["red dress", "a long blue floral summer dress with short sleeves and two pockets", "x",
           "black leather jacket", "striped cotton tee slim fit", "wool coat"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


def catalog(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` different little product-like pictures: a coloured garment shape, a pattern, a background."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        background = tuple(int(v) for v in rng.integers(180, 256, 3))
        image = Image.new("RGB", (int(rng.integers(40, 90)), int(rng.integers(40, 90))), background)
        draw = ImageDraw.Draw(image)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        w, h = image.size
        draw.rectangle([w // 5, h // 6, w - w // 5, h - h // 8], fill=colour)
        for stripe in range(int(rng.integers(0, 6))):
            y = h // 6 + stripe * 7
            draw.line([w // 5, y, w - w // 5, y], fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=2)
        images.append(image)
    return images


@pytest.fixture(scope="module")
def towers(test_model: Path) -> tuple[Encoder, Encoder]:
    ort, torch = Encoder(str(test_model), inference="onnx"), Encoder(str(test_model), inference="torch")
    assert isinstance(ort.text.get()[1], onnx.OnnxTower) and isinstance(ort.vision.get()[1], onnx.OnnxTower)
    assert not isinstance(torch.text.get()[1], onnx.OnnxTower)  # (else the parity below compares a runtime to itself)
    return ort, torch


def test_onnx_runtime_runs_both_towers_by_default_on_cpu(test_model):
    encoder = Encoder(str(test_model))
    encoder.encode_text(["red dress"])
    encoder.encode_images([Image.new("RGB", (40, 60), "navy")])
    assert encoder.inference == "onnx"
    assert encoder.runtimes == {"text": "onnxruntime", "vision": "onnxruntime"}
    assert isinstance(encoder.text.get()[1], onnx.OnnxTower) and isinstance(encoder.vision.get()[1], onnx.OnnxTower)
    assert Encoder(str(test_model), inference="torch").inference == "torch"
    with pytest.raises(ValueError, match="auto, onnx or torch"):
        Encoder(str(test_model), inference="tensorflow")
    with pytest.raises(ValueError, match="use torch"):
        Encoder(str(test_model), device="cuda", inference="onnx")


def test_prompts_match_torch_alone_and_in_batches_of_any_length(towers):
    ort, torch = towers
    together = ort.encode_text(PROMPTS)  # padded to the longest prompt of the batch, not to 77
    reference = torch.encode_text(PROMPTS)
    assert cosines(together, reference).min() >= 0.9999
    alone = np.concatenate([ort.encode_text([p]) for p in PROMPTS])
    assert cosines(alone, reference).min() >= 0.9999
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    long = ["red dress " * 100]  # truncated to 77 tokens on both
    assert cosines(ort.encode_text(long), torch.encode_text(long)).min() >= 0.9999


def test_images_match_torch_and_rank_1000_images_identically(towers):
    ort, torch = towers
    images = catalog(1000)
    pixels = [ort.preprocess(image) for image in images]
    ours = np.concatenate([ort.encode_pixels(pixels[i:i + 32]) for i in range(0, len(pixels), 32)])
    reference = np.concatenate([torch.encode_pixels(pixels[i:i + 32]) for i in range(0, len(pixels), 32)])
    assert ours.shape == reference.shape == (1000, 512)
    assert cosines(ours, reference).min() >= 0.9999
    prompts = ort.encode_text(PROMPTS), torch.encode_text(PROMPTS)
    for i in range(len(PROMPTS)):
        ranked_ours = np.argsort(-(ours @ prompts[0][i]), kind="stable")[:10]
        ranked_reference = np.argsort(-(reference @ prompts[1][i]), kind="stable")[:10]
        assert list(ranked_ours) == list(ranked_reference), PROMPTS[i]
    for probe in (0, 500, 999):  # by example: an image's nearest neighbours
        assert list(np.argsort(-(ours @ ours[probe]))[:10]) == list(np.argsort(-(reference @ reference[probe]))[:10])


def test_int8_is_quantized_from_the_export_and_close_to_torch(test_model, tmp_path):
    folder = copy_checkpoint(test_model, tmp_path / "ckpt")
    encoder = Encoder(str(folder), int8=True)
    ours = encoder.encode_text(PROMPTS)
    assert encoder.runtimes["text"] == "onnxruntime int8"
    (export,) = (folder / "onnx").glob("*/text.onnx")
    (quantized,) = (folder / "onnx").glob("*/text-int8.onnx")
    assert quantized.stat().st_size < export.stat().st_size
    ops = {node.op_type for node in onnx_format.load(str(quantized)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}, ops  # int8 matmuls
    reference = Encoder(str(test_model), inference="torch").encode_text(PROMPTS)
    assert 0.95 < cosines(ours, reference).min() < 0.99999  # close, not the same numbers


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("onnx"))
    return target


def test_an_export_is_made_once_and_a_changed_checkpoint_gets_its_own(test_model, tmp_path):
    folder = copy_checkpoint(test_model, tmp_path / "ckpt")
    first = Encoder(str(folder))
    first.encode_text(["red dress"])
    exports = list((folder / "onnx").glob("*/text.onnx"))
    assert len(exports) == 1 and not list((folder / "onnx").glob("*/.*"))  # no temporary file left behind
    made = exports[0].stat().st_mtime_ns
    second = Encoder(str(folder))
    assert np.allclose(second.encode_text(["red dress"]), first.encode_text(["red dress"]), atol=1e-6)
    assert exports[0].stat().st_mtime_ns == made  # the cached export, not a new one
    config = folder / "config.json"
    config.write_text(config.read_text() + " ")  # the same weights, a changed file: a new digest, a new export
    Encoder(str(folder)).encode_text(["red dress"])
    assert len(list((folder / "onnx").glob("*/text.onnx"))) == 2


def test_both_towers_export_at_once_and_the_files_are_readable(test_model, tmp_path):
    folder = copy_checkpoint(test_model, tmp_path / "ckpt")
    encoder = Encoder(str(folder))
    with ThreadPoolExecutor(2) as pool:  # (as at start-up: the text tower warms up while images are embedded)
        list(pool.map(lambda tower: tower.get(), [encoder.text, encoder.vision]))
    assert encoder.runtimes == {"text": "onnxruntime", "vision": "onnxruntime"}
    umask = onnx.current_umask()
    assert umask == os.umask(umask)  # (read right: set to what it was, it returns what it was)
    for export in (folder / "onnx").glob("*/*.onnx"):
        assert export.stat().st_mode & 0o777 == 0o666 & ~umask, export  # not owner-only: another user may serve


def test_a_damaged_export_is_made_again(test_model, tmp_path):
    folder = copy_checkpoint(test_model, tmp_path / "ckpt")
    Encoder(str(folder)).encode_text(["red dress"])
    (export,) = (folder / "onnx").glob("*/text.onnx")
    export.write_bytes(b"not an onnx model")
    encoder = Encoder(str(folder))
    reference = Encoder(str(test_model), inference="torch").encode_text(["red dress"])
    assert cosines(encoder.encode_text(["red dress"]), reference).min() >= 0.9999
    assert encoder.runtimes["text"] == "onnxruntime" and export.stat().st_size > 1000


def test_a_read_only_checkpoint_exports_into_the_home(test_model, tmp_path):
    folder = copy_checkpoint(test_model, tmp_path / "ckpt")
    (folder / "onnx").write_text("not a folder: nothing can be written here")
    encoder = Encoder(str(folder), home=tmp_path / "home")
    encoder.encode_text(["red dress"])
    assert encoder.runtimes["text"] == "onnxruntime"
    assert list((tmp_path / "home" / "onnx").glob("ckpt-*/text.onnx"))


def test_without_a_place_for_the_export_torch_runs_the_tower_and_says_why(test_model, tmp_path):
    folder = copy_checkpoint(test_model, tmp_path / "ckpt")
    (folder / "onnx").write_text("not a folder")
    encoder = Encoder(str(folder))
    reference = Encoder(str(test_model), inference="torch").encode_text(["red dress"])
    assert cosines(encoder.encode_text(["red dress"]), reference).min() >= 0.9999
    assert encoder.runtimes["text"].startswith("torch (ONNX Runtime not used: OSError: no writable place")


def test_hub_model_prepare_exports_both_towers(test_model, tmp_path):
    folder = copy_checkpoint(test_model, tmp_path / "ckpt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")} | {"HUB_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "hub", "model", "prepare", str(folder)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "text model: onnxruntime" in proc.stdout and "vision model: onnxruntime" in proc.stdout
    assert {p.name for p in (folder / "onnx").glob("*/*.onnx")} == {"text.onnx", "vision.onnx"}
    assert str(folder / "onnx") in proc.stdout
    torch = subprocess.run([sys.executable, "-m", "hub", "model", "prepare", str(folder)], capture_output=True,
                           text=True, timeout=300, env=env | {"HUB_INFERENCE": "torch"})
    assert torch.returncode == 0 and "text model: torch\nvision model: torch" in torch.stdout, torch.stderr
    nowhere = copy_checkpoint(test_model, tmp_path / "nowhere")
    (nowhere / "onnx").write_text("not a folder")
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "onnx").write_text("not a folder")
    fallback = subprocess.run([sys.executable, "-m", "hub", "model", "prepare", str(nowhere)], capture_output=True,
                              text=True, timeout=300, env=env)
    assert fallback.returncode == 1 and "text model: torch (ONNX Runtime not used" in fallback.stdout
    assert "does not run as HUB_INFERENCE asks" in fallback.stderr
    missing = subprocess.run([sys.executable, "-m", "hub", "model", "prepare", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=300, env=env)
    assert missing.returncode != 0 and "cannot load model" in missing.stderr


@pytest.fixture
def settings_overrides(test_model: Path, tmp_path: Path) -> dict[str, str]:
    """(For the ``client`` below:) a checkpoint with nowhere to put its export, next to it or in the home."""
    folder = copy_checkpoint(test_model, tmp_path / "ckpt")
    (folder / "onnx").write_text("not a folder")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "onnx").write_text("not a folder either")
    return {"model": str(folder)}


async def test_ready_warns_when_torch_stands_in_for_onnx_runtime(client):
    ready = await wait_ready(client)
    assert ready.status_code == 200, ready.text  # it serves: torch runs the text tower
    body = ready.json()
    assert body["checks"]["model"] == "ok"
    assert [w for w in body["warnings"] if w.startswith(
        "the text model runs on torch (ONNX Runtime not used: OSError: no writable place for the ONNX export")]


def _nice_by_thread() -> dict[int, int]:
    """This process's threads and their nice values (Linux)."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            found[int(tid)] = int(Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])
        except OSError:  # a thread that ended meanwhile
            pass
    return found


def test_the_image_tower_runs_at_the_background_priority_and_the_text_tower_does_not(test_model, tmp_path):
    """HUB_EMBED_NICE: ONNX Runtime's threads for the image tower start at that nice value (they inherit it from
    the thread that creates the session), the caller's own thread is left alone, and the text tower (queries)
    keeps the process's priority."""
    encoder = Encoder(str(test_model), inference="onnx", threads=2, home=tmp_path, vision_nice=7)
    before = _nice_by_thread()
    encoder.vision.get()
    after_vision = _nice_by_thread()
    vision_threads = {tid: n for tid, n in after_vision.items() if tid not in before}
    assert 7 in vision_threads.values()  # the session's pool thread
    assert after_vision[threading.get_native_id()] == before[threading.get_native_id()] == 0
    encoder.text.get()
    text_threads = {tid: n for tid, n in _nice_by_thread().items() if tid not in after_vision}
    assert text_threads and set(text_threads.values()) == {0}
    assert encoder.encode_pixels([encoder.preprocess(catalog(1)[0])]).shape[0] == 1


async def test_the_embedding_batches_run_in_a_thread_at_the_background_priority(test_model):
    from hub.search.batching import Batcher

    seen: list[int] = []

    def prepare(item):
        seen.append(_nice_by_thread()[threading.get_native_id()])
        raise ValueError(f"not an image: {item}")

    batcher = Batcher(Encoder(str(test_model)), size=4, wait_ms=0, prepare=prepare, nice=5)
    try:
        with pytest.raises(ValueError):
            await batcher.embed("x")
    finally:
        await batcher.stop()
    assert seen == [5]
    assert _nice_by_thread()[threading.get_native_id()] == 0
