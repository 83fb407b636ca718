"""FashionCLIP through ``transformers``: text and image towers, loaded lazily and separately, once per process.

On CPU each tower runs on ONNX Runtime by default (``HUB_INFERENCE``), exported from the torch tower this module
loads (``hub.search.onnx``); torch runs it on a GPU, when asked to, or when ONNX Runtime cannot be used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hub import heap
from hub.metrics import forward_pass
from hub.search import onnx
from hub.search.pixels import Pixels, ProcessorPixels, clip_pixels, processor_settings
from hub.search.tokens import Tokens, TransformersTokens, fast_tokens

log = logging.getLogger("hub.model")

# torch's OpenMP threads spin while they wait for work. On a small machine that spinning takes the cores the
# event loop, the database and image decoding need, and the whole pipeline slows down: measured on 2 cores,
# 0.72 → 0.89 of the raw encoder's throughput with passive waiting (docs/benchmarks.md). It must be set before
# torch is first imported; an operator's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MAX_TEXT_TOKENS = 77
TEXT_CACHE_SIZE = 4096
RETRY_FAILED_LOAD_AFTER = 30.0


class ModelUnavailable(Exception):
    """The checkpoint could not be loaded; the message says what to fix."""


def model_key(name: str) -> str:
    """A short stable id of the checkpoint, so vectors of different models never share a collection."""
    path = Path(name)
    digest = hashlib.sha256(name.encode())
    if path.is_dir():
        for file in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")):
            digest.update(file.name.encode() + str(file.stat().st_size).encode())
            with file.open("rb") as fh:
                digest.update(fh.read(1 << 20))
        base = path.resolve().name
    else:
        base = name.rsplit("/", 1)[-1]
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:40] or "model"
    return f"{slug}-{digest.hexdigest()[:10]}"


_IMPORT_LOCK = threading.Lock()


def _clip_class(name: str) -> Any:
    """One of transformers' CLIP classes, imported when first asked for: the model classes import torch and
    transformers' modelling code (seconds on a small CPU), which a tower with a cached ONNX export never needs.
    transformers' lazy imports are not thread-safe, and the two towers load in two threads."""
    with _IMPORT_LOCK:
        import transformers

        return getattr(transformers, name)


