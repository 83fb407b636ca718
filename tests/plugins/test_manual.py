"""The manual plugin's readers: CSV dialects, JSON arrays and JSON Lines with line numbers, column aliases,
and files that must stay inside their ZIP or folder."""

from __future__ import annotations

import io
import itertools
import json
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


def test_manifests_are_streamed_within_their_limits(tmp_path):
    from hub.connectors import ImportTooLarge
    from hub.plugins.manual.manifest import MAX_ROW_CHARS, manifest_rows

    def rows_of(name, data, size=None, **options):
        return list(manifest_rows(name, size, lambda: io.BytesIO(data), ImportOptions(**options)))

    body = b"image_url\n" + b"https://cdn.example/a.jpg\n" * 100
    assert len(rows_of("m.csv", body)) == 100
    # the bytes are counted as they are read, whatever size the file claimed
    with pytest.raises(ImportTooLarge, match="manifest limit of 2000"):
        rows_of("m.csv", body, size=10, max_manifest_bytes=2000)
    with pytest.raises(ImportTooLarge, match="manifest limit"):
        rows_of("m.csv", body, size=len(body), max_manifest_bytes=2000)  # refused before reading
    with pytest.raises(ImportTooLarge, match="more than 99 rows"):
        rows_of("m.csv", body, max_rows=99)
    assert len(rows_of("m.csv", body, max_rows=100)) == 100

    # a row over MAX_ROW_CHARS is a row error; the next row starts on its own line
    long = b"image_url,name\nhttps://cdn.example/a.jpg,A\nhttps://cdn.example/b.jpg," + b"x" * (MAX_ROW_CHARS + 10) + \
        b"\nhttps://cdn.example/c.jpg,C\n"
    got = rows_of("m.csv", long)
    assert [line for line, _ in got] == [2, 3, 4]
    assert "longer than" in got[1][1] and got[2][1] == {"image_url": "https://cdn.example/c.jpg", "name": "C"}

    # a JSON array is decoded item by item across the reads of the stream, line numbers kept
    items = [{"url": f"https://cdn.example/{n}.jpg", "name": "n" * (n * 997 % 70_000)} for n in range(40)]
    text = "[\n" + ",\n".join(json.dumps(i) for i in items[:20]) + ", 12345678,\n\n" + \
        ",\n".join(json.dumps(i) for i in items[20:]) + "\n]"
    got = rows_of("m.json", text.encode())
    assert len(got) == 41 and got[20] == (21, "each item must be a JSON object")  # beside item 19
    assert [line for line, _ in got] == [*range(2, 22), 21, *range(23, 43)]
    assert all(fields["image_url"] == f"https://cdn.example/{n}.jpg"
               for n, (_, fields) in enumerate(got[:20] + got[21:]))


def test_read_keeps_to_the_row_limit_and_count_takes_the_options(tmp_path):
    from hub.connectors import ImportTooLarge

    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.csv", "file,name\n" + "".join(f"{n}.jpg,N{n}\n" for n in range(3)))
        for n in range(3):
            zf.writestr(f"{n}.jpg", photo(n))
    assert ZipImporter().count(path) == 3  # an older caller without options: the defaults
    assert ZipImporter().count(path, ImportOptions(max_rows=3)) == 3
    with pytest.raises(ImportTooLarge, match="more than 2 rows"):
        ZipImporter().count(path, ImportOptions(max_rows=2))
    reader = ZipImporter().read(path, ImportOptions(max_rows=2))
    assert [r.name for r in itertools.islice(reader, 2)] == ["N0", "N1"]
    with pytest.raises(ImportTooLarge):
        next(reader)
