"""Where a bulk import's image files live: inside a ZIP archive or in a folder (never outside it)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from hub.connectors import ImportFileError, ImportTooLarge

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MANIFEST_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson")


class FileTooLarge(Exception):
    pass


class FileUnreadable(Exception):
    """A file of the import that is there but cannot be read (encrypted or damaged in the ZIP, no permission)."""


# what zipfile raises for a member it cannot give: damaged data, a bad CRC, encryption, an unknown compression
ZIP_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, ValueError, OSError)


def _visible(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


class Files:
    """The files of an import, by relative POSIX name."""

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str, max_bytes: int) -> bytes:
        raise NotImplementedError

    def size(self, name: str) -> int:
        """How many bytes the file says it holds (a ZIP member's declared size)."""
        raise NotImplementedError

    def open(self, name: str) -> IO[bytes]:
        """The file as a binary stream, for reading a manifest bit by bit."""
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
            return min(named)
        if len(top) > 1:
            raise ImportFileError(f"several manifests at the top ({', '.join(sorted(top))}); name one manifest.csv")
        return top[0] if top else None


# zipfile keeps ~760 bytes of Python objects per entry of the central directory it reads when it opens an
# archive, and it reads the directory by the byte size the end record declares (not by its entry count): both
# are checked, before anything is parsed. 8 MiB of directory is at most ~180,000 entries (~140 MB once parsed).
MAX_ZIP_ENTRIES = 200_000
MAX_ZIP_DIRECTORY_BYTES = 8 * 1024 * 1024


def zip_directory(path: Path) -> tuple[int, int] | None:
    """(entries, central directory bytes) as the archive's end record declares them (ZIP64 included)."""
    with path.open("rb") as handle:
        end = zipfile._EndRecData(handle)  # noqa: SLF001 - the stdlib's own end-record reader
    if end is None:
        return None
    return int(end[zipfile._ECD_ENTRIES_TOTAL]), int(end[zipfile._ECD_SIZE])  # noqa: SLF001


class ZipFiles(Files):
    def __init__(self, path: Path) -> None:
        try:
            directory = zip_directory(path)
        except OSError as exc:
            raise ImportFileError(f"not a readable ZIP archive: {exc}") from None
        if directory is not None:
            entries, size = directory
            if entries > MAX_ZIP_ENTRIES:
                raise ImportTooLarge(f"the ZIP holds {entries} entries; an import takes at most {MAX_ZIP_ENTRIES}")
            if size > MAX_ZIP_DIRECTORY_BYTES:
                raise ImportTooLarge(f"the ZIP's directory is {size} bytes; an import takes at most "
                                     f"{MAX_ZIP_DIRECTORY_BYTES} (about {MAX_ZIP_ENTRIES} files)")
        try:
            self.zip = zipfile.ZipFile(path)
        except ZIP_MEMBER_ERRORS as exc:
            raise ImportFileError(f"not a readable ZIP archive: {exc}") from None
        self._infos = {i.filename: i for i in self.zip.infolist() if not i.is_dir()}

    def names(self) -> list[str]:
        return list(self._infos)

    def _info(self, name: str) -> zipfile.ZipInfo:
        info = self._infos.get(name) or self._infos.get(name.lstrip("./"))
        if info is None:
            raise FileNotFoundError(name)
        return info

    def read(self, name: str, max_bytes: int) -> bytes:
        info = self._info(name)
        if info.file_size > max_bytes:  # zipfile never gives more than the declared size
            raise FileTooLarge(name)
        try:
            with self.zip.open(info) as handle:
                data = handle.read(max_bytes + 1)
        except ZIP_MEMBER_ERRORS as exc:
            raise FileUnreadable(f"{type(exc).__name__}: {exc}") from None
        if len(data) > max_bytes:
            raise FileTooLarge(name)
        return data

    def size(self, name: str) -> int:
        return self._info(name).file_size

    def open(self, name: str) -> IO[bytes]:
        try:
            return self.zip.open(self._info(name))
        except ZIP_MEMBER_ERRORS as exc:
            raise ImportFileError(f"cannot read {name} in the ZIP: {exc}") from None

    def close(self) -> None:
        self.zip.close()


class DirFiles(Files):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def names(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise FileNotFoundError(f"{name} is outside {self.root}")
        return path

    def read(self, name: str, max_bytes: int) -> bytes:
        path = self._path(name)
        try:
            if path.stat().st_size > max_bytes:
                raise FileTooLarge(name)
            with path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise FileUnreadable(exc.strerror or str(exc)) from None
        if len(data) > max_bytes:  # it grew since
            raise FileTooLarge(name)
        return data

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def open(self, name: str) -> IO[bytes]:
        return self._path(name).open("rb")
