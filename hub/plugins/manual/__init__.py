"""The manual connector: the shop's own images — single uploads (``POST /api/v1/images``) and bulk imports.

Bulk imports come as a ZIP of images (with an optional ``manifest.csv``/``manifest.json``), a folder of the
same (``hub import`` only), or a CSV/JSON list of image URLs. This plugin only reads those files into import
rows; the core stores them. It is registered through the ``hub`` entry-point group like any other plugin.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import ClassVar

from hub.connectors import ImportOptions, ImportRow, ImportTooLarge, RowError
from hub.hookspecs import hookimpl
from hub.plugins.manual.files import (
    MANIFEST_SUFFIXES,
    DirFiles,
    Files,
    FileTooLarge,
    FileUnreadable,
    ZipFiles,
)
from hub.plugins.manual.manifest import manifest_rows, to_row, url_only


def _file_row(files: Files, line: int | None, fields: dict[str, str], options: ImportOptions) -> ImportRow | RowError:
    name = fields.get("file")
    if not name:
        return url_only(line, fields)
    try:
        data = files.read(name, options.max_file_bytes)
    except FileNotFoundError:
        return RowError(line, f"file {name!r} is not in the import", item=name)
    except FileTooLarge:
        return RowError(line, f"file {name!r} is larger than {options.max_file_bytes} bytes", item=name)
    except FileUnreadable as exc:
        return RowError(line, f"file {name!r} cannot be read: {exc}"[:500], item=name)
    return to_row(line, {"name": PurePosixPath(name).stem, **fields}, data=data, item=name)


def _rows_of(files: Files, manifest: str, options: ImportOptions) -> Iterator[tuple[int, dict[str, str] | str]]:
    """The manifest's rows, streamed from the file within the options' limits."""
    return manifest_rows(manifest, files.size(manifest), lambda: files.open(manifest), options)


def _images(files: Files, options: ImportOptions) -> list[str]:
    """The image files of an import without a manifest (one row each)."""
    names = files.images()
    if len(names) > options.max_rows:
        raise ImportTooLarge(f"the import has {len(names)} images, more than the {options.max_rows} "
                             "one import may have")
    return names


class _ArchiveImporter:
    """Images in a container (ZIP or folder), described by a manifest inside it or else by their file names."""

    def _files(self, path: Path) -> Files:
        raise NotImplementedError

    def count(self, path: Path, options: ImportOptions | None = None) -> int | None:
        options = options or ImportOptions()
        files = self._files(path)
        try:
            manifest = files.manifest()
            if manifest is None:
                return len(_images(files, options))
            return sum(1 for _ in _rows_of(files, manifest, options))
        finally:
            files.close()

    def read(self, path: Path, options: ImportOptions) -> Iterator[ImportRow | RowError]:
        files = self._files(path)
        try:
            manifest = files.manifest()
            if manifest is None:
                for name in _images(files, options):
                    yield _file_row(files, None, {"file": name}, options)
                return
            for line, fields in _rows_of(files, manifest, options):
                yield RowError(line, fields) if isinstance(fields, str) else _file_row(files, line, fields, options)
        finally:
            files.close()


class ZipImporter(_ArchiveImporter):
    name: ClassVar[str] = "zip"

    def accepts(self, path: Path) -> bool:
        return path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))

    def _files(self, path: Path) -> Files:
        return ZipFiles(path)


class FolderImporter(_ArchiveImporter):
    name: ClassVar[str] = "folder"

    def accepts(self, path: Path) -> bool:
        return path.is_dir()

    def _files(self, path: Path) -> Files:
        return DirFiles(path)


class ManifestImporter:
    """A CSV or JSON manifest on its own: rows with image URLs (and, from ``hub import``, files beside it)."""

    name: ClassVar[str] = "manifest"

    def accepts(self, path: Path) -> bool:
        return path.is_file() and path.name.lower().endswith(MANIFEST_SUFFIXES)

    def _rows(self, path: Path, options: ImportOptions) -> Iterator[tuple[int, dict[str, str] | str]]:
        return manifest_rows(path.name, path.stat().st_size, lambda: path.open("rb"), options)

    def count(self, path: Path, options: ImportOptions | None = None) -> int | None:
        return sum(1 for _ in self._rows(path, options or ImportOptions()))

    def read(self, path: Path, options: ImportOptions) -> Iterator[ImportRow | RowError]:
        files = DirFiles(path.parent) if options.local_files else None
        for line, fields in self._rows(path, options):
            if isinstance(fields, str):
                yield RowError(line, fields)
            elif files is not None and fields.get("file"):
                yield _file_row(files, line, fields, options)
            else:
                yield url_only(line, fields)


@hookimpl
def hub_importers() -> list[object]:
    """ZIP archives, folders, and CSV/JSON manifests."""
    return [ZipImporter(), FolderImporter(), ManifestImporter()]

