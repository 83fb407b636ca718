"""CLIP's towers on ONNX Runtime: exported once from the loaded torch tower, cached next to the checkpoint.

On this kind of CPU ONNX Runtime runs the same weights faster than torch (``bench/inference.py``,
``docs/benchmarks.md``). The export is made from the torch tower the hub loads anyway (a Hugging Face id or a
local folder, the same loading path), so the two never disagree about the weights; torch stays as the reference
(the parity tests compare them) and as the fallback when an export or a session cannot be made.

An export is cached in ``onnx/<digest>/`` inside the checkpoint's folder (a local folder, or the Hugging Face
cache's snapshot of that revision), or under ``HUB_HOME/onnx/`` when that folder is read-only. ``<digest>`` covers
the checkpoint's files (as ``model_key`` reads them), the export's format and torch's version: a changed
checkpoint gets a new export.
Two processes exporting at once each write their own temporary file and the rename is atomic.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("hub.model")

EXPORT_FORMAT = 1  # bump when what an export holds changes (inputs, outputs, opset)
OPSET = 17


def checkpoint_folder(name: str) -> Path | None:
    """The folder holding the checkpoint's files: the local folder, or the cached snapshot of a hub id."""
    if Path(name).is_dir():
        return Path(name).resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or not a hub id): no folder to write next to
        return None


def export_digest(folder: Path) -> str:
    """A short digest of the checkpoint's files (names, sizes, their first and last MiB), the export format and
    torch's version (the exporter)."""
    digest = hashlib.sha256(f"{EXPORT_FORMAT}:{OPSET}:{version('torch')}".encode())
    for file in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        size = file.stat().st_size
        digest.update(file.name.encode() + b":" + str(size).encode())
        with file.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:16]


def export_places(name: str, home: Path | None) -> list[Path]:
    """Where exports of this checkpoint may be cached, in order of preference: next to it, then in ``home``."""
    folder = checkpoint_folder(name)
    if folder is None:
        return []
    digest = export_digest(folder)
    places = [folder / "onnx" / digest]
    if home is not None:
        places.append(Path(home).resolve() / "onnx" / f"{folder.name}-{digest}")
    return places


def cached(places: list[Path], filename: str) -> Path | None:
    return next((place / filename for place in places if (place / filename).is_file()), None)


def export_into(places: list[Path], filename: str, export: Callable[[Path], None]) -> Path:
    """A new export (``export(path)``) in the first of ``places`` that can be written."""
    errors = []
    for place in places:
        try:
            export(place / filename)
        except OSError as exc:
            errors.append(f"{place}: {exc.strerror or exc}")
            continue
        log.info("model exported to ONNX", extra={"path": str(place / filename)})
        return place / filename
    raise OSError("no writable place for the ONNX export" + (f" ({'; '.join(errors)})" if errors else ""))


def _export(module: Any, args: tuple[Any, ...], names: list[str], axes: dict[str, dict[int, str]],
            target: Path) -> None:
    """Trace ``module`` into ``target`` (a temporary file first, then renamed: a concurrent reader never sees
    half a file, and two processes exporting at once both succeed)."""
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(module, args, tmp, input_names=names, output_names=["embeds"],
                              dynamic_axes={**axes, "embeds": {0: "batch"}}, opset_version=OPSET, dynamo=False)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic quantization of ``source``'s weights to int8 (activations quantized as they run)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _embeds(model: Any, output: str) -> Any:
    """The tower as a module returning only its projected embeddings (what the export traces)."""
    import torch

    class Embeds(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            names = ("input_ids", "attention_mask") if output == "text_embeds" else ("pixel_values",)
            return getattr(self.model(**dict(zip(names, args, strict=True))), output)

    return Embeds().eval()


def export_text(model: Any, target: Path) -> None:
    """The text tower, for any batch size and any number of tokens (prompts are never padded to 77)."""
    import torch

    ids = torch.ones((2, 7), dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    _export(_embeds(model, "text_embeds"), (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], axes,
            target)


def export_vision(model: Any, side: tuple[int, int], target: Path) -> None:
    """The image tower, for any batch size of ``side``-sized (height, width) pixel arrays."""
    import torch

    pixels = torch.zeros((2, 3, *side), dtype=torch.float32)
    _export(_embeds(model, "image_embeds"), (pixels,), ["pixel_values"], {"pixel_values": {0: "batch"}}, target)


class OnnxTower:
    """One exported tower in an ONNX Runtime session (its ``run`` releases the GIL)."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # like torch's OMP_WAIT_POLICY=PASSIVE: idle threads must not spin on the cores the rest of the hub needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = self.session.run(["embeds"], feeds)[0]
        return np.asarray(out, dtype=np.float32)
