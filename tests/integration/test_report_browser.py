"""`envctl report` in a real browser: from the environments page to a failed run's failing cell.

A real staging pipeline (Docker Engine, registry, papermill in the image) passes a first
commit and fails a second whose notebook prints markup and tries to load from the
network; the report of that ledger is opened from file:// in headless chromium.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests import minirepo
from tests.browser import artifacts_dir, chromium, requested_urls
from tests.helpers import envctl

pytestmark = pytest.mark.integration

# Untrusted text from a notebook's outputs and from a pin reason: shown, never run or loaded.
PRINTED = "<script>document.title='pwned'</script><b>bold?</b>"
SHOWN_HTML = "<img src='http://203.0.113.7/pixel.png'><script>document.title='pwned'</script>"
REASON = "<img src=http://203.0.113.8/x onerror=alert(1)> incident 42"


def _first_cell(source: str) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": [source]}


@pytest.fixture
def failed_run(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A ledger with a passing then a failing staging run of one image, production pinned."""
    mini = minirepo.make(tmp_path)
    env = {**mini.env(tmp_path / "state"), "ENVCTL_ACTOR": "tester"}
    try:
        first = minirepo.git(mini.path, "rev-parse", "HEAD")
        passed = envctl("pipeline", "run", "--branch", "staging", "--rev", first, cwd=mini.path, env=env)
        assert passed.returncode == 0, passed.stderr
        promoted = envctl("promote", f"{mini.image}.production", "--rev", first, cwd=mini.path, env=env)
        assert promoted.returncode == 0, promoted.stderr

        path = f"test-notebooks/{mini.image}/greet.ipynb"
        notebook = json.loads(mini.read(path))
        notebook["cells"][0]["source"] = ["expected = 'bye'"]
        notebook["cells"].insert(
            1,
            _first_cell(
                f"from IPython.display import HTML, display\nprint({PRINTED!r})\ndisplay(HTML({SHOWN_HTML!r}))"
            ),
        )
        mini.write(path, json.dumps(notebook))
        broken = mini.commit("break the test")
        failed = envctl(
            "pipeline", "run", "--branch", "staging", "--rev", broken, "--json", cwd=mini.path, env=env
        )
        assert failed.returncode == 1, failed.stderr
        record = json.loads(failed.stdout)
        pinned = envctl("pin", f"{mini.image}.production", "--reason", REASON, cwd=mini.path, env=env)
        assert pinned.returncode == 0, pinned.stderr

        site = tmp_path / "site"
        report = envctl("report", "--out", str(site), cwd=mini.path, env=env)
        assert report.returncode == 0, report.stderr
        assert report.stdout.strip() == (site / "index.html").as_uri()
        yield {"site": site, "image": mini.image, "run_id": record["run_id"], "sha": broken}
    finally:
        minirepo.remove_local_images(f"localhost:5000/{mini.image}")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, None))
        self.found += [(tag, v) for k, v in attrs if k in {"src", "href", "action", "srcset"}]


def _tags(text: str) -> list[tuple[str, str | None]]:
    """(tag, None) per tag and (tag, URL) per src/href/action it carries; data: images allowed."""
    parser = _Links()
    parser.feed(text)
    return [(t, v) for t, v in parser.found if not (t == "img" and v and v.startswith("data:image/"))]


def _no_network(driver: Any) -> None:
    """The page loaded nothing but itself, ran no script and broke no content rule."""
    urls = requested_urls(driver)
    assert urls and all(u.startswith("file://") for u in urls), urls
    assert driver.execute_script("return document.scripts.length") == 0
    assert driver.title != "pwned"
    violations = [
        e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]
    ]
    assert not violations, violations


def test_from_environments_to_the_failing_cell(failed_run: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    shots = artifacts_dir("report-browser")
    site: Path = failed_run["site"]
    image, run_id = failed_run["image"], failed_run["run_id"]
    with chromium() as driver:
        driver.get((site / "index.html").as_uri())
        assert driver.title.startswith("Environments")
        rows = {
            r.find_element(By.TAG_NAME, "td").text: r
            for r in driver.find_elements(By.CSS_SELECTOR, "tbody tr")
        }
        production = rows[f"{image}.production"].text
        assert "pinned: <img src=http://203.0.113.8/x onerror=alert(1)> incident 42" in production
        assert "missing" not in production and "in sync" in production  # drift read from the registry
        assert "passed" in production  # the evidence of the commit it names, not the later failure
        driver.save_screenshot(str(shots / "1-environments.png"))
        _no_network(driver)

        driver.find_element(By.LINK_TEXT, run_id).click()
        assert driver.title.startswith(f"Pipeline run {run_id}")
        verdict = driver.find_element(By.XPATH, f"//tr[td[1][normalize-space()='{image}']]")
        assert "failed" in verdict.text and "tests failed, staging unchanged" in verdict.text
        assert "FAIL test-notebooks/" in driver.find_element(By.TAG_NAME, "pre").text  # the run's log
        driver.save_screenshot(str(shots / "2-pipeline-run.png"))
        _no_network(driver)

        verdict.find_element(By.LINK_TEXT, "failed").click()
        assert driver.title.startswith(f"Test run {run_id}.{image}")
        notebook_row = driver.find_element(By.XPATH, "//tr[td[3][normalize-space()='failed']]")
        assert "cell 2, In [3], line 1" in notebook_row.text
        junit = driver.find_element(By.LINK_TEXT, "junit.xml").get_attribute("href")
        assert junit.startswith("file://") and Path(junit.removeprefix("file://")).is_file()
        driver.save_screenshot(str(shots / "3-test-run.png"))
        _no_network(driver)

        notebook_row.find_element(By.PARTIAL_LINK_TEXT, "greet.ipynb").click()
        hint = driver.find_element(By.CLASS_NAME, "hint")
        assert hint.is_displayed()
        assert "an assertion failed at cell 2, line 1" in hint.text
        assert "AssertionError" in hint.text
        driver.save_screenshot(str(shots / "4-notebook.png"))
        hint.find_element(By.LINK_TEXT, "go to the failing cell").click()
        failing = driver.find_element(By.ID, "failing-cell")
        assert "failing" in failing.get_attribute("class").split()
        assert "failed here" in failing.text and "== expected" in failing.text
        assert driver.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight;",
            failing,
        )
        assert failing.value_of_css_property("border-top-color") == "rgba(179, 38, 30, 1)"  # marked in red
        marked = driver.find_elements(By.CSS_SELECTOR, ".cell.failing")
        assert len(marked) == 1
        printed = driver.find_element(
            By.XPATH, "//div[contains(@class,'cell')][.//pre[contains(., 'print(')]]"
        )
        assert PRINTED in printed.text  # the output shown as text, not as markup
        assert "<IPython.core.display.HTML object>" in printed.text
        driver.save_screenshot(str(shots / "5-failing-cell.png"))
        _no_network(driver)

    # Every page, not only those clicked through: no tag loads or links out of the site.
    for page in site.rglob("*.html"):
        tags = _tags(page.read_text())
        assert "script" not in {t for t, _ in tags}, page
        outside = [v for _, v in tags if v and re.match(r"^([a-z][a-z0-9+.-]*:|//)", v, re.I)]
        assert not outside, (page, outside)
