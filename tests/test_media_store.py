"""The media store's contract, the same on both kinds: a folder (the embedded default) and an S3-compatible
bucket (moto's server, started by the test run). Names stay inside the store, reads stay within their limit,
and a bucket that cannot be reached is ``Unavailable`` (503), never a stack trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.domain.media import MediaStore, check_image
from hub.errors import TooLarge, Unavailable
from hub.settings import SettingsError, load_settings
from tests.conftest import bucket_names
from tests.images import photo


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path) -> MediaStore:
    extra = request.getfixturevalue("s3_media") if request.param == "s3" else {}
    settings = load_settings(home=tmp_path / "home", max_upload_bytes=64 * 1024, **extra)
    media = MediaStore.for_settings(settings)
    assert media.kind == request.param
    return media


async def test_objects_are_written_read_aged_and_deleted(store):
    checked = check_image(photo(1), max_bytes=10**7, max_pixels=10**8)
    name = await store.save(7, checked)
    assert name.startswith(f"7/{checked.content_hash[:2]}/{checked.content_hash}-") and name.endswith(".jpg")
    assert await store.save(7, checked) != name  # the same bytes again: an object of its own
    assert await store.read(name) == checked.data
    assert 0 <= await store.age(name) < 60
    kept = await store.keep(7, 99, checked)
    assert kept.startswith("7/kept/99-") and kept != await store.keep(7, 99, checked)  # never shared
    await store.write("7/thumbs/1-320.jpg", b"thumb")
    await store.delete(name)
    await store.delete(name)  # (gone already: nothing to do)
    with pytest.raises(FileNotFoundError):
        await store.read(name)
    assert await store.age(name) is None
    await store.drop_thumbnails(7, [1])
    with pytest.raises(FileNotFoundError):
        await store.read("7/thumbs/1-320.jpg")
    assert await store.check() == "ok"


async def test_a_shop_is_deleted_whole_and_alone(store):
    for shop in (1, 2):
        for n in range(3):
            await store.write(f"{shop}/ab/{n}.jpg", b"x")
    await store.write("1/kept/5-a.jpg", b"x")
    await store.delete_shop(1)
    for n in range(3):
        with pytest.raises(FileNotFoundError):
            await store.read(f"1/ab/{n}.jpg")
        assert await store.read(f"2/ab/{n}.jpg") == b"x"
    with pytest.raises(FileNotFoundError):
        await store.read("1/kept/5-a.jpg")


async def test_names_stay_inside_the_store(store):
    for name in ("../outside.jpg", "/etc/passwd", "1/../../x", "1//x", "1/./x", "1\\..\\x"):
        for call in (store.write(name, b"x"), store.read(name), store.delete(name), store.age(name)):
            with pytest.raises(ValueError):
                await call
        with pytest.raises(ValueError):
            async with store.local_file(name, 100):
                pass


async def test_reads_stay_within_their_limit(store):
    await store.write("1/big.bin", b"x" * (64 * 1024 + 1))
    with pytest.raises(TooLarge):
        await store.read("1/big.bin")


async def test_import_files_go_in_and_come_back_out(store, tmp_path):
    upload = tmp_path / "upload.csv"
    upload.write_bytes(b"image_url\nhttps://example.com/a.jpg\n" * 1000)
    if store.kind == "folder":  # (the folder's import files are written in place; a bucket's are uploaded)
        target = store.path("imports/a.csv")
        target.parent.mkdir(parents=True)
        upload = upload.rename(target)
    await store.put_file("imports/a.csv", upload)
    async with store.local_file("imports/a.csv", 10**6) as local:
        assert local.read_bytes() == b"image_url\nhttps://example.com/a.jpg\n" * 1000
    if store.kind == "s3":
        assert not local.exists() and not upload.exists()  # the download and the upload's copy are gone
        with pytest.raises(TooLarge):
            async with store.local_file("imports/a.csv", 100):
                pass
    await store.delete("imports/a.csv")
    with pytest.raises(FileNotFoundError):
        async with store.local_file("imports/a.csv", 10**6):
            pass


async def test_the_bucket_holds_what_the_store_wrote(s3_media, s3_service, tmp_path):
    media = MediaStore.for_settings(load_settings(home=tmp_path, **s3_media))
    await media.write("3/ab/c.jpg", b"x")
    assert bucket_names(s3_service.url, s3_media["media_url"]) == ["3/ab/c.jpg"]  # under the prefix, by name
    assert not (tmp_path / "media").exists()  # nothing written to the local folder


async def test_an_unreachable_or_missing_bucket_is_unavailable(s3_media, tmp_path):
    from tests.services import free_port

    down = MediaStore.for_settings(load_settings(home=tmp_path, **(s3_media | {
        "s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})))
    with pytest.raises(Unavailable):
        await down.write("1/a.jpg", b"x")
    with pytest.raises(Unavailable):
        await down.read("1/a.jpg")
    assert (await down.check()).startswith("unreachable")
    missing = MediaStore.for_settings(load_settings(home=tmp_path, **(s3_media | {
        "media_url": "s3://no-such-bucket-here"})))
    with pytest.raises(Unavailable, match="does not exist"):
        await missing.write("1/a.jpg", b"x")
    with pytest.raises(Unavailable, match="does not exist"):  # (not "no such photo": the images would fail)
        await missing.read("1/a.jpg")
    with pytest.raises(Unavailable, match="does not exist"):  # (not "the import file is gone": the job would fail)
        async with missing.local_file("1/imports/a.zip", 100):
            pass
    assert "does not exist" in await missing.check()
    await down.tidy(["1/a.jpg"], 1, [5])  # after a commit: left behind with a warning, never raised


async def test_import_files_come_back_in_pieces(s3_media, tmp_path, monkeypatch):
    from hub.domain import object_media

    monkeypatch.setattr(object_media, "PIECE_BYTES", 1000)  # (each piece its own request and deadline)
    media = MediaStore.for_settings(load_settings(home=tmp_path, **s3_media))
    data = bytes(range(256)) * 40 + b"end"
    upload = tmp_path / "upload.zip"
    upload.write_bytes(data)
    await media.put_file("9/imports/x.zip", upload)
    async with media.local_file("9/imports/x.zip", len(data)) as local:
        assert local.read_bytes() == data


def test_media_settings_are_checked(tmp_path):
    for bad in ({"media_url": "https://bucket"}, {"media_url": "s3://"}, {"media_url": "s3://b?x=1"},
                {"s3_endpoint_url": "ftp://host"}, {"media_url": "s3://key:secret@bucket/p"}):
        with pytest.raises(SettingsError, match="HUB_MEDIA_URL|HUB_S3_ENDPOINT_URL"):
            load_settings(home=tmp_path, **bad)
    settings = load_settings(home=tmp_path, media_url="s3://b/p/", s3_secret_access_key="very-secret-value")
    assert settings.media_url == "s3://b/p"
    assert "very-secret-value" not in repr(settings)
    assert isinstance(MediaStore.for_settings(load_settings(home=tmp_path)).root, Path)  # type: ignore[attr-defined]
