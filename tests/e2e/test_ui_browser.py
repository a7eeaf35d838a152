"""The Airflow UI in a real browser (Playwright driving Debian's Chromium, no browser download) against a
real Airflow (api-server, scheduler, dag-processor, triggerer on PostgreSQL) with password login:
every DAG's trigger form shows every Param with its title and description, an invalid value is refused
by the form and creates no run, a valid one starts a run that appears in the UI and succeeds, and a
training run triggered from its form shows its model card in the run's "Model card" tab. On the same
stack, the REST API refuses invalid Params (fixed and fuzzed values) naming the Param, creating no run.
Screenshots are kept under ``artifacts/ui/`` (``RECSYS_TEST_ARTIFACTS`` to change it)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import pytest
from conftest import LAKE_DAYS
from fakes.airflow_stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.ui, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("RECSYS_TEST_ARTIFACTS", ROOT / "artifacts")) / "ui"
USER, PASSWORD = "admin", "e2e-ui-password"
DAG_IDS = [
    "recsys_extract",
    "recsys_two_tower",
    "recsys_vertex_deploy",
    "recsys_personalize",
    "recsys_personalize_events",
    "recsys_personalize_setup",
    "recsys_personalize_teardown",
]
# one field per DAG family whose value the Param's schema refuses (text fields: numbers may be clamped)
INVALID = [
    ("recsys_vertex_deploy", "machine_type", "big box"),
    ("recsys_personalize_setup", "prefix", "bad prefix!"),
    ("recsys_personalize_teardown", "prefix", "-starts-with-a-dash"),
]


def chromium() -> str:
    path = os.environ.get("RECSYS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is needed (make test installs it: apt-get install chromium)"
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, synthetic_lake):
    home = tmp_path_factory.mktemp("airflow-ui")
    lake = Path(synthetic_lake.removeprefix("file://")) / "extract"
    shutil.copytree(lake, home / "data" / "extract")  # extracted days a training run can use
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    running = AirflowStack(
        home,
        {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "RECSYS_STORAGE_ROOT": (home / "data").as_uri(),
            "AIRFLOW_CONN_RECSYS_APP": json.dumps({"conn_type": "sqlite", "host": str(home / "data" / "app.db")}),
            "RECSYS_VERTEX_PROJECT": "ui-project",
            "RECSYS_SERVING_IMAGE_URI": "europe-docker.pkg.dev/p/recsys/serving:ui",
        },
    ).start()
    try:
        answer = httpx.post(f"{running.url}/auth/token", json={"username": USER, "password": PASSWORD}, timeout=30)
        running._token = answer.json()["access_token"]  # the REST API with the same user, for the checks
        running.wait_for_dags(set(DAG_IDS))
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def page(stack):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        # bounds, not waits: on 2 cores beside the other suites a page took more than 30 s to answer a click
        tab.set_default_timeout(120_000)
        tab.set_default_navigation_timeout(120_000)
        tab.goto(stack.url)
        tab.get_by_label("Username").fill(USER)
        tab.get_by_label("Password").fill(PASSWORD)
        tab.screenshot(path=SHOTS / "00-login.png")
        tab.get_by_role("button", name="Sign in").click()
        tab.wait_for_url(f"{stack.url}/")
        yield tab
        browser.close()


def trigger_form(page, stack, dag_id: str):
    page.goto(f"{stack.url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    return dialog


def test_login_and_every_trigger_form_shows_every_param(page, stack):
    for n, dag_id in enumerate(DAG_IDS, start=1):
        dialog = trigger_form(page, stack, dag_id)
        text = dialog.inner_text()
        params = stack.api("GET", f"/dags/{dag_id}/details").json()["params"]
        for name, spec in params.items():
            assert spec["schema"]["title"] in text, (dag_id, name)
            assert spec["description"].split("\n")[0][:60] in text, (dag_id, name)
            if spec["schema"].get("type") not in ("object", "array"):  # those get a JSON/list editor
                assert dialog.locator(f'[name="element_{name}"]').count() == 1, (dag_id, name)
        page.screenshot(path=SHOTS / f"{n:02d}-form-{dag_id}.png", full_page=True)
        page.keyboard.press("Escape")


@pytest.mark.parametrize(("dag_id", "param", "value"), INVALID, ids=[case[0] for case in INVALID])
def test_the_form_refuses_an_invalid_value(page, stack, dag_id, param, value):
    before = len(stack.runs(dag_id))
    dialog = trigger_form(page, stack, dag_id)
    dialog.locator(f'[name="element_{param}"]').fill(value)
    submit = dialog.get_by_role("button", name="Trigger")
    if submit.is_enabled():  # refused by the API's validation, shown in the form
        submit.click()
        page.get_by_text("Failed to Trigger Dag").wait_for()
    # else refused by the form itself: the button stays disabled (e.g. a required field still empty)
    page.screenshot(path=SHOTS / f"20-refused-{dag_id}.png")
    assert dialog.is_visible()  # still open, the value still there to correct
    assert len(stack.runs(dag_id)) == before
    page.keyboard.press("Escape")


def test_a_valid_trigger_starts_a_run_that_appears_and_succeeds(page, stack):
    dialog = trigger_form(page, stack, "recsys_vertex_deploy")
    dialog.locator('[name="element_model_dir"]').fill("file:///nowhere/model")
    dialog.locator('[id="switch:element_dry_run"]').click()  # plan only: no cloud call
    dialog.get_by_role("button", name="Trigger").click()
    page.wait_for_url("**/dags/recsys_vertex_deploy/runs/**")
    run_id = unquote(page.url.rsplit("/runs/", 1)[1])
    run = stack.wait_for_run("recsys_vertex_deploy", run_id, timeout=300)
    assert run["state"] == "success", stack.task_states("recsys_vertex_deploy", run_id)
    assert run["conf"]["dry_run"] is True and run["conf"]["model_dir"] == "file:///nowhere/model"
    page.goto(f"{stack.url}/dags/recsys_vertex_deploy/runs")
    page.get_by_text(run_id).first.wait_for()
    page.get_by_text("Success").first.wait_for()
    page.screenshot(path=SHOTS / "30-run-succeeded.png")


def test_a_training_run_triggered_from_the_form_shows_its_model_card(page, stack):
    dialog = trigger_form(page, stack, "recsys_two_tower")
    dialog.locator('[name="element_end_day"]').fill(LAKE_DAYS[-1])
    dialog.locator('[name="element_window_days"]').fill(str(len(LAKE_DAYS)))
    dialog.locator('[name="element_epochs"]').fill("2")
    dialog.get_by_role("button", name="Trigger").click()
    page.wait_for_url("**/dags/recsys_two_tower/runs/**")
    run_id = unquote(page.url.rsplit("/runs/", 1)[1].split("/")[0])
    run = stack.wait_for_run("recsys_two_tower", run_id, timeout=600)
    assert run["state"] == "success", stack.task_states("recsys_two_tower", run_id)
    page.goto(f"{stack.url}/dags/recsys_two_tower/runs/{quote(run_id, safe='')}")
    page.get_by_role("link", name="Model card").click()
    card = page.frame_locator("iframe")
    card.locator("h1", has_text="Recommender").wait_for()
    card.get_by_text("Gate decision").wait_for()
    card.locator("table").first.wait_for()  # the metrics table rendered, not raw markdown
    page.screenshot(path=SHOTS / "40-model-card.png", full_page=True)
    anonymous = httpx.get(f"{stack.url}/recsys/model-card", params={"dag_id": "recsys_two_tower", "run_id": run_id})
    assert anonymous.status_code in (401, 403)  # the card needs a signed-in user allowed to read the DAG


# The Params' contract through the REST API, on the same stack (no browser): what the form refuses, the API
# refuses too, naming the Param.
def test_invalid_params_are_rejected_through_the_rest_api(stack):
    answer = stack.api(
        "POST", "/dags/recsys_extract/dagRuns", json={"logical_date": None, "conf": {"max_bad_fraction": 5}}
    )
    assert answer.status_code == 400
    assert "max_bad_fraction" in answer.json()["detail"] and "maximum of 1" in answer.json()["detail"]
    answer = stack.api(
        "POST", "/dags/recsys_personalize/dagRuns", json={"logical_date": None, "conf": {"training_mode": "PARTIAL"}}
    )
    assert answer.status_code == 400 and "is not one of" in answer.json()["detail"]


def _invalid(schema: dict):
    """Values a Param's JSON schema refuses (an empty strategy where none is generated here)."""
    import re

    from hypothesis import strategies as st

    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    choices = []
    if "enum" in schema:
        choices.append(st.text(max_size=12).filter(lambda v: v not in schema["enum"]))
    if "integer" in kinds or "number" in kinds:
        if "minimum" in schema:
            choices.append(st.integers(max_value=int(schema["minimum"]) - 1))
        if "maximum" in schema:
            choices.append(st.integers(min_value=int(schema["maximum"]) + 1))
        if "exclusiveMinimum" in schema:
            choices.append(st.just(schema["exclusiveMinimum"]))
        choices.append(st.text(max_size=8))
    if "integer" in kinds:
        choices.append(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()))
    if kinds == ["boolean"]:
        choices.append(st.one_of(st.integers(), st.text(max_size=8)))
    if "string" in kinds:
        choices.append(st.one_of(st.booleans(), st.integers(), st.lists(st.integers(), min_size=1, max_size=2)))
        if "pattern" in schema:
            choices.append(st.text(max_size=20).filter(lambda v: not re.search(schema["pattern"], v)))
        if schema.get("format") == "date":
            choices.append(st.sampled_from(["2026-13-01", "yesterday", "2026/11/01", "2026-11-31"]))
    if "array" in kinds:
        item_enum = schema.get("items", {}).get("enum")
        if item_enum:
            choices.append(st.lists(st.text(max_size=8).filter(lambda v: v not in item_enum), min_size=1, max_size=2))
        choices.append(st.text(max_size=8))
    return st.one_of(*choices) if choices else st.nothing()


