"""The job page on a real training run: a tiny PixArt trains on CPU in a trainer process started through the
API, and the page shows it live: the chart gains points, checkpoint-now lists a checkpoint, progress reaches
100 %, validation images fill the prompt × step grid (with a lightbox). A server restart mid-run drops the event
stream; the page reconnects from the last event id and misses or repeats nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import ADMIN, Live, login, shot, sign_in

pytest.importorskip("simpletuner_pixart")

ENV = "ui-job"
RUN = {"--max_train_steps": 80, "--validation_step_interval": 40, "--checkpoint_step_interval": 0,
       "--checkpoints_total_limit": None, "--validation_num_inference_steps": 4, "--lr_warmup_steps": 5}


def start_job(page: Any, preview_decoder: Path) -> str:
    """Create the environment from the tiny example and start it, all through the pages (with validation
    previews decoded by a tiny random-init AutoencoderTiny)."""
    page.goto("/environments")
    page.get_by_label("Start from").select_option("tiny-pixart")
    page.get_by_label("Name", exact=True).fill(ENV)
    page.get_by_role("button", name="Create environment").click()
    page.wait_for_url(f"**/environments/{ENV}")
    page.get_by_role("tab", name="Raw JSON").click()
    raw = page.get_by_label("Config as JSON")
    previews = {"--validation_preview": True, "--validation_preview_steps": 2,
                "--validation_preview_decoder": str(preview_decoder)}
    raw.fill(json.dumps({**json.loads(raw.input_value()), **RUN, **previews}, indent=2))
    page.get_by_role("button", name="Start training").click()  # activates, then starts with the changes
    page.wait_for_url(re.compile(r".*/jobs/[\w-]+$"))
    return page.url.rsplit("/", 1)[1]


def steps_shown(page: Any) -> int:
    text = page.locator("#st-step").text_content() or ""
    match = re.match(r"(\d+)/", text)
    return int(match.group(1)) if match else 0


def test_job_page_follows_a_real_run(new_page: Any, live_server: Live, admin_key: str,
                                     tiny_taesd_dir: Path) -> None:
    page, watch = new_page(viewport={"width": 1280, "height": 900})
    login(page, ADMIN["username"], ADMIN["password"])
    job_id = start_job(page, tiny_taesd_dir)
    page.wait_for_selector("body[data-ready='1']")
    assert live_server.api("GET", f"/api/jobs/{job_id}", key=admin_key)[1]["config"]["--max_train_steps"] == 80
    page.wait_for_function("() => Number(document.querySelector('#chart').dataset.points) >= 3", timeout=120_000)

    page.get_by_role("button", name="Checkpoint now").click()
    page.get_by_text("Checkpoint: requested").wait_for()
    page.wait_for_selector("#checkpoint-table tbody tr", timeout=120_000)
    row = page.locator("#checkpoint-table tbody tr").first
    assert re.match(r"checkpoint-\d+", row.locator("td").first.text_content() or "")
    assert "KB" in (row.locator("td").nth(1).text_content() or "") or "MB" in (row.locator("td").nth(1).text_content() or "")

    # a server restart mid-run: the stream drops, the page says so, then resumes from the last event id
    before = steps_shown(page)
    watch.expect("ERR_CONNECTION_REFUSED")  # requests made while the server is down
    watch.expect("status of 502")
    live_server.restart()
    page.wait_for_function(f"() => (document.querySelector('#st-step').textContent.split('/')[0]|0) > {before}",
                           timeout=120_000)
    page.wait_for_function("() => ['live', 'finished'].includes(document.querySelector('#live').textContent)",
                           timeout=30_000)  # reconnected (or already at the end of the run)

    page.wait_for_function("() => document.querySelector('#st-percent').textContent === '100 %'", timeout=180_000)
    page.wait_for_selector("#job-state .state-completed", timeout=60_000)
    assert page.locator("#live").text_content() == "finished"
    assert page.locator("#st-rate").text_content() != "–"  # it/s from the live events
    points = int(page.locator("#chart").get_attribute("data-points") or 0)
    assert points == 80  # every step once: nothing lost or repeated across the restart

    page.wait_for_selector("#validation thead th:text-is('step 80')", timeout=60_000)
    headers = page.locator("#validation thead th").all_text_contents()
    assert headers == ["prompt", "step 0", "step 40", "step 80", "live preview"]  # base model at 0, each interval
    assert page.locator("#validation tbody th").all_text_contents() == ["validation", "unconditional"]
    # intermediate previews streamed in over SSE (data URLs, never stored as files) and the last one stays
    preview = page.locator("#validation .preview-cell img").first
    assert (preview.get_attribute("src") or "").startswith("data:image/png;base64,")
    shot(page, "job")
    page.locator("#validation tbody tr").first.locator("button.img").nth(1).click()  # step 40
    page.wait_for_selector("#lightbox[open]")
    page.wait_for_function("() => document.querySelector('#lb-img').complete && "
                           "document.querySelector('#lb-img').naturalWidth > 0")
    page.keyboard.press("ArrowRight")
    assert page.locator("#lb-title").text_content() == "validation · step 80"
    page.keyboard.press("Escape")
    assert page.locator("#lightbox[open]").count() == 0

    log_ids = page.locator("#log li").count()
    assert log_ids > 10
    # the checkpoint download is a zip
    href = page.locator("#checkpoint-table a").first.get_attribute("href")
    response = page.request.get(href)
    assert response.status == 200 and response.body()[:2] == b"PK"

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
    page.wait_for_function("() => document.documentElement.scrollWidth <= 390")
    shot(page, "job-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.goto("/jobs")
    page.wait_for_selector(f'tr[data-job="{job_id}"] .state-completed')
    shot(page, "jobs")
    page.locator(f'#jobs-table a[href="/jobs/{job_id}"]').click()  # the jobs list links the job
    page.wait_for_url(f"**/jobs/{job_id}")
    page.wait_for_selector("body[data-ready='1']")


def test_job_page_of_an_unknown_job_says_so(new_page: Any, live_server: Live, admin_key: str) -> None:
    page, watch = new_page()
    login(page, ADMIN["username"], ADMIN["password"])
    watch.expect("404")
    page.goto("/jobs/20990101-000000-abcdef")
    page.get_by_text("No such job").wait_for()


def test_a_researcher_sees_neither_the_admins_job_nor_the_users_page(new_page: Any, live_server: Live,
                                                                      admin_key: str) -> None:
    status, jobs = live_server.api("GET", "/api/jobs", key=admin_key)
    assert status == 200 and jobs["jobs"], "runs after the training test, which leaves the admin's job"
    job_id = jobs["jobs"][0]["job_id"]
    status, _ = live_server.api("POST", "/api/users", {"email": "rita@example.com", "username": "rita",
                                                      "password": "rita's password", "level_names": ["researcher"]},
                                admin_key)
    assert status == 201
    page, watch = new_page()
    login(page, "rita", "rita's password")
    page.get_by_text("No jobs yet").wait_for()  # the admin's job is not listed
    assert page.locator("nav a", has_text="Users").count() == 0
    assert page.locator("#limits-card").is_hidden() and page.locator("#workers-card").is_hidden()
    watch.expect("404")
    watch.expect("403")
    page.goto(f"/jobs/{job_id}")
    page.get_by_text("No such job").wait_for()
    response = page.goto("/users")
    assert response is not None and response.status == 403
    page.get_by_text("user.manage").wait_for()


def test_admin_sets_the_concurrency_limits_on_the_jobs_page(new_page: Any, live_server: Live,
                                                           admin_key: str) -> None:
    page, watch = new_page()
    sign_in(page, ADMIN["username"], ADMIN["password"], "/jobs")
    page.wait_for_selector("#limits-card:not(.hidden)")
    page.get_by_label("Max concurrent jobs", exact=True).fill("3")
    page.get_by_role("button", name="Save limits").click()
    page.get_by_text("Limits saved").wait_for()
    status, limits = live_server.api("GET", "/api/queue/concurrency", key=admin_key)
    assert status == 200 and limits["local_job_max_concurrent"] == 3, limits
    watch.expect("status of 422")
    page.get_by_label("Max concurrent jobs", exact=True).fill("0")
    page.get_by_role("button", name="Save limits").click()
    field = page.get_by_label("Max concurrent jobs", exact=True)
    page.wait_for_function("() => document.querySelector('#lim-job').getAttribute('aria-invalid') === 'true'")
    assert field.get_attribute("aria-invalid") == "true"
    assert live_server.api("GET", "/api/queue/concurrency", key=admin_key)[1]["local_job_max_concurrent"] == 3
    page.get_by_label("Max concurrent jobs", exact=True).fill("")  # back to unlimited
    page.get_by_role("button", name="Save limits").click()
    page.wait_for_function("() => !document.querySelector('#lim-job').hasAttribute('aria-invalid')")
    assert live_server.api("GET", "/api/queue/concurrency", key=admin_key)[1]["local_job_max_concurrent"] is None


def test_job_page_survives_a_failed_first_read_and_shows_a_commands_state(new_page: Any, live_server: Live,
                                                                          admin_key: str) -> None:
    status, jobs = live_server.api("GET", "/api/jobs", key=admin_key)
    assert status == 200 and jobs["jobs"], "runs after the training test, which leaves the admin's job"
    job_id = jobs["jobs"][0]["job_id"]
    page, watch = new_page()
    login(page, ADMIN["username"], ADMIN["password"])
    # a first read that fails: the page says so, still follows the run, and is ready
    watch.expect("status of 500")
    page.route("**/api/training/metrics?*", lambda route: route.fulfill(
        status=500, json={"error": {"message": "metrics are unavailable"}}))
    page.goto(f"/jobs/{job_id}")
    page.wait_for_selector("body[data-ready='1']")
    assert "could not load the job: metrics are unavailable" in (page.locator("#job-meta").text_content() or "")
    page.wait_for_function("() => document.querySelector('#live').textContent === 'finished'")
    page.unroute("**/api/training/metrics?*")

    # a command's answer is shown at once ("stopping"), after a confirmation dialog (Esc answers no)
    def running(route: Any) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "state": "running"})

    page.route(f"**/api/jobs/{job_id}", running)
    page.route("**/api/training/events/stream?*", lambda route: route.fulfill(
        status=200, content_type="text/event-stream", body="event: end\ndata: {}\n\n"))
    stops: list[str] = []
    page.route("**/api/training/stop", lambda route: (stops.append(route.request.method), route.fulfill(
        json={"job_id": job_id, "state": "stopping"})))
    page.goto(f"/jobs/{job_id}")
    page.wait_for_selector("body[data-ready='1'] #job-state .state-running")
    assert page.locator("#st-rate").text_content() != "–"  # it/s from the job's progress
    page.locator("#cmd-stop").click()
    page.get_by_role("dialog", name="Stop this job?").wait_for()
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.querySelector('dialog[open]') && document.activeElement.id === 'cmd-stop'")
    assert stops == []
    page.locator("#cmd-stop").click()
    page.get_by_role("dialog", name="Stop this job?").get_by_role("button", name="Stop").click()
    page.get_by_text("Stop: requested (stopping)").wait_for()
    page.wait_for_selector("#job-state .state-stopping")
    assert stops == ["POST"]
