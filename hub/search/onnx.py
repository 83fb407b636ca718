"""CLIP's towers on ONNX Runtime: exported once from the loaded torch tower, cached next to the checkpoint.

On this kind of CPU ONNX Runtime runs the same weights faster than torch (``bench/inference.py``,
``docs/benchmarks.md``). The export is made from the torch tower the hub loads anyway (a Hugging Face id or a
local folder, the same loading path), so the two never disagree about the weights; torch stays as the reference
(the parity tests compare them) and as the fallback when an export or a session cannot be made.

An export is cached in ``onnx/<digest>/`` inside the checkpoint's folder (a local folder, or the Hugging Face
cache's snapshot of that revision), or under ``HUB_HOME/onnx/`` when that folder is read-only. ``<digest>`` covers
the checkpoint's files, the export's format and the versions of torch, transformers and ONNX Runtime: a changed
checkpoint, or an upgrade of what makes the export, gets a new one.
Two processes exporting at once each write their own temporary file and the rename is atomic.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from hub.search.priority import created_at

log = logging.getLogger("hub.model")

EXPORT_FORMAT = 1  # bump when what an export holds changes (inputs, outputs, opset)
OPSET = 17
STALE_TEMPORARY_SECONDS = 24 * 3600
_EXPORT_LOCK = threading.Lock()


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
    """A short digest of the checkpoint's files and of what makes an export of them (the export's format; torch,
    transformers and ONNX Runtime's versions). A file counts by its name, size and modification time and its
    first and last MiB; in the Hugging Face cache, by the name of the blob it links to (a hash of its content)."""
    makers = [version(package) for package in ("torch", "transformers", "onnxruntime")]
    digest = hashlib.sha256(f"{EXPORT_FORMAT}:{OPSET}:{':'.join(makers)}".encode())
    for file in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        if file.is_symlink():
            digest.update(Path(os.readlink(file)).name.encode())
            continue
        with file.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            fh.seek(max(0, stat.st_size - (1 << 20)))
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
    log.warning("no writable place for the ONNX export", extra={"tried": "; ".join(errors) or "nowhere"})
    raise OSError("no writable place for the ONNX export (the log says where it tried)")


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, for every thread, meanwhile)."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


@contextmanager
def _written(target: Path) -> Iterator[str]:
    """A temporary file next to ``target`` to write, renamed to it when done (a concurrent reader never sees half
    a file; two processes writing at once both succeed), readable as the umask allows (``mkstemp`` makes it
    owner-only: a service running as another user than ``hub model prepare`` could not read it). Temporary files
    that a killed process left behind are removed after a day."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(".*.onnx"):
        with suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _export(module: Any, args: tuple[Any, ...], names: list[str], axes: dict[str, dict[int, str]],
            target: Path) -> None:
    """Trace ``module`` into ``target``. One export at a time in a process: torch's exporter keeps global state
    (the text and image towers load in two threads)."""
    import torch

    with _EXPORT_LOCK, _written(target) as tmp, warnings.catch_warnings(), torch.inference_mode(False), \
            torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(module, args, tmp, input_names=names, output_names=["embeds"],
                          dynamic_axes={**axes, "embeds": {0: "batch"}}, opset_version=OPSET, dynamo=False)


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic quantization of ``source``'s weights to int8 (activations quantized as they run)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _written(target) as tmp:
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8)


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

    def __init__(self, path: Path, threads: int, nice: int = 0) -> None:
        """``nice``: the session's threads start at this nice value (``hub.search.priority``)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # like torch's OMP_WAIT_POLICY=PASSIVE: idle threads must not spin on the cores the rest of the hub needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = created_at(nice, lambda: ort.InferenceSession(str(path), options,
                                                                     providers=["CPUExecutionProvider"]))

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = self.session.run(["embeds"], feeds)[0]
        return np.asarray(out, dtype=np.float32)
