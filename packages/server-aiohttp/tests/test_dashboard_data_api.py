"""The dashboard's data routes over real sockets: dataset files, thumbnails and captions, the config field table,
and the self-registration switch."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from PIL import Image

from simpletuner_core.config.model import field_docs
from simpletuner_core.plugins import get_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_helpers import as_user, call, serve_as_admin

SCRIPT = b"#!/bin/sh\nrm -rf ~\n"


def png(size: tuple[int, int] = (64, 40), color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (30, 50), "blue").save(buf, "JPEG")
    return buf.getvalue()


def upload_form(target: str, files: list[tuple[str, bytes]]) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("target_path", target)
    for name, content in files:
        data.add_field("files[]", content, filename=name, content_type="application/octet-stream")
    return data


async def ok(client: Any, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
    status, body, _ = await call(client, method, path, **kw)
    assert status == expect, (path, status, body)
    return body


async def error(client: Any, method: str, path: str, expect: int, **kw: Any) -> dict[str, Any]:
    """An error answer: the status and the JSON envelope."""
    status, body, _ = await call(client, method, path, **kw)
    assert status == expect, (path, status, body)
    assert isinstance(body, dict) and body["error"]["status"] == expect and body["error"]["message"], body
    return body["error"]


async def make_folder(client: Any, name: str, files: list[tuple[str, bytes]]) -> None:
    await ok(client, "POST", "/api/datasets/folders", 201, json={"parent_path": ".", "folder_name": name})
    body = await ok(client, "POST", "/api/datasets/upload", data=upload_form(name, files))
    assert body["files_uploaded"] == len(files), body


@contextlib.asynccontextmanager
async def anonymous(client: TestClient) -> AsyncIterator[aiohttp.ClientSession]:
    """A session with no credentials (its jar keeps a login's cookie, so it can log in later)."""
    async with aiohttp.ClientSession(base_url=str(client.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


# --- files and thumbnails -------------------------------------------------------------------------------------


def test_files_are_served_by_content_and_thumbnailed_once(tmp_path: Path) -> None:
    home, outside = tmp_path / "home", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png())
    thumbs_dir = home / "cache" / "thumbs"

    async def scenario(client: TestClient) -> None:
        ds = home / "datasets"
        image = png()
        await make_folder(client, "pics", [("a.png", image), ("a.txt", "a red rectangle ✓".encode()),
                                           ("meta.json", b'{"k": 1}')])
        body, resp = await _get(client, "/api/datasets/file?path=pics/a.png")
        assert resp.status == 200 and resp.content_type == "image/png" and body == image
        assert resp.headers["Cache-Control"] == "private, max-age=300"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        body, resp = await _get(client, f"/api/datasets/file?path={ds.absolute()}/pics/a.png")
        assert resp.status == 200 and body == image
        body, resp = await _get(client, "/api/datasets/file?path=pics/a.txt")
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8" and body.decode() == "a red rectangle ✓"
        assert "Cache-Control" not in resp.headers
        body, resp = await _get(client, "/api/datasets/file?path=pics/meta.json")
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8" and body == b'{"k": 1}'

        # a thumbnail: longest side at most N, cached on disk, the cached file served the second time
        body, resp = await _get(client, "/api/datasets/file?path=pics/a.png&size=32")
        assert resp.status == 200 and resp.content_type in ("image/webp", "image/png")
        assert resp.headers["Cache-Control"] == "private, max-age=300"
        with Image.open(io.BytesIO(body)) as thumb:
            assert max(thumb.size) <= 32 and thumb.size == (32, 20)
        (cached,) = thumbs_dir.iterdir()
        assert cached.read_bytes() == body
        stamp = cached.stat().st_mtime_ns
        again, _ = await _get(client, "/api/datasets/file?path=pics/a.png&size=32")
        assert again == body and cached.stat().st_mtime_ns == stamp and len(list(thumbs_dir.iterdir())) == 1
        cached.write_bytes(b"planted")  # proves the answer comes from the cache, not a new render
        planted, _ = await _get(client, "/api/datasets/file?path=pics/a.png&size=32")
        assert planted == b"planted"
        os.utime(ds / "pics" / "a.png", ns=(stamp + 10**9, stamp + 10**9))  # an edited image: a new entry
        fresh, _ = await _get(client, "/api/datasets/file?path=pics/a.png&size=32")
        assert fresh != b"planted" and len(list(thumbs_dir.iterdir())) == 2
        body, _ = await _get(client, "/api/datasets/file?path=pics/a.png&size=1024")  # never upscaled
        with Image.open(io.BytesIO(body)) as thumb:
            assert thumb.size == (64, 40)

        for query, field in (("size=8", "size"), ("size=2048", "size"), ("size=abc", "size"), ("", "path")):
            err = await error(client, "GET", f"/api/datasets/file?path=pics/a.png&{query}"
                              if field == "size" else "/api/datasets/file", 422)
            assert err["errors"][0]["path"] == field, err

        # confinement: traversal, absolute paths outside, a symlink out of the root
        (ds / "pics" / "out.png").symlink_to(outside / "secret.png")
        for path in ("../outside/secret.png", "pics/../../../outside/secret.png", str(outside / "secret.png"),
                     "/etc/passwd", "pics/out.png"):
            for extra in ("", "&size=32"):
                err = await error(client, "GET", f"/api/datasets/file?path={path}{extra}", 403)
                assert "path is outside" in err["message"] and str(tmp_path) not in err["message"]
        err = await error(client, "GET", "/api/datasets/file?path=pics/missing.png", 404)
        assert "'pics/missing.png'" in err["message"] and str(tmp_path) not in err["message"]
        err = await error(client, "GET", "/api/datasets/file?path=pics", 422)
        assert err["errors"][0]["path"] == "path" and "folder" in err["errors"][0]["message"]

        # types come from the content: a script named x.png is refused on upload already; planted on disk it is
        # neither served as an image nor thumbnailed
        body = await ok(client, "POST", "/api/datasets/upload", 415, data=upload_form("pics", [("x.png", SCRIPT)]))
        assert "Content does not match" in body["errors"][0]["message"]
        (ds / "pics" / "x.png").write_bytes(b"just some text, not an image at all")
        for extra in ("", "&size=64"):
            err = await error(client, "GET", f"/api/datasets/file?path=pics/x.png{extra}", 415)
            assert "Content does not match" in err["message"]
        # right magic bytes, undecodable body: served as what it claims, but Pillow cannot thumbnail it
        (ds / "pics" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
        _, resp = await _get(client, "/api/datasets/file?path=pics/broken.png")
        assert resp.status == 200 and resp.content_type == "image/png"
        err = await error(client, "GET", "/api/datasets/file?path=pics/broken.png&size=64", 415)
        assert "cannot make a thumbnail" in err["message"]
        (ds / "pics" / "notes.md").write_text("# not served")
        await error(client, "GET", "/api/datasets/file?path=pics/notes.md", 415)
        await error(client, "GET", "/api/datasets/file?path=pics/a.txt&size=64", 415)

        async with as_user(client, "vera", ["viewer"]) as viewer:  # dataset.view is enough to look
            body, resp = await _get(viewer, "/api/datasets/file?path=pics/a.png")
            assert resp.status == 200 and body == image
        async with anonymous(client) as nobody:
            await error(nobody, "GET", "/api/datasets/file?path=pics/a.png", 401)

    serve_as_admin(home, scenario)


async def _get(client: Any, path: str) -> tuple[bytes, aiohttp.ClientResponse]:
    resp = await client.get(path)
    return await resp.read(), resp


# --- image listing and captions -------------------------------------------------------------------------------


def test_images_listing_and_caption_editing(tmp_path: Path) -> None:
    home, outside = tmp_path / "home", tmp_path / "outside"
    outside.mkdir()

    async def scenario(client: TestClient) -> None:
        ds = home / "datasets"
        await make_folder(client, "cats", [("one.png", png()), ("one.txt", b"a cat"), ("two.jpg", jpeg()),
                                           ("notes.txt", b"not a caption of anything")])
        await ok(client, "POST", "/api/datasets/folders", 201, json={"parent_path": "cats", "folder_name": "sub"})
        (ds / "cats" / "far.png").symlink_to(outside / "x.png")  # a link out of the root is not listed
        listing = await ok(client, "GET", "/api/datasets/images?path=cats")
        assert listing == {"path": "cats", "total": 2, "offset": 0, "limit": 200, "items": [
            {"name": "one.png", "path": "cats/one.png", "size": len(png()), "caption": "a cat",
             "caption_path": "cats/one.txt"},
            {"name": "two.jpg", "path": "cats/two.jpg", "size": len(jpeg()), "caption": None, "caption_path": None},
        ]}
        page = await ok(client, "GET", "/api/datasets/images?path=cats&offset=1&limit=1")
        assert [item["name"] for item in page["items"]] == ["two.jpg"] and page["total"] == 2
        assert (await ok(client, "GET", "/api/datasets/images"))["items"] == []  # the root itself holds none
        for query in ("limit=0", "limit=1001", "offset=-1", "limit=x"):
            err = await error(client, "GET", f"/api/datasets/images?path=cats&{query}", 422)
            assert err["errors"][0]["path"] == query.split("=")[0]
        await error(client, "GET", "/api/datasets/images?path=dogs", 404)
        await error(client, "GET", "/api/datasets/images?path=../outside", 403)

        # the round trip: written next to the image atomically, then listed
        caption = "a blue cat\n\tsitting, ✓"
        body = await ok(client, "PUT", "/api/datasets/caption", json={"path": "cats/two.jpg", "caption": caption})
        assert body == {"path": "cats/two.jpg", "caption_path": "cats/two.txt", "caption": caption}
        assert (ds / "cats" / "two.txt").read_text(encoding="utf-8") == caption
        await ok(client, "PUT", "/api/datasets/caption", json={"path": str(ds / "cats" / "one.png"),
                                                                "caption": "a black cat"})
        assert (ds / "cats" / "one.txt").read_text() == "a black cat"
        listing = await ok(client, "GET", "/api/datasets/images?path=cats")
        assert [(i["caption"], i["caption_path"]) for i in listing["items"]] == [
            ("a black cat", "cats/one.txt"), (caption, "cats/two.txt")]
        assert not [p.name for p in (ds / "cats").iterdir() if p.name.startswith(".")]  # no temp files left

        url = "/api/datasets/caption"
        for value, message in (("bell\x07", "control characters"), ("x" * 10_001, "at most 10000"),
                               ("cr\r\n", "control characters"), (7, "must be a string")):
            err = await error(client, "PUT", url, 422, json={"path": "cats/one.png", "caption": value})
            assert err["errors"] == [{"path": "caption", "message": err["errors"][0]["message"]}]
            assert message in err["errors"][0]["message"], err
        assert (ds / "cats" / "one.txt").read_text() == "a black cat"
        err = await error(client, "PUT", url, 422, json={})
        assert {e["path"] for e in err["errors"]} == {"path", "caption"}
        for path in ("cats/notes.txt", "cats/sub"):
            err = await error(client, "PUT", url, 422, json={"path": path, "caption": "x"})
            assert err["errors"][0]["path"] == "path"
        (ds / "cats" / "fake.png").write_bytes(SCRIPT)
        err = await error(client, "PUT", url, 422, json={"path": "cats/fake.png", "caption": "x"})
        assert err["errors"][0]["path"] == "path" and "not an image" in err["errors"][0]["message"]
        await error(client, "PUT", url, 404, json={"path": "cats/none.png", "caption": "x"})
        for path in ("../outside/x.png", str(outside / "x.png"), "cats/far.png"):
            await error(client, "PUT", url, 403, json={"path": path, "caption": "x"})
        assert list(outside.iterdir()) == []

        async with as_user(client, "rita", ["researcher"]) as researcher:
            err = await error(researcher, "PUT", url, 403, json={"path": "cats/one.png", "caption": "mine now"})
            assert "not yours" in err["message"]
            await make_folder(researcher, "ritas", [("r.png", png())])
            body = await ok(researcher, "PUT", url, json={"path": "ritas/r.png", "caption": "her own"})
            assert body["caption_path"] == "ritas/r.txt"
        assert (ds / "cats" / "one.txt").read_text() == "a black cat"
        async with as_user(client, "vera", ["viewer"]) as viewer:
            assert (await ok(viewer, "GET", "/api/datasets/images?path=ritas"))["items"][0]["caption"] == "her own"
            err = await error(viewer, "PUT", url, 403, json={"path": "ritas/r.png", "caption": "x"})
            assert "dataset.upload" in err["message"]
        async with anonymous(client) as nobody:
            await error(nobody, "GET", "/api/datasets/images?path=cats", 401)
            await error(nobody, "PUT", url, 401, json={"path": "cats/one.png", "caption": "x"})

    serve_as_admin(home, scenario)


# --- the config field table -----------------------------------------------------------------------------------


def test_config_fields_place_every_key_on_a_tab(tmp_path: Path) -> None:
    registry = get_registry()
    docs = {doc["name"]: doc for doc in field_docs(registry)}

    async def scenario(client: TestClient) -> None:
        body = await ok(client, "GET", "/api/configs/fields")
        fields = {field["key"]: field for field in body["fields"]}
        assert body["count"] == len(body["fields"]) == len(docs) == len(fields)
        assert body["tabs"][:4] == ["basic", "model", "training", "validation"]
        assert {field["tab"] for field in body["fields"]} == set(body["tabs"])
        lr = fields["--learning_rate"]
        assert lr == {"key": "--learning_rate", "name": "learning_rate", "type": "float",
                      "default": docs["learning_rate"]["default"], "choices": [], "help": docs["learning_rate"]["help"],
                      "tab": "training", "section": "learning_rate", "family": None, "simpletuner": True}
        precision = fields["--mixed_precision"]
        assert precision["choices"] == docs["mixed_precision"]["choices"] and precision["choices"]
        assert (precision["tab"], precision["section"]) == ("model", "memory_optimization")
        assert (fields["--model_type"]["tab"], fields["--model_type"]["section"]) == ("model", "model_config")
        family_keys = {f.name: f.family for f in registry.config_fields.values() if f.family}
        for name, family in family_keys.items():
            assert fields[f"--{name}"]["family"] == family
            assert fields[f"--{name}"]["tab"] != "advanced"  # a family key sits with the model settings
        not_simpletuner = [f for f in body["fields"] if not f["simpletuner"]]
        assert not_simpletuner and all(f["section"] for f in not_simpletuner)
        assert all(f["family"] is None for f in body["fields"] if f["name"] not in family_keys)

        # a static path before /api/configs/{name}: "fields" is reserved as an environment name
        err = await error(client, "POST", "/api/configs/environments", 422,
                          json={"name": "fields", "model_family": "pixart_sigma"})
        assert err["errors"][0]["path"] == "name" and "reserved" in err["errors"][0]["message"]
        async with as_user(client, "vera", ["viewer"]) as viewer:
            assert (await ok(viewer, "GET", "/api/configs/fields"))["count"] == len(docs)
        async with anonymous(client) as nobody:
            await error(nobody, "GET", "/api/configs/fields", 401)

    serve_as_admin(tmp_path, scenario)


def test_config_field_table_is_torch_free() -> None:
    code = ("import sys\nfrom simpletuner_core.plugins import get_registry\n"
            "from simpletuner_server.api.config_fields_views import field_table\n"
            "assert field_table(get_registry())\n"
            "sys.exit('torch imported' if 'torch' in sys.modules else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr or out.stdout


# --- self-registration ----------------------------------------------------------------------------------------


def test_registration_switch(tmp_path: Path) -> None:
    newcomer = {"email": "nia@example.com", "username": "nia", "password": "a long password"}

    async def scenario(client: TestClient) -> None:
        async with anonymous(client) as nobody:
            for prefix in ("/api/cloud/auth", "/api/auth"):
                assert await ok(nobody, "GET", f"{prefix}/registration") == {"enabled": False,
                                                                             "default_level": "viewer"}
            assert (await ok(nobody, "GET", "/api/cloud/auth/setup/status"))["registration_enabled"] is False
            err = await error(nobody, "POST", "/api/cloud/auth/register", 403, json=newcomer)
            assert err["message"] == "Registration is disabled"
            # PUT shares the public GET's path: the handler itself demands an admin
            await error(nobody, "PUT", "/api/cloud/auth/registration", 401, json={"enabled": True})
            await error(nobody, "PUT", "/api/auth/registration", 401, json={"enabled": True})
            async with as_user(client, "rita", ["researcher"]) as researcher:
                err = await error(researcher, "PUT", "/api/cloud/auth/registration", 403, json={"enabled": True})
                assert "user.manage" in err["message"]
            await error(nobody, "PUT", "/api/cloud/auth/registration", 401, json={"enabled": True},
                        headers={"X-API-Key": "st_forged00000000"})
            assert (await ok(nobody, "GET", "/api/auth/registration"))["enabled"] is False

            err = await error(client, "PUT", "/api/cloud/auth/registration", 422, json={"enabled": "yes"})
            assert err["errors"][0]["path"] == "enabled"
            assert await ok(client, "PUT", "/api/cloud/auth/registration", json={"enabled": True}) == {
                "enabled": True, "default_level": "viewer"}
            assert (await ok(nobody, "GET", "/api/auth/setup/status"))["registration_enabled"] is True

            err = await error(nobody, "POST", "/api/cloud/auth/register", 422,
                              json={"email": "nope", "username": "x", "password": "short"})
            assert {e["path"] for e in err["errors"]} == {"email", "username", "password"}
            status, body, resp = await call(nobody, "POST", "/api/cloud/auth/register", json=newcomer)
            assert status == 201 and body["success"] is True, body
            user = body["user"]
            assert (user["username"], user["levels"], user["is_active"], user["is_admin"]) == (
                "nia", ["viewer"], True, False)
            assert "password_hash" not in user and "simpletuner_session" not in resp.cookies  # not logged in
            await error(nobody, "GET", "/api/cloud/auth/me", 401)
            err = await error(nobody, "POST", "/api/auth/register", 409,
                              json={**newcomer, "email": "other@example.com"})
            assert "username" in err["message"]

        async with anonymous(client) as session:
            await ok(session, "POST", "/api/cloud/auth/login", json={"username": "nia", "password": newcomer["password"]})
            me = await ok(session, "GET", "/api/cloud/auth/me")
            assert me["levels"] == ["viewer"] and "dataset.upload" not in me["permissions"]
            await error(session, "PUT", "/api/cloud/auth/registration", 403, json={"enabled": False})

        assert (await ok(client, "PUT", "/api/auth/registration", json={"enabled": False}))["enabled"] is False
        async with anonymous(client) as nobody:
            await error(nobody, "POST", "/api/cloud/auth/register", 403,
                        json={"email": "late@example.com", "username": "late", "password": "a long password"})

    serve_as_admin(tmp_path, scenario)
