"""First run and sign-in through the pages: setup creates the admin, logout ends the session, login returns,
a wrong password is shown at the form, and a cross-origin login attempt is refused."""

from __future__ import annotations

from typing import Any

from ui_helpers import ADMIN, Live, login, shot


def test_first_admin_setup_login_logout(new_page: Any, live_server: Live) -> None:
    page, watch = new_page()
    page.goto("/")
    page.wait_for_url("**/setup")  # no admin yet: every page leads to setup
    shot(page, "setup")
    page.get_by_label("Username").fill(ADMIN["username"])
    page.get_by_label("Email").fill(ADMIN["email"])
    page.get_by_label("Password (8 characters or more)").fill(ADMIN["password"])
    page.get_by_role("button", name="Create admin").click()
    page.wait_for_url("**/jobs")
    assert page.locator("#who-user").text_content() == "admin"
    cookie = next(c for c in page.context.cookies() if c["name"] == "simpletuner_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    page.goto("/jobs")  # signed out: the page redirects to login, keeping where to go back to
    page.wait_for_url("**/login?next=/jobs")
    shot(page, "login")

    watch.expect("status of 401")  # the wrong password below, and nothing else
    page.locator("#login-username").fill("admin")
    page.locator("#login-password").fill("wrong password!")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Invalid username or password").wait_for()
    login(page, ADMIN["username"], ADMIN["password"])
    assert page.locator("nav a[aria-current=page]").text_content() == "Jobs"


def test_setup_page_is_gone_once_an_admin_exists(new_page: Any, live_server: Live) -> None:
    page, _ = new_page()
    page.goto("/setup")
    page.wait_for_url("**/login")
    status, _ = live_server.api("POST", "/api/cloud/auth/setup/first-admin", ADMIN)
    assert status == 409
