"""The datasets page in a real browser: an admin creates a folder, uploads a zip and single files with progress,
sees thumbnails and captions, edits captions (checked on disk), and a stored-XSS caption stays text; a viewer
browses the same folder read-only; paging; the phone layout."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path
from typing import Any

from ui_helpers import ADMIN, Live, expect, shot, sign_in

XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"
VIEWER = {"email": "vera@example.com", "username": "vera", "password": "viewer password", "level_names": ["viewer"]}


def png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64), noise: bool = False) -> bytes:
    from PIL import Image

    image = Image.new("RGB", size, color)
    if noise:  # incompressible, so an upload takes a while under throttling
        rng = random.Random(size[0])
        image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))
                       for _ in range(size[0] * size[1])])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def datasets_dir(live: Live, key: str) -> Path:
    status, body = live.api("GET", "/api/datasets/root", key=key)
    assert status == 200, body
    return Path(body["datasets_dir"])


def no_horizontal_scroll(page: Any) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def watch_dialogs(page: Any) -> list[str]:
    """Every alert/confirm the page opens (an XSS probe that ran would show up here)."""
    seen: list[str] = []

    def record(dialog: Any) -> None:
        seen.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    return seen


def test_admin_creates_uploads_and_captions(new_page: Any, live_server: Live, admin_key: str,
                                            tmp_path: Path) -> None:
    root = datasets_dir(live_server, admin_key)
    page, watch = new_page()
    dialogs = watch_dialogs(page)
    sign_in(page, ADMIN["username"], ADMIN["password"], "/datasets")
    expect(page.locator("#ds-empty")).to_contain_text("No dataset folders yet")

    # A folder through the page; the browser lands in it, the folder kept in the URL.
    page.get_by_label("Folder name").fill("cats")
    page.get_by_role("button", name="Create folder").click()
    page.wait_for_url("**/datasets?folder=cats")
    expect(page.locator("#images-status")).to_contain_text("No images in this folder yet")
    assert (root / "cats").is_dir()

    # A zip archive (images, captions, a folder inside): its progress bar, then the counts.
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a1.png", png((200, 30, 30), noise=True, size=(256, 256)))
        zf.writestr("a1.txt", "a red square")
        zf.writestr("a2.png", png((30, 200, 30)))
        zf.writestr("a2.txt", "a green square")
        zf.writestr("sub/b1.png", png((30, 30, 200)))
    cdp = page.context.new_cdp_session(page)  # a slow uplink, so the progress is seen moving
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 20, "downloadThroughput": -1,
                                                  "uploadThroughput": 64 * 1024})
    page.get_by_label("Files to upload").set_input_files(str(archive))
    upload = page.locator(".upload-item", has_text="set.zip")
    expect(upload.locator(".upload-status")).to_contain_text("Uploading…")
    shot(page, "datasets-uploading")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})
    expect(upload.locator(".upload-status")).to_have_text("Extracted 5 files.", timeout=30_000)
    expect(upload.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#ds-grid li.thumb")).to_have_count(2)
    expect(page.locator("#subfolders")).to_contain_text("sub")

    # Single files in one batch: new ones written, an existing one skipped, a fake image refused.
    singles = tmp_path / "singles"
    singles.mkdir()
    (singles / "a3.png").write_bytes(png((240, 200, 20)))
    (singles / "a3.txt").write_text("a yellow square", encoding="utf-8")
    (singles / "a1.png").write_bytes(png((0, 0, 0)))
    (singles / "evil.png").write_text("#!/bin/sh\necho not an image\n", encoding="utf-8")
    typing = page.get_by_label("Caption of a2.png")
    typing.fill("half-typed")  # unsaved while the upload lands: the grid reloads, the text and focus stay
    page.get_by_label("Files to upload").set_input_files(sorted(str(p) for p in singles.iterdir()))
    batch = page.locator(".upload-item", has_text="4 files")
    expect(batch.locator(".upload-status")).to_have_text("Uploaded 2 files, 1 skipped, 1 refused.")
    expect(batch.locator(".refused")).to_contain_text("evil.png")
    expect(batch.locator(".refused")).to_contain_text("Content does not match")
    expect(batch.locator(".skipped")).to_contain_text("a1.png")
    assert (root / "cats" / "a1.png").read_bytes() != (singles / "a1.png").read_bytes()  # not overwritten
    assert not (root / "cats" / "evil.png").exists()

    # Drag and drop onto the zone.
    dropped = page.evaluate_handle("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(["notes about the cats"], "notes.txt", { type: "text/plain" }));
        return dt;
    }""")
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": dropped})
    expect(page.locator("#dropzone")).to_have_class("dropzone over")
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dropped})
    expect(page.locator("#dropzone")).to_have_class("dropzone")
    expect(page.locator(".upload-item", has_text="notes.txt").locator(".upload-status")).to_have_text(
        "Uploaded 1 file.")
    assert (root / "cats" / "notes.txt").read_text(encoding="utf-8") == "notes about the cats"

    # Thumbnails (lazy, 256 px) and their captions.
    grid = page.locator("#ds-grid")
    expect(grid.locator("li.thumb")).to_have_count(3)
    page.wait_for_function("() => [...document.querySelectorAll('#ds-grid img')]"
                           ".every((i) => i.complete && i.naturalWidth > 0)")
    first = grid.locator("img").first
    assert "size=256" in first.get_attribute("src") and first.get_attribute("loading") == "lazy"
    assert first.get_attribute("alt") == "a red square"
    expect(page.get_by_label("Caption of a1.png")).to_have_value("a red square")
    expect(page.get_by_label("Caption of a3.png")).to_have_value("a yellow square")
    expect(page.locator("#folder-count")).to_have_text("3 images")
    expect(typing).to_have_value("half-typed")
    expect(grid.locator("li.thumb", has_text="a2.png").locator(".save-state")).to_have_text("Unsaved changes")

    # Edit a caption with Ctrl+Enter, another with the Save button: written to the .txt beside the image.
    a2 = page.get_by_label("Caption of a2.png")
    a2.fill("a green square, edited")
    expect(grid.locator("li.thumb", has_text="a2.png").locator(".save-state")).to_have_text("Unsaved changes")
    a2.press("Control+Enter")
    expect(grid.locator("li.thumb", has_text="a2.png").locator(".save-state")).to_have_text("Saved")
    assert (root / "cats" / "a2.txt").read_text(encoding="utf-8") == "a green square, edited"

    # The stored-XSS probe: saved, reloaded, shown as text (value, alt, lightbox); no script runs.
    page.get_by_label("Caption of a3.png").fill(XSS)
    grid.locator("li.thumb", has_text="a3.png").get_by_role("button", name="Save").click()
    expect(grid.locator("li.thumb", has_text="a3.png").locator(".save-state")).to_have_text("Saved")
    assert (root / "cats" / "a3.txt").read_text(encoding="utf-8") == XSS
    page.reload()
    expect(page.get_by_label("Caption of a3.png")).to_have_value(XSS)
    assert grid.locator("img").nth(2).get_attribute("alt") == XSS
    assert page.locator("#ds-grid script, #ds-grid img[src='x']").count() == 0

    # The full image in a dialog, its caption editable there too; Esc closes it.
    page.get_by_role("button", name="View a1.png full size").click()
    box = page.locator("#image-box")
    expect(box).to_be_visible()
    expect(box.locator("img")).to_have_attribute("src", "/api/datasets/file?path=cats/a1.png")
    page.wait_for_function("() => document.querySelector('#image-box img').naturalWidth === 256")
    box.get_by_label("Caption of a1.png").fill("a noisy square")
    box.get_by_role("button", name="Save").click()
    expect(box.locator(".save-state")).to_have_text("Saved")
    expect(page.locator("#ds-grid").get_by_label("Caption of a1.png")).to_have_value("a noisy square")
    shot(page, "datasets-image")
    page.keyboard.press("Escape")
    expect(box).to_be_hidden()
    assert (root / "cats" / "a1.txt").read_text(encoding="utf-8") == "a noisy square"
    opener = page.get_by_role("button", name="View a2.png full size")  # by keyboard: Enter opens, Esc closes
    opener.focus()
    page.keyboard.press("Enter")
    expect(box).to_be_visible()
    expect(box.get_by_label("Caption of a2.png")).to_have_value("a green square, edited")
    page.keyboard.press("Escape")
    expect(box).to_be_hidden()
    expect(opener).to_be_focused()
    shot(page, "datasets")

    # A folder that exists already: the 409 at the field.
    watch.expect("409")
    page.get_by_label("Folder name").fill("sub")
    page.get_by_role("button", name="Create folder").click()
    expect(page.locator("#new-folder-form .field-error")).to_contain_text("already exists")

    # The list counts the folder recursively; a sub-folder link keeps the path in the URL.
    page.goto("/datasets")
    row = page.locator("#ds-rows tr", has_text="cats")
    expect(row).to_contain_text("4")
    row.get_by_role("link", name="cats").click()
    page.wait_for_url("**/datasets?folder=cats")
    page.locator("#subfolders").get_by_role("link", name="sub").click()
    page.wait_for_url("**/datasets?folder=cats/sub")
    expect(page.locator("#ds-crumbs")).to_contain_text("Datasets")
    expect(page.locator("#ds-grid li.thumb")).to_have_count(1)
    assert dialogs == []


