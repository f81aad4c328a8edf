"""The MLflow UI, in a real headless Chromium, shows `@champion` where nightshift put it.

The page of the registered model is served by a real `mlflow server` (tests/conftest.py, on an
SQLite and on a PostgreSQL backend store); after `nightshift rollback` the UI's version list and
the version pages show the alias on the version before. The UI is a React app, so every check
waits for the rendered text; a failed wait saves a screenshot and the page's text.
"""

import json
import subprocess
import sys
from contextlib import chdir
from pathlib import Path

import pytest
import yaml

from pipelines.common import params as params_mod
from registry import mlflow_registry as reg
from tests.conftest import WAIT_S, write_tiny_params
from tests.test_registry import register_version

# An alias chip: a "tag" component titled with the alias name (buttons beside it have titles too).
ALIAS_TAG = "[data-component-type=tag][title]"


def wait_until(driver, condition, what: str, shots: Path):
    """condition(driver) -> value or None, retried until truthy; on a timeout, a screenshot."""
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(d):
        try:
            return condition(d)
        except WebDriverException:  # an element re-rendered under us: look again
            return None

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(attempt)
    except TimeoutException:
        shots.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() else "-" for c in what).strip("-")[:60]
        driver.save_screenshot(str(shots / f"{name}.png"))
        (shots / f"{name}.txt").write_text(driver.find_element("tag name", "body").text)
        pytest.fail(f"the MLflow UI never showed {what} in {WAIT_S} s; screenshot and page text "
                    f"in {shots}", pytrace=False)


def versions_with_alias(driver, alias: str) -> list[str] | None:
    """On the model page: the version numbers of the table rows that show `@alias`."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "[data-testid=model-version-table] [role=row]")
    if len(rows) < 2:  # the header row alone: the versions are not rendered yet
        return None
    found = []
    for row in rows:
        if row.find_elements(By.CSS_SELECTOR, f'{ALIAS_TAG}[title="{alias}"]'):
            link = row.find_element(By.CSS_SELECTOR, 'a[href*="/versions/"]')
            assert link.text.strip() == f"Version {link.get_attribute('href').rsplit('/', 1)[-1]}"
            found.append(link.get_attribute("href").rsplit("/", 1)[-1])
    return found


def version_page_aliases(driver) -> list[str] | None:
    """On a version's page: the aliases listed in its "Aliases" field."""
    from selenium.webdriver.common.by import By

    for item in driver.find_elements(By.CSS_SELECTOR, "[data-testid=descriptions-item]"):
        label = item.find_element(By.CSS_SELECTOR, "[data-testid=descriptions-item-label]").text
        if label.strip() == "Aliases":
            content = item.find_element(By.CSS_SELECTOR, "[data-testid=descriptions-item-content]")
            return [tag.get_attribute("title") for tag in content.find_elements(By.CSS_SELECTOR, ALIAS_TAG)]
    return None


def test_the_model_page_shows_champion_on_the_version_rollback_returned_to(
        tmp_path, mlflow_server, browser):
    model = "adapter-ui"
    write_tiny_params(tmp_path / "params.yaml", **{"registry.tracking_uri": mlflow_server,
                                                   "registry.model_name": model})
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {}}))
    with chdir(tmp_path):
        p = params_mod.load("params.yaml").registry
        for day in ("01", "02", "03"):
            register_version(p, tmp_path, f"2026-01-{day}")
    shots = tmp_path / "screenshots"
    model_page = f"{mlflow_server}/#/models/{model}"

    browser.get(model_page)
    before = wait_until(browser, lambda d: versions_with_alias(d, "champion"),
                        "@champion on a version row", shots)
    assert before == ["3"]

    out = subprocess.run([sys.executable, "-m", "flows.cli", "rollback", "--reason", "answers got worse",
                          "--workspace", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert reg.resolve_alias(p).version == "2"

    browser.get(model_page)
    browser.refresh()  # same URL with a hash: force a fresh load, not the cached React state
    after = wait_until(browser, lambda d: (v := versions_with_alias(d, "champion")) and v != ["3"] and v,
                       "@champion moved off version 3", shots)
    assert after == ["2"]

    browser.get(f"{model_page}/versions/2")
    browser.refresh()
    wait_until(browser, lambda d: version_page_aliases(d) == ["champion"],
               "@champion in the Aliases of version 2's page", shots)

    browser.get(f"{model_page}/versions/3")
    browser.refresh()
    # The rolled-back version carries the reason as a tag; once that shows, its aliases are loaded.
    wait_until(browser, lambda d: "answers got worse" in d.find_element("tag name", "body").text,
               "the rolled_back reason on version 3's page", shots)
    assert version_page_aliases(browser) == []
    moves = json.loads(subprocess.run([sys.executable, "-m", "flows.cli", "history", "--json",
                                       "--workspace", str(tmp_path)], capture_output=True, text=True).stdout)
    assert (moves[-1]["kind"], moves[-1]["from_version"], moves[-1]["to_version"]) == ("rollback", "3", "2")
