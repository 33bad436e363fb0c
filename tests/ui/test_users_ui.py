"""The users and account pages in a real browser: an admin creates a researcher and a viewer, disables one (who
can no longer sign in), resets a password, changes levels, deletes an account, opens registration (a visitor
registers on the login page), creates and revokes an API key; a researcher sees no Users link and gets a 403."""

from __future__ import annotations

import re
from typing import Any

from ui_helpers import ADMIN, Live, expect, shot, sign_in

ADA = {"username": "ada", "email": "ada@example.com", "password": "analytical engine"}
BOB = {"username": "bob", "email": "bob@example.com", "password": "difference engine"}
VISITOR = {"username": "visitor", "email": "visitor@example.com", "password": "just looking around"}


def can_login(live: Live, username: str, password: str) -> int:
    status, _ = live.api("POST", "/api/cloud/auth/login", {"username": username, "password": password})
    return status


def no_horizontal_scroll(page: Any) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def create_user(page: Any, user: dict[str, str], levels: list[str]) -> None:
    form = page.locator("#create-user-form")
    form.get_by_label("Username").fill(user["username"])
    form.get_by_label("Email").fill(user["email"])
    form.get_by_label("Password").fill(user["password"])
    for level in ("admin", "researcher", "viewer"):
        form.get_by_role("checkbox", name=level).set_checked(level in levels)
    form.get_by_role("button", name="Create user").click()


