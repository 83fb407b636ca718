"""Where a bulk import's image files live: inside a ZIP archive or in a folder (never outside it)."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

from hub.connectors import ImportFileError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MANIFEST_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson")


class FileTooLarge(Exception):
    pass


def _visible(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


class Files:
    """The files of an import, by relative POSIX name."""

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str, max_bytes: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def images(self) -> list[str]:
        return sorted(n for n in self.names() if _visible(n) and PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES)

    def manifest(self) -> str | None:
        """``manifest.csv``/``.json`` at the top, else the only CSV/JSON at the top; None if there is none."""
        top = [n for n in self.names() if "/" not in n.strip("/") and _visible(n) and n.lower().endswith(MANIFEST_SUFFIXES)]
        named = [n for n in top if PurePosixPath(n).stem.lower() == "manifest"]
        if named:
            return sorted(named)[0]
        if len(top) > 1:
            raise ImportFileError(f"several manifests at the top ({', '.join(sorted(top))}); name one manifest.csv")
        return top[0] if top else None


class ZipFiles(Files):
    def __init__(self, path: Path) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ImportFileError(f"not a readable ZIP archive: {exc}") from None
        self._infos = {i.filename: i for i in self.zip.infolist() if not i.is_dir()}

    def names(self) -> list[str]:
        return list(self._infos)

    def read(self, name: str, max_bytes: int) -> bytes:
        info = self._infos.get(name) or self._infos.get(name.lstrip("./"))
        if info is None:
            raise FileNotFoundError(name)
        if info.file_size > max_bytes:
            raise FileTooLarge(name)
        with self.zip.open(info) as handle:
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise FileTooLarge(name)
        return data

    def close(self) -> None:
        self.zip.close()


class DirFiles(Files):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def names(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]

    def read(self, name: str, max_bytes: int) -> bytes:
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise FileNotFoundError(f"{name} is outside {self.root}")
        if path.stat().st_size > max_bytes:
            raise FileTooLarge(name)
        return path.read_bytes()