def test_viewer_browses_read_only(new_page: Any, live_server: Live, admin_key: str) -> None:
    root = datasets_dir(live_server, admin_key)
    shared = root / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    (shared / "x1.png").write_bytes(png((10, 120, 200)))
    (shared / "x1.txt").write_text(XSS, encoding="utf-8")
    (shared / "x2.png").write_bytes(png((200, 120, 10)))
    status, body = live_server.api("POST", "/api/users", VIEWER, key=admin_key)
    assert status == 201, body

    page, _ = new_page()
    dialogs = watch_dialogs(page)
    sign_in(page, VIEWER["username"], VIEWER["password"], "/datasets")
    expect(page.locator("#ds-rows")).to_contain_text("shared")
    assert page.locator("#new-folder-card").is_hidden()
    page.goto("/datasets?folder=shared")
    grid = page.locator("#ds-grid")
    expect(grid.locator("li.thumb")).to_have_count(2)
    expect(grid.locator(".caption-text").first).to_have_text(XSS)  # literally, as text
    expect(grid.locator(".caption-text").nth(1)).to_have_text("No caption")
    assert page.locator("#upload-card").is_hidden()
    assert page.locator("#dropzone").is_hidden() and page.locator("#upload-input").is_hidden()
    assert grid.locator("textarea").count() == 0
    assert page.locator("#new-folder-card").is_hidden()
    page.get_by_role("button", name="View x1.png full size").click()
    expect(page.locator("#image-box .caption-text")).to_have_text(XSS)
    page.get_by_role("button", name="Close").click()
    expect(page.locator("#image-box")).to_be_hidden()
    assert dialogs == []