def test_admin_manages_users_and_registration(new_page: Any, live_server: Live, admin_key: str) -> None:
    page, watch = new_page()
    sign_in(page, ADMIN["username"], ADMIN["password"], "/users")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Users")).to_have_attribute(
        "aria-current", "page")
    rows = page.locator("#users-rows")
    expect(rows.locator("tr")).to_have_count(1)
    admin_row = rows.locator("tr[data-user=admin]")
    expect(admin_row).to_contain_text("(you)")
    assert admin_row.get_by_role("button", name="Disable admin").is_disabled()
    assert admin_row.get_by_role("button", name="Delete admin").is_disabled()

    # Create a researcher and a viewer through the form.
    create_user(page, ADA, ["researcher"])
    expect(rows.locator("tr[data-user=ada]")).to_contain_text("researcher")
    create_user(page, BOB, ["viewer"])
    expect(rows.locator("tr[data-user=bob]")).to_contain_text("viewer")
    expect(rows.locator("tr")).to_have_count(3)
    expect(rows.locator("tr[data-user=bob]")).to_contain_text("never")  # last login
    status, users = live_server.api("GET", "/api/users", key=admin_key)
    assert status == 200
    assert {u["username"]: u["levels"] for u in users} == {"admin": ["admin"], "ada": ["researcher"],
                                                            "bob": ["viewer"]}

    # Refusals land at their fields: a duplicate name (409), a short password and a bad email (422).
    watch.expect("409")
    watch.expect("422")
    form = page.locator("#create-user-form")
    create_user(page, {**ADA, "email": "other@example.com"}, ["viewer"])
    expect(form.locator(".field", has=page.locator("#new-username")).locator(".field-error")).to_contain_text(
        "already exists")
    create_user(page, {"username": "carl", "email": "not-an-email", "password": "short"}, ["viewer"])
    expect(form.locator(".field", has=page.locator("#new-password")).locator(".field-error")).to_be_visible()
    expect(form.locator(".field", has=page.locator("#new-email")).locator(".field-error")).to_be_visible()
    expect(rows.locator("tr")).to_have_count(3)

    # Disable bob: he can no longer sign in; enable him again.
    assert can_login(live_server, BOB["username"], BOB["password"]) == 200
    rows.get_by_role("button", name="Disable bob").click()
    expect(rows.locator("tr[data-user=bob]")).to_contain_text("disabled")
    assert can_login(live_server, BOB["username"], BOB["password"]) == 401
    rows.get_by_role("button", name="Enable bob").click()
    expect(rows.locator("tr[data-user=bob]")).to_contain_text("active")
    assert can_login(live_server, BOB["username"], BOB["password"]) == 200
    rows.get_by_role("button", name="Disable bob").click()
    expect(rows.locator("tr[data-user=bob]")).to_contain_text("disabled")

    # Reset ada's password in the dialog: the new one works, the old one does not.
    rows.get_by_role("button", name="Reset password of ada").click()
    dialog = page.locator("#password-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("New password").fill("short")
    dialog.get_by_role("button", name="Set password").click()
    expect(dialog.locator(".field-error")).to_contain_text("8 characters")
    dialog.get_by_label("New password").fill("babbage and lovelace")
    dialog.get_by_role("button", name="Set password").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#toasts")).to_contain_text("Password of ada changed")
    assert can_login(live_server, ADA["username"], "babbage and lovelace") == 200
    assert can_login(live_server, ADA["username"], ADA["password"]) == 401

    # Levels: bob becomes a researcher too; demoting the last admin is refused and said so.
    rows.get_by_role("button", name="Change levels of bob").click()
    levels = page.locator("#levels-dialog")
    levels.get_by_role("checkbox", name="researcher").check()
    levels.get_by_role("button", name="Save levels").click()
    expect(levels).to_be_hidden()
    expect(rows.locator("tr[data-user=bob]")).to_contain_text("researcher")
    rows.get_by_role("button", name="Change levels of admin").click()
    levels.get_by_role("checkbox", name="admin").uncheck()
    levels.get_by_role("checkbox", name="viewer").check()
    levels.get_by_role("button", name="Save levels").click()
    expect(page.locator("#toasts")).to_contain_text("last active admin")
    levels.get_by_role("button", name="Cancel").click()
    expect(levels).to_be_hidden()
    expect(rows.locator("tr[data-user=admin]")).to_contain_text("admin")

    # Registration: off by default; switched on here, a visitor registers on the sign-in page.
    switch = page.get_by_role("switch", name="Allow self-registration")
    expect(switch).to_be_enabled()
    assert not switch.is_checked()
    expect(page.locator("#registration-state")).to_contain_text("off")
    shot(page, "users")
    switch.check()
    expect(page.locator("#registration-state")).to_contain_text("Registration is on")
    assert live_server.api("GET", "/api/cloud/auth/registration")[1]["enabled"] is True

    visitor, _ = new_page()
    visitor.goto("/login?next=/account")
    visitor.get_by_role("link", name="Register").click()
    reg = visitor.locator("#register-form")
    reg.get_by_label("Username").fill(VISITOR["username"])
    reg.get_by_label("Email").fill(VISITOR["email"])
    reg.get_by_label("Password").fill(VISITOR["password"])
    reg.get_by_role("button", name="Create account").click()
    expect(visitor.locator("#toasts")).to_contain_text("Account created")
    visitor.locator("#login-password").fill(VISITOR["password"])  # the login form has the name already
    visitor.get_by_role("button", name="Sign in").click()
    visitor.wait_for_url("**/account")
    expect(visitor.locator("#me-levels")).to_have_text("viewer")
    expect(visitor.locator("#key-denied")).to_be_visible()  # viewers hold no api.keys.own
    expect(visitor.get_by_role("navigation", name="Main").get_by_role("link", name="Users")).to_have_count(0)

    page.reload()
    expect(rows.locator("tr[data-user=visitor]")).to_contain_text("viewer")
    switch.uncheck()
    expect(page.locator("#registration-state")).to_contain_text("off")
    assert live_server.api("GET", "/api/cloud/auth/registration")[1]["enabled"] is False

    # Delete the visitor, after confirming in a dialog (Cancel first: nothing happens).
    rows.get_by_role("button", name="Delete visitor").click()
    confirm = page.get_by_role("dialog", name="Delete visitor?")  # common.js's confirmDialog
    expect(confirm).to_contain_text("Delete visitor?")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(rows.locator("tr[data-user=visitor]")).to_have_count(1)
    rows.get_by_role("button", name="Delete visitor").click()
    confirm.get_by_role("button", name="Delete").click()
    expect(rows.locator("tr[data-user=visitor]")).to_have_count(0)
    assert can_login(live_server, VISITOR["username"], VISITOR["password"]) == 401

    phone, _ = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(phone, ADMIN["username"], ADMIN["password"], "/users")
    expect(phone.locator("#users-rows tr")).to_have_count(3)
    assert no_horizontal_scroll(phone)
    shot(phone, "users-phone")


def test_account_api_keys(new_page: Any, live_server: Live, admin_key: str) -> None:
    page, _ = new_page()
    sign_in(page, ADMIN["username"], ADMIN["password"], "/account")
    expect(page.locator("#me-username")).to_have_text("admin")
    expect(page.locator("#me-email")).to_have_text(ADMIN["email"])
    expect(page.locator("#keys-rows")).to_contain_text("ui-tests")  # the fixture's key

    # A bad expiry is refused at its field (before any request); then a key that expires in 30 days.
    page.get_by_label("Key name").fill("notebook")
    page.get_by_label("Expires after (days, optional)").fill("0")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#key-form .field-error")).to_contain_text("1 to 3650")
    page.get_by_label("Expires after (days, optional)").fill("30")
    page.get_by_role("button", name="Create key").click()
    shown = page.get_by_label("Your new key")
    expect(shown).to_be_visible()
    expect(shown).to_have_value(re.compile(r"^st_"))
    expect(shown).to_be_focused()
    key = shown.input_value()
    assert key.startswith("st_") and shown.get_attribute("readonly") is not None
    expect(page.locator("#new-key-warning")).to_contain_text("shown only once")
    row = page.locator("#keys-rows tr", has_text="notebook")
    expect(row).to_contain_text(key[:11])
    expect(row).to_contain_text("active")
    status, me = live_server.api("GET", "/api/cloud/auth/me", key=key)
    assert status == 200 and me["username"] == "admin" and me["auth_method"] == "api_key"
    shot(page, "account")

    page.get_by_role("button", name="I have copied it").click()
    expect(shown).to_be_hidden()
    assert page.locator("#new-key-value").input_value() == ""

    # Revoke, after confirming: the key stops working.
    row.get_by_role("button", name="Revoke key notebook").click()
    page.get_by_role("dialog", name="Revoke key notebook?").get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    assert live_server.api("GET", "/api/cloud/auth/me", key=key)[0] == 401

    phone, _ = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(phone, ADMIN["username"], ADMIN["password"], "/account")
    expect(phone.locator("#keys-rows tr")).to_have_count(2)
    assert no_horizontal_scroll(phone)
    shot(phone, "account-phone")


def test_researcher_has_no_users_page(new_page: Any, live_server: Live, admin_key: str) -> None:
    status, body = live_server.api("POST", "/api/users", {"username": "rita", "email": "rita@example.com",
                                                          "password": "research only",
                                                          "level_names": ["researcher"]}, key=admin_key)
    assert status == 201, body
    page, watch = new_page()
    sign_in(page, "rita", "research only", "/account")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Datasets")).to_be_visible()
    expect(nav.get_by_role("link", name="Users")).to_have_count(0)
    watch.expect("403")
    response = page.goto("/users")
    assert response is not None and response.status == 403
    expect(page.locator("main")).to_contain_text("user.manage")

    # Their own account page works, and they may make a key for themselves.
    page.goto("/account")
    expect(page.locator("#me-levels")).to_have_text("researcher")
    page.get_by_label("Key name").fill("rita's script")
    page.get_by_role("button", name="Create key").click()
    shown = page.get_by_label("Your new key")
    expect(shown).to_have_value(re.compile(r"^st_"))  # filled once the server has answered
    key = shown.input_value()
    status, me = live_server.api("GET", "/api/cloud/auth/me", key=key)
    assert status == 200 and me["username"] == "rita"
