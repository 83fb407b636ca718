"""The manual plugin's readers: CSV dialects, JSON arrays and JSON Lines with line numbers, column aliases,
and files that must stay inside their ZIP or folder."""

from __future__ import annotations

import zipfile

import pytest

from hub.connectors import ImportFileError, ImportOptions, ImportRow, RowError
from hub.plugins.manual import FolderImporter, ManifestImporter, ZipImporter
from tests.images import photo


def rows(importer, path, **options):
    return list(importer.read(path, ImportOptions(**options)))


def test_csv_dialects_and_column_aliases(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("Image URL;Title;Product Type;SKU;Age Group\n"
                    "https://cdn.example/a.jpg;Dress;Dresses;S-1;Kids (3-12)\n\n"
                    "https://cdn.example/b.jpg;Coat;;;\n")
    got = rows(ManifestImporter(), path)
    assert ManifestImporter().count(path) == 2
    assert got[0] == ImportRow(line=2, image_url="https://cdn.example/a.jpg", name="Dress", category="Dresses",
                               product_id="S-1", age_group="Kids (3-12)")
    assert got[1].line == 4 and got[1].name == "Coat" and got[1].category is None


def test_json_lines_report_their_line(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"url": "https://cdn.example/a.jpg"}\n\n{broken\n[1]\n')
    got = rows(ManifestImporter(), path)
    assert isinstance(got[0], ImportRow) and got[0].line == 1
    assert [(r.line, type(r)) for r in got[1:]] == [(3, RowError), (4, RowError)]


def test_folder_files_cannot_escape(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(photo(1))
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "ok.jpg").write_bytes(photo(2))
    (shop / "manifest.csv").write_text("file,name\nok.jpg,Fine\n../secret.jpg,Escape\n/etc/passwd,Abs\n")
    got = rows(FolderImporter(), shop, local_files=True)
    assert isinstance(got[0], ImportRow) and got[0].data == photo(2)
    assert [type(r) for r in got[1:]] == [RowError, RowError]
    # a manifest uploaded alone never reads files beside it
    alone = rows(ManifestImporter(), shop / "manifest.csv", local_files=False)
    assert all(isinstance(r, RowError) and "ZIP" in r.error for r in alone)


def test_zip_limits_and_several_manifests(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.jpg", b"\0" * 5000)
        zf.writestr("small.jpg", photo(3))
    got = rows(ZipImporter(), path, max_file_bytes=4000)
    assert isinstance(got[0], RowError) and "larger than 4000" in got[0].error
    assert isinstance(got[1], ImportRow) and got[1].name == "small"
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("one.csv", "file\nsmall.jpg\n")
        zf.writestr("two.json", "[]")
    with pytest.raises(ImportFileError, match="several manifests"):
        ZipImporter().count(path)