def test_paging_and_phone_layout(new_page: Any, live_server: Live, admin_key: str) -> None:
    root = datasets_dir(live_server, admin_key)
    many = root / "many"
    many.mkdir(parents=True, exist_ok=True)
    tiny = png((90, 90, 90), size=(8, 8))
    for i in range(105):
        (many / f"img{i:03d}.png").write_bytes(tiny)
    pets = root / "pets"
    pets.mkdir(parents=True, exist_ok=True)
    for i, color in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        (pets / f"pet{i}.png").write_bytes(png(color, size=(320, 240)))
        (pets / f"pet{i}.txt").write_text(f"pet number {i}, a long caption " * 3, encoding="utf-8")

    page, _ = new_page()
    sign_in(page, ADMIN["username"], ADMIN["password"], "/datasets?folder=many")
    expect(page.locator("#images-status")).to_have_text("Showing 100 of 105 images.")
    page.get_by_role("button", name="Load more").click()
    expect(page.locator("#ds-grid li.thumb")).to_have_count(105)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()

    phone, _ = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(phone, ADMIN["username"], ADMIN["password"], "/datasets?folder=pets")
    expect(phone.locator("#ds-grid li.thumb")).to_have_count(3)
    phone.wait_for_function("() => [...document.querySelectorAll('#ds-grid img')].slice(0, 2)"
                            ".every((i) => i.complete && i.naturalWidth > 0)")
    expect(phone.get_by_label("Files to upload")).to_be_visible()
    assert no_horizontal_scroll(phone)
    shot(phone, "datasets-phone")
    phone.goto("/datasets")
    expect(phone.locator("#ds-rows")).to_contain_text("many")
    assert no_horizontal_scroll(phone)
    shot(phone, "datasets-list-phone")
