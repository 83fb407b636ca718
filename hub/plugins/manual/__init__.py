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

from hub.connectors import ImportOptions, ImportRow, RowError
from hub.hookspecs import hookimpl
from hub.plugins.manual.files import MANIFEST_SUFFIXES, DirFiles, Files, FileTooLarge, ZipFiles
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
    return to_row(line, {"name": PurePosixPath(name).stem, **fields}, data=data, item=name)


class _ArchiveImporter:
    """Images in a container (ZIP or folder), described by a manifest inside it or else by their file names."""

    def _files(self, path: Path) -> Files:
        raise NotImplementedError

    def count(self, path: Path) -> int | None:
        files = self._files(path)
        try:
            manifest = files.manifest()
            if manifest is None:
                return len(files.images())
            return sum(1 for _ in manifest_rows(manifest, files.read(manifest, 2**31)))
        finally:
            files.close()

    def read(self, path: Path, options: ImportOptions) -> Iterator[ImportRow | RowError]:
        files = self._files(path)
        try:
            manifest = files.manifest()
            if manifest is None:
                for name in files.images():
                    yield _file_row(files, None, {"file": name}, options)
                return
            for line, fields in manifest_rows(manifest, files.read(manifest, 2**31)):
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

    def count(self, path: Path) -> int | None:
        return sum(1 for _ in manifest_rows(path.name, path.read_bytes()))

    def read(self, path: Path, options: ImportOptions) -> Iterator[ImportRow | RowError]:
        files = DirFiles(path.parent) if options.local_files else None
        for line, fields in manifest_rows(path.name, path.read_bytes()):
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