def _quiet_transformers() -> None:
    """Loading one tower of a full CLIP checkpoint lists the other tower's weights as unexpected: expected."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _from_pretrained(cls: Any, name: str, **kwargs: Any) -> Any:
    """Local folder or cache first; the hub only when the id is not there yet (bounded by HF timeouts)."""
    with _IMPORT_LOCK:
        _quiet_transformers()
    if Path(name).is_dir():
        return cls.from_pretrained(name, **kwargs)
    try:
        return cls.from_pretrained(name, local_files_only=True, **kwargs)
    except OSError:
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
        os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
        return cls.from_pretrained(name, **kwargs)


def _torch_may_have_cuda() -> bool:
    """False when torch is a CPU-only build (its version says ``+cpu``): no GPU, known without importing torch,
    which takes seconds that a process on ONNX Runtime never needs to spend. True when only torch can tell."""
    if "torch" in sys.modules:
        return True
    try:
        return not version("torch").endswith("+cpu")
    except PackageNotFoundError:
        return True  # (import torch then says what is wrong)


def _normalise(x: Any) -> np.ndarray:
    arr = x if isinstance(x, np.ndarray) else x.detach().float().cpu().numpy()
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return (arr / np.maximum(norms, 1e-12)).astype(np.float32)


class _Tower:
    """One half of CLIP, loaded on first use; a failed load is remembered for a while, then retried. Once loaded,
    its objects are frozen out of the garbage collector's sight (``hub.heap.settle``): they live as long as the
    process."""

    def __init__(self, name: str, loader: Any) -> None:
        self._name = name
        self._loader = loader
        self._lock = threading.Lock()
        self._parts: Any = None
        self._error: str | None = None
        self._failed_at = 0.0

    @property
    def loaded(self) -> bool:
        return self._parts is not None

    @property
    def error(self) -> str | None:
        return self._error

    def get(self, wait: float | None = None) -> Any:
        """The loaded parts; loads them on first use. With ``wait``, give up (503) if a load takes longer."""
        if self._parts is not None:
            return self._parts
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            raise ModelUnavailable("the model is still loading; retry in a few seconds")
        try:
            if self._parts is not None:
                return self._parts
            if self._error and time.monotonic() - self._failed_at < RETRY_FAILED_LOAD_AFTER:
                raise ModelUnavailable(self._error)
            try:
                parts = self._loader()
                heap.settle(f"{self._name} model loaded")  # (before it is seen loaded: /ready then says settled)
                self._parts, self._error = parts, None
            except Exception as exc:  # noqa: BLE001 - any load failure becomes a readable 503
                self._error = str(exc).splitlines()[0][:1000] if str(exc) else type(exc).__name__
                self._failed_at = time.monotonic()
                raise ModelUnavailable(self._error) from None
            return self._parts
        finally:
            self._lock.release()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        return os.cpu_count() or 1


class Encoder:
    """L2-normalised FashionCLIP embeddings of prompts and product images.

    ``inference``: ``onnx`` runs both towers on ONNX Runtime, ``torch`` on torch, ``auto`` (the default) ONNX
    Runtime on CPU and torch on a GPU. ``threads``: ONNX Runtime's threads per tower (default: the cores this
    process may use). ``home``: where an export goes when the checkpoint's folder is read-only. ``int8``: ONNX
    Runtime runs weights quantized to int8 (faster, less exact: ``docs/benchmarks.md``; off by default).
    ``vision_nice``: the image tower's ONNX Runtime threads run at this nice value (``hub.search.priority``).
    """

    def __init__(self, name: str, device: str | None = None, inference: str = "auto", threads: int | None = None,
                 home: Path | None = None, int8: bool = False, vision_nice: int = 0) -> None:
        if inference not in ("auto", "onnx", "torch"):
            raise ValueError(f"inference must be auto, onnx or torch, not {inference!r}")
        if inference == "onnx" and device not in (None, "cpu"):
            raise ValueError(f"ONNX Runtime runs the model on the CPU here; with device {device!r} use torch "
                             "(or auto)")
        self.name = name
        self._device = device
        self._inference = inference
        self.threads = threads or available_cores()
        self._home = home
        self.int8 = int8
        self.nice = {"text": 0, "vision": vision_nice}
        self._export_places: list[Path] | None = None
        self._places_lock = threading.Lock()
        self.runtimes: dict[str, str] = {}  # tower → what runs it ("onnxruntime", "torch", or why torch)
        self._key: str | None = None
        self.text = _Tower("text", self._load_text)
        self.vision = _Tower("image", self._load_vision)
        self._pixels: Pixels | None = None
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.text_cache_hits = 0
        self.request_wait = 5.0  # a query never waits longer than this for a model that is loading

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = model_key(self.name)
        return self._key

    @property
    def device(self) -> str:
        if self._device is None:
            if not _torch_may_have_cuda():
                self._device = "cpu"
            else:
                import torch

                self._device = "cuda" if torch.cuda.is_available() else "cpu"
        return self._device

    def _explain(self, exc: Exception) -> ModelUnavailable:
        looks_like_path = self.name.startswith((".", "/", "~")) or os.sep + os.sep in self.name
        reason = "no such folder" if looks_like_path and not Path(self.name).exists() else (
            f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
        )
        return ModelUnavailable(
            f"cannot load model {self.name!r} ({reason}); "
            "set HUB_MODEL to a reachable Hugging Face id or a local checkpoint folder "
            "(`hub model download` fetches it ahead of time)"
        )

    @property
    def inference(self) -> str:
        """What runs the towers: ``onnx`` or ``torch`` (``auto`` resolved)."""
        if self._inference == "auto":
            return "onnx" if self.device == "cpu" else "torch"
        return self._inference

    def _torch_model(self, model_cls: str) -> Any:
        try:
            return _from_pretrained(_clip_class(model_cls), self.name).to(self.device).eval()
        except Exception as exc:
            raise self._explain(exc) from None

    def export_places(self) -> list[Path]:
        """Where this checkpoint's ONNX exports are cached, in order of preference (``hub.search.onnx``)."""
        with self._places_lock:  # (the two towers load in two threads: the checkpoint is digested once)
            if self._export_places is None:
                self._export_places = onnx.export_places(self.name, self._home)
            return self._export_places

    def _onnx_tower(self, which: str, model_cls: str, export: Any) -> tuple[onnx.OnnxTower | None, Any]:
        """The tower on ONNX Runtime (exported first if no cached export exists or the cached one cannot be
        opened; quantized to int8 from that export if asked), or None, with the torch model if it had to be
        loaded for the export."""
        model = None
        try:
            places = self.export_places()
            path = onnx.cached(places, f"{which}.onnx")
            if path is not None:
                try:
                    tower = onnx.OnnxTower(path, self.threads, self.nice[which])
                except Exception as exc:  # noqa: BLE001 - a damaged or unreadable export: made again below
                    log.warning(f"{which} model: the cached ONNX export cannot be used; exporting again",
                                extra={"path": str(path), "reason": f"{type(exc).__name__}: {exc}"[:300]})
                    path = None
            if path is None:
                model = self._torch_model(model_cls)
                if not Path(self.name).is_dir():  # a hub id's weights may have arrived only now: digest them
                    with self._places_lock:
                        self._export_places = None
                    places = self.export_places()
                path = onnx.export_into(places, f"{which}.onnx", lambda target: export(model, target))
                (path.parent / f"{which}-int8.onnx").unlink(missing_ok=True)  # made from the export it replaces
                tower = onnx.OnnxTower(path, self.threads, self.nice[which])
        except ModelUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - torch is the fallback; the reason is logged and reported
            self._fell_back(which, "torch (ONNX Runtime not used", exc)
            return None, model
        self.runtimes[which] = "onnxruntime"
        if self.int8:
            try:
                quantized = onnx.cached([path.parent], f"{which}-int8.onnx") or onnx.export_into(
                    [path.parent], f"{which}-int8.onnx", lambda target: onnx.quantize_int8(path, target))
                tower = onnx.OnnxTower(quantized, self.threads, self.nice[which])
                self.runtimes[which] = "onnxruntime int8"
            except Exception as exc:  # noqa: BLE001 - the float32 export runs it
                self._fell_back(which, "onnxruntime (int8 not used", exc)
        return tower, model

    def _fell_back(self, which: str, runtime: str, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        self.runtimes[which] = f"{runtime}: {reason})"
        log.warning(f"{which} model: {runtime})", extra={"reason": reason})

    def _preprocessor(self, class_name: str) -> Any:
        try:
            return _from_pretrained(_clip_class(class_name), self.name)
        except Exception as exc:
            raise self._explain(exc) from None

    def _load_model(self, which: str, model_cls: str, export: Any) -> Any:
        """The tower's model: on ONNX Runtime (``export(torch_model, target)`` makes the export when none is
        cached), or torch's."""
        model = None
        if self.inference == "onnx":
            tower, model = self._onnx_tower(which, model_cls, export)
            if tower is not None:
                log.info(f"{which} model loaded", extra={"model": self.name, "runtime": self.runtimes[which],
                                                         "threads": self.threads, "export": str(tower.path)})
                return tower
        else:
            self.runtimes[which] = "torch"
        if model is None:
            model = self._torch_model(model_cls)
        log.info(f"{which} model loaded", extra={"model": self.name, "device": self.device, "runtime": "torch"})
        return model

    def _load_tokens(self) -> Tokens:
        """How a prompt becomes the tower's input: the checkpoint's ``tokenizer.json`` read directly when it is
        CLIP's, else transformers' tokenizer (``hub.search.tokens``)."""
        fast = fast_tokens(onnx.checkpoint_folder(self.name), MAX_TEXT_TOKENS)
        return fast if fast is not None else TransformersTokens(self._preprocessor("CLIPTokenizer"), MAX_TEXT_TOKENS)

    def _load_text(self) -> tuple[Tokens, Any]:
        tokens = self._load_tokens()
        return tokens, self._load_model("text", "CLIPTextModelWithProjection", onnx.export_text)

    def _load_pixels(self) -> Pixels:
        """How an image becomes the tower's input: read from the checkpoint's files when they are here, else from
        transformers' processor (``hub.search.pixels``)."""
        settings = processor_settings(onnx.checkpoint_folder(self.name))
        fast = clip_pixels(settings) if settings is not None else None
        if fast is not None:
            return fast
        processor = self._preprocessor("CLIPImageProcessorPil")
        try:
            return clip_pixels(processor.to_dict()) or ProcessorPixels(processor)
        except Exception as exc:
            raise self._explain(exc) from None

    def _load_vision(self) -> tuple[Pixels, Any]:
        pixels = self._load_pixels()
        model = self._load_model("vision", "CLIPVisionModelWithProjection",
                                 lambda m, target: onnx.export_vision(m, pixels.shape, target))
        self._pixels = pixels  # read once, not for every image
        return pixels, model

    @staticmethod
    def normalise_prompt(prompt: str) -> str:
        return " ".join(prompt.split()).lower()

    def tokenize(self, texts: list[str], tensors: str = "pt") -> Any:
        """Token ids padded to the longest text of the batch only: short prompts stay short (and fast)."""
        tokens, _ = self.text.get(wait=self.request_wait)
        return tokens(texts, tensors)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts`` (padded to the longest, never to 77 tokens), one row each."""
        _, model = self.text.get(wait=self.request_wait)
        with forward_pass("text", len(texts)):
            if isinstance(model, onnx.OnnxTower):
                batch = self.tokenize(texts, "np")
                return _normalise(model.run({"input_ids": batch["input_ids"].astype(np.int64),
                                             "attention_mask": batch["attention_mask"].astype(np.int64)}))
            import torch

            batch = self.tokenize(texts)
            with torch.inference_mode():
                out = model(**{k: v.to(self.device) for k, v in batch.items()})
            return _normalise(out.text_embeds)

    def cached_prompt(self, prompt: str) -> np.ndarray | None:
        """The embedding of a prompt asked before (LRU), or None."""
        key = self.normalise_prompt(prompt)
        with self._cache_lock:
            hit = self._text_cache.get(key)
            if hit is not None:
                self._text_cache.move_to_end(key)
                self.text_cache_hits += 1
            return hit

    def encode_prompts(self, prompts: list[str]) -> list[np.ndarray]:
        """Embeddings of many prompts: cached ones from the LRU cache, the rest in one forward pass."""
        keys = [self.normalise_prompt(p) for p in prompts]
        found = {key: hit for key in dict.fromkeys(keys) if (hit := self.cached_prompt(key)) is not None}
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        if missing:
            vectors = self.encode_text(missing)
            with self._cache_lock:
                for key, vector in zip(missing, vectors, strict=True):
                    self._text_cache[key] = vector
                    found[key] = vector
                while len(self._text_cache) > TEXT_CACHE_SIZE:
                    self._text_cache.popitem(last=False)
        return [found[key] for key in keys]

    def encode_prompt(self, prompt: str) -> np.ndarray:
        """One prompt's embedding, from an LRU cache when it was asked before."""
        return self.encode_prompts([prompt])[0]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One image as the model's pixel array, exactly as the checkpoint's CLIP image processor specifies it
        (``hub.search.pixels``: the same steps in Pillow and NumPy for CLIP's usual settings)."""
        self.vision.get()
        assert self._pixels is not None  # set by the vision load that get() just ensured
        return self._pixels(image)

    def preprocess_reference(self, image: Image.Image) -> np.ndarray:
        """The same through transformers' own processor (slower); the fast path is tested against it."""
        return ProcessorPixels(self._preprocessor("CLIPImageProcessorPil"))(image)

    def encode_pixels(self, pixels: list[np.ndarray]) -> np.ndarray:
        """One forward pass over a batch of preprocessed images."""
        _, model = self.vision.get()
        with forward_pass("image", len(pixels)):
            if isinstance(model, onnx.OnnxTower):
                return _normalise(model.run({"pixel_values": np.stack(pixels).astype(np.float32, copy=False)}))
            import torch

            tensor = torch.from_numpy(np.stack(pixels)).to(self.device)
            with torch.inference_mode():
                out = model(pixel_values=tensor)
            return _normalise(out.image_embeds)

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.encode_pixels([self.preprocess(img) for img in images])


def download(name: str) -> str:
    """Fetch a checkpoint's files into the Hugging Face cache (``hub model download``), with progress bars."""
    if Path(name).is_dir():
        return str(Path(name).resolve())
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            name,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
        )
    except Exception as exc:  # noqa: BLE001 - reported as one line with what to do
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise SystemExit(f"hub: cannot download {name!r}: {type(exc).__name__}: {reason}") from None
