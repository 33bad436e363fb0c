"""Dataset folders, uploads and listings over real sockets, with real multipart bodies, PNGs and zip files.

Every error answer is checked for the JSON envelope and for absolute paths outside the datasets root.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
import sys
import tempfile
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from simpletuner_server import create_app
from simpletuner_server.api.datasets.uploads import ContentCheck, UploadLimits, name_problem, place
from simpletuner_server.api.datasets.views import UPLOAD_LIMITS_KEY
from simpletuner_server.settings import ServerSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import ADMIN, as_user, call

T = TypeVar("T")
SMALL = UploadLimits(max_request_bytes=256 * 1024, max_file_bytes=64 * 1024, max_files=20,
                     max_zip_entries=50, max_extracted_bytes=512 * 1024, max_zip_ratio=20,
                     ratio_floor_bytes=16 * 1024)
VIEWER = {"email": "vi@example.com", "username": "victor", "password": "only-looking", "level_names": ["viewer"]}
SCRIPT = b"#!/bin/sh\nrm -rf ~\n"


def png(color: str = "red", size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buf, "JPEG")
    return buf.getvalue()


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buf.getvalue()


def form(target: str | None, files: list[tuple[str, bytes]] = (), field: str = "files[]",  # type: ignore[assignment]
         **extra: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    if target is not None:
        data.add_field("target_path", target)
    for key, value in extra.items():
        data.add_field(key, value)
    for name, content in files:
        data.add_field(field, content, filename=name, content_type="application/octet-stream")
    return data


def raw_multipart(target: str, filename: str, content: bytes) -> tuple[bytes, dict[str, str]]:
    """A body as curl sends it (aiohttp's FormData would percent-encode a backslash in the file name)."""
    boundary = "----raw-boundary-7d3"
    filename = filename.replace("\\", "\\\\")  # curl escapes backslashes in the quoted name
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="target_path"\r\n\r\n{target}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="files[]"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def serve(home: Path, scenario: Callable[[TestClient, Path], Awaitable[T]], limits: UploadLimits | None = SMALL,
          **settings: Any) -> T:
    """A real 127.0.0.1 server logged in as the first admin; the datasets root is ``home/datasets``."""

    async def main() -> T:
        app = create_app(ServerSettings(home=home, **settings), on_setup_token=lambda token: None)
        if limits is not None:
            app[UPLOAD_LIMITS_KEY] = limits
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            assert (await client.post("/api/cloud/auth/setup/first-admin", json=ADMIN)).status == 201
            return await scenario(client, (home / "datasets").absolute())

    return asyncio.run(main())


async def ok(client: Any, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
    status, body, _ = await call(client, method, path, **kw)
    assert status == expect, body
    return body


async def refused(client: Any, method: str, path: str, expect: int, ds: Path, **kw: Any) -> dict[str, Any]:
    """An error answer: the status, JSON ``error.message``, and no absolute path other than under ``ds``."""
    status, body, resp = await call(client, method, path, **kw)
    assert status == expect, body
    assert isinstance(body, dict) and body["error"]["message"], body
    text = (await resp.text()).replace(str(ds), "<ds>")
    assert str(ds.parent.parent) not in text and "/etc" not in text, text
    return body


def staging_left(ds: Path) -> list[str]:
    return [p.name for p in ds.iterdir() if p.name.startswith(".")]


def test_tutorial_flow_creates_the_root_and_uploads(tmp_path: Path) -> None:
    async def scenario(client: TestClient, ds: Path) -> None:
        root = await ok(client, "GET", "/api/datasets/root")
        assert root == {"datasets_dir": str(ds), "exists": False}
        assert (await ok(client, "GET", "/api/datasets"))["datasets"] == []

        # curl -F parent_path="$DATASETS_DIR" -F folder_name="pixart-upload": the root is created on demand.
        body = await ok(client, "POST", "/api/datasets/folders", 201,
                        data=form(None, parent_path=str(ds), folder_name="pixart-upload"))
        assert body == {"success": True, "path": str(ds / "pixart-upload"), "name": "pixart-upload",
                        "relative_path": "pixart-upload"}
        assert (ds / "pixart-upload").is_dir()
        status, body, _ = await call(client, "POST", "/api/datasets/folders",
                                     data={"parent_path": str(ds), "folder_name": "pixart-upload"})
        assert status == 409 and "already exists" in body["error"]["message"]
        # JSON bodies and paths relative to the root work too.
        await ok(client, "POST", "/api/datasets/folders", 201, json={"parent_path": "pixart-upload",
                                                                     "folder_name": "sub set.v2"})

        # curl -F target_path=... -F files[]=@image001.png -F files[]=@image001.txt
        target = str(ds / "pixart-upload")
        body = await ok(client, "POST", "/api/datasets/upload", data=form(
            target, [("image001.png", png()), ("image001.txt", b"a red square"), ("meta.jsonl", b'{"a": 1}\n'),
                     ("photo.JPG", jpeg())]))
        assert body["success"] is True and body["files_uploaded"] == 4 and body["errors"] == []
        assert body["target_path"] == target and body["relative_path"] == "pixart-upload"
        assert (ds / "pixart-upload" / "image001.png").read_bytes() == png()
        assert stat.S_IMODE(os.stat(ds / "pixart-upload" / "image001.png").st_mode) == 0o644

        # curl -F target_path=... -F file=@dataset.zip: nested folders kept, OS litter skipped.
        archive = make_zip([("cats/one.png", png("white")), ("cats/one.txt", b"a cat"), ("cats/", b""),
                            ("__MACOSX/cats/._one.png", b"junk"), (".DS_Store", b"junk"), ("top.webp", webp())])
        body = await ok(client, "POST", "/api/datasets/upload/zip",
                        data=form(target, [("dataset.zip", archive)], field="file"))
        assert body["files_extracted"] == 3 and body["errors"] == [] and body["files_skipped"] == 2
        assert sorted(body["files"]) == ["cats/one.png", "cats/one.txt", "top.webp"]
        assert (ds / "pixart-upload" / "cats" / "one.txt").read_text() == "a cat"
        assert not (ds / "pixart-upload" / "__MACOSX").exists() and staging_left(ds) == []

        listing = await ok(client, "GET", "/api/datasets")
        assert listing["datasets_dir"] == str(ds)
        (entry,) = listing["datasets"]
        assert (entry["name"], entry["images"], entry["captions"]) == ("pixart-upload", 4, 3)
        files = await ok(client, "GET", "/api/datasets/files?path=pixart-upload&limit=2")
        assert files["path"] == "pixart-upload" and files["folders"] == ["cats", "sub set.v2"]
        assert files["total_files"] == 5 and [f["name"] for f in files["files"]] == ["image001.png", "image001.txt"]
        assert files["files"][0]["kind"] == "image" and files["files"][0]["size"] == len(png())
        assert (await ok(client, "GET", f"/api/datasets/files?path={ds}/pixart-upload/cats"))["total_files"] == 2
        await refused(client, "GET", "/api/datasets/files?path=nope", 404, ds)
        await refused(client, "GET", "/api/datasets/files?path=../..", 403, ds)
        await refused(client, "GET", "/api/datasets/files?limit=0", 422, ds)

    serve(tmp_path / "home", scenario)


def webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buf, "WEBP")
    return buf.getvalue()


def test_folder_names_and_paths_are_checked(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()

    async def scenario(client: TestClient, ds: Path) -> None:
        ds.mkdir(parents=True)
        (ds / "escape").symlink_to(outside)
        url = "/api/datasets/folders"
        for name, message in (("..", "path traversal"), ("../x", "path traversal"), ("../../etc", "path traversal"),
                              ("a/b", "path separators"), ("a\\b", "path separators"),
                              ("bad\x01name", "forbidden characters"), ("x" * 300, "too long"),
                              (".hidden", "dot"), ("", "is required")):
            body = await refused(client, "POST", url, 422, ds, json={"parent_path": str(ds), "folder_name": name})
            (error,) = body["error"]["errors"]
            assert error["path"] == "folder_name" and message in error["message"], body
        body = await refused(client, "POST", url, 422, ds, data={"folder_name": "x"})
        assert body["error"]["errors"] == [{"path": "parent_path", "message": "is required"}]
        for parent in (str(outside), f"{ds}/../..", "../..", str(ds / "escape"), "escape", "/etc"):
            body = await refused(client, "POST", url, 403, ds, data={"parent_path": parent, "folder_name": "x"})
            assert "parent_path is outside" in body["error"]["message"]
        assert list(outside.iterdir()) == []
        body = await refused(client, "POST", url, 404, ds, data={"parent_path": "missing", "folder_name": "x"})
        assert "'missing' does not exist" in body["error"]["message"]
        (ds / "file.txt").write_text("x")
        await refused(client, "POST", url, 422, ds, data={"parent_path": "file.txt", "folder_name": "x"})
        await refused(client, "POST", url, 400, ds, data=b"{not json", headers={"Content-Type": "application/json"})
        # A link that stays inside the root is fine.
        (ds / "alias").symlink_to(ds)
        await ok(client, "POST", url, 201, data={"parent_path": "alias", "folder_name": "via-link"})
        assert (ds / "via-link").is_dir()
        assert [d["name"] for d in (await ok(client, "GET", "/api/datasets"))["datasets"]] == ["alias", "via-link"]

    serve(tmp_path / "home", scenario)


def test_upload_refusals_overwrite_and_limits(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()

    async def scenario(client: TestClient, ds: Path) -> None:
        url = "/api/datasets/upload"
        await ok(client, "POST", "/api/datasets/folders", 201, data={"parent_path": str(ds), "folder_name": "set"})
        target = ds / "set"

        # Unsafe names are refused, not cleaned, and nothing lands anywhere.
        body = await refused(client, "POST", url, 422, ds, data=form("set", [
            ("../../../outside/x.png", png()), ("../", png()), (".env.txt", b"x"), ("y" * 300 + ".png", png())]))
        assert body["success"] is False and body["files_uploaded"] == 0
        assert [e["message"].split(":")[0] for e in body["errors"]] == ["Invalid filename"] * 4
        for name, words in (("..\\..\\x.png", "traversal"), ("a\\b.png", "separators"), ("sub/x.png", "separators")):
            raw, headers = raw_multipart("set", name, png())
            body = await refused(client, "POST", url, 422, ds, data=raw, headers=headers)
            assert words in body["errors"][0]["message"], body
        assert list(outside.iterdir()) == [] and list(target.iterdir()) == []

        # Types come from the content: a script named .png, a .sh, a binary .txt.
        body = await refused(client, "POST", url, 415, ds, data=form(str(target), [
            ("evil.png", SCRIPT), ("evil.sh", SCRIPT), ("notes.txt", b"caption\x00\xff"), ("fake.jpg", png())]))
        messages = [e["message"] for e in body["errors"]]
        assert messages[0].startswith("Content does not match") and "evil.png is not a PNG" in messages[0]
        assert messages[1].startswith("Unsupported file type: evil.sh")
        assert messages[2].startswith("Content does not match") and messages[3].startswith("Content does not")
        assert list(target.iterdir()) == []

        # Mixed: the good file is written (200), the bad one reported.
        body = await ok(client, "POST", url, data=form(str(target), [("a.png", png()), ("b.sh", SCRIPT)]))
        assert body["success"] is True and body["files"] == ["a.png"] and body["errors"][0]["file"] == "b.sh"

        # An existing file is kept unless overwrite=true; "files" works as well as "files[]".
        body = await ok(client, "POST", url, data=form("set", [("a.png", png("blue"))], field="files"))
        assert body["files_uploaded"] == 0 and body["files_skipped"] == 1 and "overwrite" in body["skipped"][0]["message"]
        assert (target / "a.png").read_bytes() == png()
        body = await ok(client, "POST", url, data=form("set", [("a.png", png("blue"))], overwrite="true"))
        assert body["files_uploaded"] == 1 and (target / "a.png").read_bytes() == png("blue")
        await refused(client, "POST", url, 422, ds, data=form("set", [("c.png", png())], overwrite="maybe"))

        # Where: missing, outside, a link leading out, not a folder; and what: no fields, no files, no form.
        (ds / "escape").symlink_to(outside)
        body = await refused(client, "POST", url, 422, ds, data=form(None, [("c.png", png())]))
        assert body["error"]["errors"] == [{"path": "target_path", "message": "is required"}]
        body = await refused(client, "POST", url, 422, ds, data=form("set"))
        assert body["error"]["errors"][0]["path"] == "files[]"
        for where in (str(outside), "escape", f"{ds}/../../outside"):
            body = await refused(client, "POST", url, 403, ds, data=form(where, [("c.png", png())]))
            assert "target_path is outside" in body["error"]["message"]
        await refused(client, "POST", url, 404, ds, data=form("nope", [("c.png", png())]))
        await refused(client, "POST", url, 422, ds, data=form("set/a.png", [("c.png", png())]))
        await refused(client, "POST", url, 422, ds, json={"target_path": "set"})
        await refused(client, "POST", url, 415, ds, data=b"x", headers={"Content-Type": "text/plain"})
        assert list(outside.iterdir()) == []

        # Sizes: one file over the per-file limit, then a body over the per-request limit.
        big = png() + b"\x00" * (SMALL.max_file_bytes + 1)
        body = await refused(client, "POST", url, 413, ds, data=form("set", [("big.png", big)]))
        assert body["errors"][0]["message"].startswith("Too large")
        chunks = [(f"p{i}.png", png() + b"\x00" * 60_000) for i in range(5)]
        body = await refused(client, "POST", url, 413, ds, data=form("set", chunks))
        assert str(SMALL.max_request_bytes) in body["error"]["message"]
        # The same without a Content-Length (chunked): metered while streaming.
        raw, headers = raw_multipart("set", "huge.txt", b"caption " * 40_000)

        async def chunked() -> Any:
            for start in range(0, len(raw), 16_384):
                yield raw[start:start + 16_384]

        body = await refused(client, "POST", url, 413, ds, data=chunked(), headers=headers)
        assert "limit for one request is 262144 bytes" in body["error"]["message"]
        assert not any(p.name.startswith("p") for p in target.iterdir()) and staging_left(ds) == []

    serve(tmp_path / "home", scenario)


def test_zip_slip_bombs_and_bad_archives(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()

    async def scenario(client: TestClient, ds: Path) -> None:
        url = "/api/datasets/upload/zip"
        await ok(client, "POST", "/api/datasets/folders", 201, data={"parent_path": str(ds), "folder_name": "z"})
        target = ds / "z"
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        hostile = make_zip([("../evil.png", png()), ("../../outside/evil.png", png()), ("/tmp/x.png", png()),
                            ("C:/x.png", png()), ("a\\..\\b.png", png()), (link, str(outside).encode()),
                            ("ok/good.png", png()), ("script.png", SCRIPT), ("run.sh", SCRIPT)])
        body = await ok(client, "POST", url, data=form("z", [("h.zip", hostile)], field="file"))
        assert body["files"] == ["ok/good.png"] and body["files_extracted"] == 1
        reasons = {e["file"]: e["message"] for e in body["errors"]}
        assert "traversal" in reasons["../evil.png"] and "traversal" in reasons["../../outside/evil.png"]
        assert "absolute" in reasons["/tmp/x.png"] and "absolute" in reasons["C:/x.png"]
        assert "backslash" in reasons["a\\..\\b.png"] and "Symbolic links" in reasons["link.png"]
        assert reasons["script.png"].startswith("Content does not match") and "Unsupported" in reasons["run.sh"]
        assert list(outside.iterdir()) == [] and not (ds / "evil.png").exists()
        assert sorted(p.name for p in target.rglob("*")) == ["good.png", "ok"]

        # A folder in the target that links outside cannot be written through.
        (target / "out").symlink_to(outside)
        body = await refused(client, "POST", url, 422, ds, data=form(
            "z", [("l.zip", make_zip([("out/x.png", png()), ("out/deeper/y.png", png())]))], field="file"))
        assert all("outside the datasets directory" in e["message"] for e in body["errors"])
        assert list(outside.iterdir()) == []

        # Overwrite off by default, on when asked.
        again = make_zip([("ok/good.png", png("blue"))])
        body = await ok(client, "POST", url, data=form("z", [("a.zip", again)], field="file"))
        assert body["files_extracted"] == 0 and body["files_skipped"] == 1
        body = await ok(client, "POST", url, data=form("z", [("a.zip", again)], field="file", overwrite="1"))
        assert body["files_extracted"] == 1 and (target / "ok" / "good.png").read_bytes() == png("blue")

        # Bombs: ratio, total size, entry count; nothing is written for a refused archive.
        for entries, words in (([("bomb.txt", b"a" * 200_000)], "compression ratio"),
                               ([(f"f{i}.txt", b"a" * 15_000) for i in range(40)], "expands to"),
                               ([(f"e{i}.txt", b"x") for i in range(60)], "entries")):
            body = await refused(client, "POST", url, 413, ds, data=form("z", [("b.zip", make_zip(entries))],
                                                                         field="file"))
            assert words in body["error"]["message"], body
        assert not (target / "bomb.txt").exists() and not (target / "e0.txt").exists()

        # Not a zip, no zip, two zips, nothing usable inside.
        await refused(client, "POST", url, 415, ds, data=form("z", [("x.zip", png())], field="file"))
        body = await refused(client, "POST", url, 422, ds, data=form("z"))
        assert body["error"]["errors"] == [{"path": "file", "message": "is required"}]
        await refused(client, "POST", url, 422, ds, data=form("z", [("a.zip", again), ("b.zip", again)], field="file"))
        await refused(client, "POST", url, 422, ds, data=form("z", [("e.zip", make_zip([("d/", b"")]))], field="file"))
        await refused(client, "POST", url, 403, ds, data=form(str(outside), [("a.zip", again)], field="file"))
        assert staging_left(ds) == []

    serve(tmp_path / "home", scenario)


def test_roles_viewer_reads_anonymous_gets_nothing(tmp_path: Path) -> None:
    async def scenario(client: TestClient, ds: Path) -> None:
        await ok(client, "POST", "/api/datasets/folders", 201, data={"parent_path": str(ds), "folder_name": "s"})
        await ok(client, "POST", "/api/users", 201, json=VIEWER)
        base = str(client.make_url("/"))
        async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as viewer:
            await ok(viewer, "POST", "/api/cloud/auth/login", json={"username": "victor", "password": "only-looking"})
            assert [d["name"] for d in (await ok(viewer, "GET", "/api/datasets"))["datasets"]] == ["s"]
            await ok(viewer, "GET", "/api/datasets/files?path=s")
            for path, data in (("/api/datasets/folders", {"parent_path": str(ds), "folder_name": "v"}),
                               ("/api/datasets/upload", form("s", [("a.png", png())])),
                               ("/api/datasets/upload/zip", form("s", [("a.zip", make_zip([("a.png", png())]))],
                                                                 field="file"))):
                body = await refused(viewer, "POST", path, 403, ds, data=data)
                assert body["error"]["message"] == "Permission denied: dataset.upload"
        async with aiohttp.ClientSession(base_url=base, cookie_jar=aiohttp.DummyCookieJar()) as anonymous:
            for method, path in (("GET", "/api/datasets"), ("GET", "/api/datasets/root"),
                                 ("GET", "/api/datasets/files"), ("POST", "/api/datasets/folders"),
                                 ("POST", "/api/datasets/upload"), ("POST", "/api/datasets/upload/zip")):
                await refused(anonymous, method, path, 401, ds)
        assert sorted(p.name for p in ds.iterdir()) == ["s"] and list((ds / "s").iterdir()) == []

    serve(tmp_path / "home", scenario)


def test_uploads_are_not_held_to_the_app_wide_body_limit(tmp_path: Path) -> None:
    async def scenario(client: TestClient, ds: Path) -> None:
        await ok(client, "POST", "/api/datasets/folders", 201, data={"parent_path": str(ds), "folder_name": "s"})
        body = await ok(client, "POST", "/api/datasets/upload", data=form("s", [("big.png", png(size=256))]))
        assert body["files_uploaded"] == 1
        status, _, _ = await call(client, "POST", "/api/datasets/folders", data={"parent_path": "x" * 4096,
                                                                                  "folder_name": "y"})
        assert status == 413  # everything else keeps the app-wide limit

    serve(tmp_path / "home", scenario, max_body_bytes=1024)


def test_content_checks_across_chunk_boundaries(tmp_path: Path) -> None:
    image = png()
    check = ContentCheck("png", "a.png")
    assert all(check.feed(image[i:i + 3]) is None for i in range(0, len(image), 3)) and check.finish() is None
    assert ContentCheck("png", "x.png").finish() is not None  # empty
    tiny = ContentCheck("bmp", "x.bmp")
    assert tiny.feed(b"BM") is None and tiny.finish() is None  # shorter than the sniffed head
    text = "légende ✓".encode()
    split = ContentCheck("text", "c.txt")
    assert split.feed(text[:2]) is None and split.feed(text[2:]) is None and split.finish() is None
    cut = ContentCheck("text", "c.txt")
    assert cut.feed(text[:2]) is None and cut.finish() is not None  # ends inside a character


def test_names_and_placement(tmp_path: Path) -> None:
    for name in ("image 01.png", "photo..png", "ünï.txt", "a-b_c.jsonl"):
        assert name_problem(name) is None, name
    for name in ("", ".", "..", "../a", "a/b", "a\\b", "a\x00b", "a\u202eb", "x:y", ".git", " lead", "\udaa3"):
        assert name_problem(name), name
    src_dir, dest_dir = tmp_path / "staging", tmp_path / "dest"
    src_dir.mkdir()
    dest_dir.mkdir()
    for other in (src_dir, Path("/dev/shm")):  # the second is another file system where there is one
        if not other.is_dir():
            continue
        staged = Path(tempfile.mkstemp(dir=other)[1])
        staged.write_bytes(b"one")
        assert place(staged, dest_dir / "f.txt", overwrite=False) is True and not staged.exists()
        staged.write_bytes(b"two")
        assert place(staged, dest_dir / "f.txt", overwrite=False) is False and not staged.exists()
        assert (dest_dir / "f.txt").read_bytes() == b"one"
        staged.write_bytes(b"three")
        assert place(staged, dest_dir / "f.txt", overwrite=True) is True
        assert (dest_dir / "f.txt").read_bytes() == b"three"
        (dest_dir / "f.txt").unlink()
        assert [p.name for p in dest_dir.iterdir()] == []  # no stray temp files


def test_dataset_folders_are_owned_by_their_creator(tmp_path: Path) -> None:
    """A researcher writes only into top-level folders they created; admins anywhere."""

    async def scenario(client: TestClient, ds: Path) -> None:
        await ok(client, "POST", "/api/datasets/folders", 201, data={"parent_path": str(ds), "folder_name": "adm"})
        async with as_user(client, "ada", ["researcher"]) as ada, as_user(client, "bob", ["researcher"]) as bob:
            await ok(ada, "POST", "/api/datasets/folders", 201, data={"parent_path": str(ds), "folder_name": "mine"})
            await ok(ada, "POST", "/api/datasets/folders", 201, data={"parent_path": "mine", "folder_name": "sub"})
            await ok(ada, "POST", "/api/datasets/upload", data=form(str(ds / "mine" / "sub"), [("a.png", png())]))
            for target in (str(ds / "mine"), str(ds / "adm"), str(ds)):
                body = await refused(bob, "POST", "/api/datasets/upload", 403, ds,
                                     data=form(target, [("b.png", png())]))
                assert "not yours to write to" in body["error"]["message"], target
            body = await refused(bob, "POST", "/api/datasets/upload/zip", 403, ds,
                                 data=form(str(ds / "mine"), [("d.zip", make_zip([("c.png", png())]))], field="file"))
            await refused(bob, "POST", "/api/datasets/folders", 403, ds,
                          data={"parent_path": "mine", "folder_name": "intruder"})
            assert (await ok(bob, "GET", "/api/datasets/files?path=mine/sub"))["files"][0]["name"] == "a.png"
        await ok(client, "POST", "/api/datasets/upload", data=form(str(ds / "mine"), [("admin.png", png())]))
        assert sorted(p.name for p in (ds / "mine").iterdir()) == ["admin.png", "sub"]

    serve(tmp_path, scenario)