def test_fuzzed_invalid_params_are_refused_naming_the_param(stack):
    """Every Param of every DAG, with values its schema refuses (hypothesis): 400 naming the Param, no run."""
    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import strategies as st
    from jsonschema import Draft7Validator, FormatChecker

    every_dag = set(DAG_IDS)
    params = {}
    for dag_id in sorted(every_dag):
        details = stack.api("GET", f"/dags/{dag_id}/details").json()
        for name, spec in (details.get("params") or {}).items():
            schema = spec.get("schema") or {}
            if not _invalid(schema).is_empty:
                params[(dag_id, name)] = schema
    assert len(params) >= 40  # every DAG's form, not a few
    runs_before = {dag_id: len(stack.runs(dag_id)) for dag_id in every_dag}
    cases = st.sampled_from(sorted(params)).flatmap(lambda key: st.tuples(st.just(key), _invalid(params[key])))

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=cases)
    def refused(case):
        (dag_id, name), value = case
        checker = Draft7Validator(params[(dag_id, name)], format_checker=FormatChecker())
        assume(not checker.is_valid(value))
        answer = stack.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {name: value}})
        assert answer.status_code == 400, (dag_id, name, value, answer.text[:300])
        assert name in answer.json()["detail"], (dag_id, name, value, answer.json()["detail"])

    refused()
    assert {dag_id: len(stack.runs(dag_id)) for dag_id in every_dag} == runs_before
