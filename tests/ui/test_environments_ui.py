"""The environments pages in a real browser: create from the tiny PixArt example (and blank), the list, the
config form (edit, save, reload), field errors from validate and start shown at their fields, the raw JSON view
and the dataloader, a stored-XSS probe shown as text, ownership (a researcher cannot save the admin's
environment) and a viewer without the create form. No training is started here."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ui_helpers import ADMIN, Live, expect, shot
from ui_helpers import login as page_login

pytest.importorskip("simpletuner_pixart")

ENV = "ui-pixart"
XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"
RESEARCHER = {"email": "rita@example.com", "username": "rita", "password": "researcher password",
              "level_names": ["researcher"]}
FORBIDDEN = f"Environment '{ENV}' belongs to another user; only its owner or an admin may change it"
VIEWER = {"email": "vic@example.com", "username": "vic", "password": "viewer password", "level_names": ["viewer"]}


@pytest.fixture(scope="module")
def env_name(live_server: Live, admin_key: str) -> str:
    """The admin's tiny PixArt environment, made over the API (the page's own create is tested below)."""
    status, body = live_server.api("POST", "/api/configs/environments",
                                   {"name": ENV, "example": "tiny-pixart", "description": "made by the tests"},
                                   key=admin_key)
    assert status == 201, body
    return ENV


@pytest.fixture(scope="module")
def users(live_server: Live, admin_key: str) -> None:
    for user in (RESEARCHER, VIEWER):
        status, body = live_server.api("POST", "/api/users", user, key=admin_key)
        assert status == 201, body


def login(page: Any, username: str, password: str) -> None:
    """Sign in, and let the jobs page it lands on finish loading (navigating away mid-request would count as
    a failed request)."""
    page_login(page, username, password)
    page.wait_for_load_state("networkidle")


def open_env(page: Any, name: str) -> None:
    page.goto(f"/environments/{name}")
    page.locator("#env-body").wait_for()  # shown once the config and the field list are in


def field(page: Any, name: str) -> Any:
    return page.locator(f"#cfg-{name}")


def field_error(page: Any, name: str) -> Any:
    return page.locator(f".env-field[data-name='{name}'] .field-error")


def saved_config(live_server: Live, admin_key: str, name: str = ENV) -> dict[str, Any]:
    status, body = live_server.api("GET", f"/api/configs/{name}", key=admin_key)
    assert status == 200, body
    return body


def test_create_from_example_and_blank(new_page: Any, live_server: Live, admin_key: str, env_name: str) -> None:
    page, watch = new_page()
    watch.expect("status of 409")  # the duplicate and the bad name below are refused on purpose
    watch.expect("status of 422")
    login(page, ADMIN["username"], ADMIN["password"])
    page.goto("/environments")
    page.get_by_role("link", name=env_name).wait_for()  # the list, with the API-made one
    select = page.get_by_label("Start from")
    select.select_option("tiny-pixart")
    assert "PixArt" in page.locator("#create-example-help").text_content()

    # Errors at the field: a name that exists (409), a name that is not one (422).
    page.get_by_label("Name", exact=True).fill(env_name)
    page.get_by_role("button", name="Create environment").click()
    name_input = page.locator("#create-name")
    page.locator("#create-name[aria-invalid=true]").wait_for()
    assert "already exists" in page.locator("#create-card .field-error").text_content()
    name_input.fill("bad name!")
    page.get_by_role("button", name="Create environment").click()
    page.get_by_text("invalid environment name").first.wait_for()
    assert name_input.get_attribute("aria-invalid") == "true"

    name_input.fill("ui-from-page")
    page.get_by_label("Description (optional)").fill("created through the page")
    page.get_by_role("button", name="Create environment").click()
    page.wait_for_url("**/environments/ui-from-page")
    page.locator("#env-body").wait_for()
    assert page.locator("#env-name").text_content() == "ui-from-page"
    assert field(page, "learning_rate").input_value() == "0.001"  # the example's value
    assert page.locator("#env-description").input_value() == "created through the page"

    # Blank, for a family from the plugin list.
    page.goto("/environments")
    page.get_by_label("Start from").select_option("__blank__")
    family = page.get_by_label("Model family")
    family.wait_for()
    family.select_option("pixart_sigma")
    page.get_by_label("Name", exact=True).fill("ui-blank")
    page.get_by_role("button", name="Create environment").click()
    page.wait_for_url("**/environments/ui-blank")
    page.locator("#env-body").wait_for()

    page.goto("/environments")
    row = page.locator("tr[data-env='ui-from-page']")
    row.wait_for()
    assert "created through the page" in row.text_content()
    assert "pixart_sigma" in row.text_content() and "tiny" in row.text_content()
    assert page.locator("tr[data-env='ui-blank']").count() == 1
    shot(page, "environments")
    status, body = live_server.api("GET", "/api/configs/ui-from-page", key=admin_key)
    assert status == 200 and body["config"]["--model_flavour"] == "tiny"


def test_form_edit_save_reload(new_page: Any, live_server: Live, admin_key: str, env_name: str) -> None:
    page, _ = new_page()
    login(page, ADMIN["username"], ADMIN["password"])
    open_env(page, env_name)
    assert page.get_by_role("tab", name="Form").get_attribute("aria-selected") == "true"
    page.get_by_role("tab", name="Training").click()
    lr = page.get_by_label("--learning_rate", exact=True)
    assert lr.input_value() == "0.001"
    assert field(page, "lr_warmup_steps").is_visible()  # set in the config: shown
    assert not field(page, "adam_beta1").is_visible()  # not set: hidden until asked for

    # The filter finds a field on any tab, by name or help text.
    page.get_by_label("Find a field").fill("checkpoints_total")
    field(page, "checkpoints_total_limit").wait_for()
    assert not lr.is_visible()
    assert "Showing 1 of" in page.locator("#env-count").text_content()
    page.get_by_label("Find a field").fill("")
    lr.wait_for()

    # "Show all fields" shows the unset ones too.
    shown = page.locator(".env-field:visible").count()
    page.get_by_label("Show all fields").check()
    assert page.locator(".env-field:visible").count() > shown
    page.get_by_label("Show all fields").uncheck()

    page.get_by_role("button", name="Unset --lr_warmup_steps (use the default)").click()  # back to the default
    assert field(page, "lr_warmup_steps").input_value() == ""
    lr.fill("0.0005")
    assert page.locator("#env-dirty").text_content() == "Unsaved changes"
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator("#env-result").get_by_text("Saved.").wait_for()
    page.reload()
    page.locator("#env-body").wait_for()
    page.get_by_role("tab", name="Training").click()
    assert page.get_by_label("--learning_rate", exact=True).input_value() == "0.0005"
    config = saved_config(live_server, admin_key)["config"]
    assert config["--learning_rate"] == 0.0005
    assert config["--max_train_steps"] == 150  # untouched keys kept as they were
    assert "--adam_beta1" not in config  # fields never set are not written
    assert "--lr_warmup_steps" not in config  # nor one the user unset
    shot(page, "environment-form")


def test_validate_and_start_show_errors_at_fields(new_page: Any, live_server: Live, admin_key: str,
                                                    env_name: str) -> None:
    page, watch = new_page()
    watch.expect("status of 422")
    login(page, ADMIN["username"], ADMIN["password"])
    open_env(page, env_name)
    page.get_by_role("tab", name="Training").click()
    field(page, "max_train_steps").fill("0")
    field(page, "num_train_epochs").fill("0")
    page.get_by_role("tab", name="Basic").click()  # the error must bring its tab back
    page.get_by_role("button", name="Validate").click()
    error = field_error(page, "max_train_steps")
    error.wait_for()
    assert "exactly one of max_train_steps and num_train_epochs" in error.text_content()
    assert field(page, "max_train_steps").get_attribute("aria-invalid") == "true"
    assert field(page, "max_train_steps").is_visible()
    assert page.get_by_role("tab", name="Training").get_attribute("aria-selected") == "true"
    assert "error" in page.locator("#env-result").text_content()

    # A learning rate the model rejects: at its field; the start button's 422 lands there too.
    field(page, "max_train_steps").fill("10")
    assert field(page, "max_train_steps").get_attribute("aria-invalid") is None  # editing clears the mark
    field(page, "learning_rate").fill("-1")
    page.get_by_role("button", name="Start training").click()
    field_error(page, "learning_rate").wait_for()
    assert "must be > 0" in field_error(page, "learning_rate").text_content()
    assert field(page, "learning_rate").get_attribute("aria-invalid") == "true"
    assert page.url.endswith(f"/environments/{env_name}")  # not started
    assert live_server.api("GET", "/api/training/status", key=admin_key)[1]["job_id"] is None

    field(page, "learning_rate").fill("0.001")
    page.get_by_role("button", name="Validate").click()
    page.locator("#env-result").get_by_text("Configuration valid").wait_for()
    assert "Memory estimate" in page.locator("#env-result").text_content()
    assert page.locator("[aria-invalid=true]").count() == 0
    assert page.locator("#env-badges").get_by_text("active").is_visible()  # validate made it the active one
    status, body = live_server.api("GET", "/api/configs/active", key=admin_key)
    assert status == 200 and body["active"] == env_name
    # Validate sends the unsaved changes only; nothing was saved.
    assert saved_config(live_server, admin_key)["config"]["--max_train_steps"] == 150


def test_unset_key_waits_for_save(new_page: Any, live_server: Live, admin_key: str, env_name: str) -> None:
    """Validate and start send the changes to merge over the saved environment, which cannot remove a key: a
    saved key the user unsets must be saved first, or the saved value would still apply. Leaving the page with
    unsaved edits asks first."""
    name = "ui-unset"
    status, body = live_server.api("POST", "/api/configs/environments", {"name": name, "example": "tiny-pixart"},
                                   key=admin_key)
    assert status == 201, body
    status, body = live_server.api("PUT", f"/api/configs/{name}?mode=merge", {"config": {"--lr_scheduler": "bogus"}},
                                   key=admin_key)  # saved (a rule, not a type): validation fails on it
    assert status == 200, body
    page, _ = new_page()
    login(page, ADMIN["username"], ADMIN["password"])
    open_env(page, name)
    leaving = "() => { const e = new Event('beforeunload', {cancelable: true}); dispatchEvent(e); " \
              "return e.defaultPrevented; }"
    assert page.evaluate(leaving) is False  # nothing to lose yet
    validate = page.get_by_role("button", name="Validate")
    start = page.get_by_role("button", name="Start training")
    expect(validate).to_be_enabled()
    page.get_by_label("Find a field").fill("lr_scheduler")
    page.get_by_role("button", name="Unset --lr_scheduler (use the default)").click()
    expect(validate).to_be_disabled()  # validating now would still use the saved "bogus"
    expect(start).to_be_disabled()
    expect(page.locator("#env-removed")).to_contain_text("Save first: --lr_scheduler is removed here")
    assert page.evaluate(leaving) is True

    page.get_by_role("button", name="Save", exact=True).click()
    page.locator("#env-result").get_by_text("Saved.").wait_for()
    assert "--lr_scheduler" not in saved_config(live_server, admin_key, name)["config"]
    expect(page.locator("#env-removed")).to_be_hidden()
    expect(start).to_be_enabled()
    validate.click()
    page.locator("#env-result").get_by_text("Configuration valid").wait_for()
    assert page.evaluate(leaving) is False


def test_raw_json_round_trip(new_page: Any, live_server: Live, admin_key: str, env_name: str) -> None:
    page, watch = new_page()
    watch.expect("status of 422")
    login(page, ADMIN["username"], ADMIN["password"])
    open_env(page, env_name)
    page.get_by_role("tab", name="Form").focus()
    page.keyboard.press("ArrowRight")  # the view tabs work from the keyboard
    assert page.get_by_role("tab", name="Raw JSON").get_attribute("aria-selected") == "true"
    raw = page.get_by_label("Config as JSON")
    config = json.loads(raw.input_value())
    assert config["--model_family"] == "pixart_sigma"

    raw.fill("{ not json")
    page.get_by_role("tab", name="Form").click()  # refused: the text stays, the error is at the textarea
    assert page.get_by_role("tab", name="Raw JSON").get_attribute("aria-selected") == "true"
    assert raw.get_attribute("aria-invalid") == "true"
    assert "Not valid JSON" in page.locator("#view-raw .field-error").text_content()

    config["--seed"] = 7
    config["--lr_scheduler"] = "bogus"
    raw.fill(json.dumps(config, indent=2))
    page.get_by_role("tab", name="Form").click()
    assert field(page, "seed").input_value() == "7"
    page.get_by_role("button", name="Validate").click()
    error = field_error(page, "lr_scheduler")
    error.wait_for()
    assert "unknown lr_scheduler 'bogus'" in error.text_content()
    assert field(page, "lr_scheduler").get_attribute("aria-invalid") == "true"

    field(page, "lr_scheduler").fill("cosine")
    page.get_by_role("tab", name="Raw JSON").click()
    again = json.loads(raw.input_value())
    assert again["--lr_scheduler"] == "cosine" and again["--seed"] == 7
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator("#env-result").get_by_text("Saved.").wait_for()
    stored = saved_config(live_server, admin_key)["config"]
    assert stored["--lr_scheduler"] == "cosine" and stored["--seed"] == 7


def test_dataloader_errors_at_the_textarea(new_page: Any, live_server: Live, admin_key: str,
                                           env_name: str) -> None:
    page, watch = new_page()
    watch.expect("status of 422")
    login(page, ADMIN["username"], ADMIN["password"])
    open_env(page, env_name)
    page.get_by_role("tab", name="Dataloader").click()
    area = page.get_by_label("Dataloader (a JSON list of datasets)")
    datasets = json.loads(area.input_value())
    assert datasets[0]["id"] == "pixart-demo"
    datasets[0]["crop_style"] = "sideways"
    area.fill(json.dumps(datasets))
    page.get_by_role("button", name="Save dataloader").click()
    page.locator("#view-data .field-error").wait_for()
    assert "[0].crop_style" in page.locator("#view-data .field-error").text_content()
    assert area.get_attribute("aria-invalid") == "true"

    datasets[0]["crop_style"] = "random"
    area.fill(json.dumps(datasets))
    page.get_by_role("button", name="Save dataloader").click()
    page.locator("#env-result").get_by_text("Dataloader saved.").wait_for()
    assert saved_config(live_server, admin_key)["dataloader"][0]["crop_style"] == "random"


def test_stored_xss_probe_is_text(new_page: Any, live_server: Live, admin_key: str, env_name: str) -> None:
    page, _ = new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    login(page, ADMIN["username"], ADMIN["password"])
    open_env(page, env_name)
    page.get_by_label("Description").fill(XSS)
    page.get_by_label("Tags (comma separated)").fill(f"demo, {XSS}")
    page.get_by_role("tab", name="Validation").click()
    field(page, "validation_prompt").fill(XSS)
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator("#env-result").get_by_text("Saved.").wait_for()
    body = saved_config(live_server, admin_key)
    assert body["metadata"]["description"] == XSS
    assert body["config"]["--validation_prompt"] == XSS

    page.reload()
    page.locator("#env-body").wait_for()
    assert page.get_by_label("Description").input_value() == XSS
    page.goto("/environments")
    cell = page.locator(f"tr[data-env='{env_name}'] td.env-desc")
    cell.wait_for()
    assert XSS in cell.text_content()
    assert page.locator("img[src=x]").count() == 0
    page.wait_for_timeout(300)  # an injected handler would have fired by now
    assert dialogs == []


def test_researcher_cannot_save_the_admins_environment(new_page: Any, env_name: str, users: None) -> None:
    page, watch = new_page()
    watch.expect("status of 403")
    login(page, RESEARCHER["username"], RESEARCHER["password"])
    page.goto("/environments")
    page.get_by_role("button", name="Create environment").wait_for()  # researchers may create their own
    open_env(page, env_name)
    assert "Only its owner or an admin can save it" in page.locator("#env-owner").text_content()
    page.get_by_label("Description").fill("taken over")
    page.get_by_role("button", name="Save", exact=True).click()
    result = page.locator("#env-result")
    result.get_by_text("Not saved").wait_for()
    assert result.locator("[role=alert]").text_content() == f"Not saved: {FORBIDDEN}"
    assert page.get_by_label("Description").input_value() == "taken over"  # the edit is not lost


def test_viewer_reads_only(new_page: Any, env_name: str, users: None) -> None:
    page, _ = new_page()
    login(page, VIEWER["username"], VIEWER["password"])
    page.goto("/environments")
    page.get_by_role("link", name=env_name).wait_for()
    assert not page.locator("#create-card").is_visible()
    assert page.locator("#create-form").count() == 1 and not page.get_by_label("Start from").is_visible()
    open_env(page, env_name)
    assert not page.get_by_role("button", name="Save", exact=True).is_visible()
    assert not page.get_by_role("button", name="Validate").is_visible()
    assert not page.get_by_role("button", name="Start training").is_visible()
    assert "not change it" in page.locator("#env-owner").text_content()


def test_unknown_environment(new_page: Any, env_name: str) -> None:
    page, watch = new_page()
    watch.expect("status of 404")
    login(page, ADMIN["username"], ADMIN["password"])
    page.goto("/environments/no-such-env")
    page.get_by_text("There is no environment named").wait_for()
    assert not page.locator("#env-body").is_visible()


def test_phone_viewport(new_page: Any, env_name: str) -> None:
    page, _ = new_page(viewport={"width": 390, "height": 844})
    login(page, ADMIN["username"], ADMIN["password"])
    page.goto("/environments")
    page.get_by_role("link", name=env_name).wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "environments-phone")
    open_env(page, env_name)
    page.get_by_role("tab", name="Training").click()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    field(page, "learning_rate").wait_for()
    box = field(page, "learning_rate").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    shot(page, "environment-phone")
