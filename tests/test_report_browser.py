"""report.html in a real browser (headless Chromium): it renders, with every section, the verdict table (every cell
linked to a section), the seed blog's panel and no console error or failed load."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_reports import SECTIONS, make_run

from bnparity.reports.build import build_report

CHROMIUM = Path("/usr/bin/chromium")
# Chromium's console messages and failed loads, as --enable-logging=stderr prints them.
PROBLEM = re.compile(r":CONSOLE[:(]|Failed to load resource|net::ERR_|Uncaught ")


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", *extra, url],
        capture_output=True, text=True, timeout=120, check=False)


def problems(stderr: str) -> list[str]:
    """The lines of Chromium's log that report a console message or a failed load."""
    return [line for line in stderr.splitlines() if PROBLEM.search(line)]


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip("chromium is not installed: apt-get install chromium")
    return CHROMIUM


def test_report_renders_without_console_errors(chromium, tmp_path) -> None:
    report = build_report(make_run(tmp_path))
    url = report.html.resolve().as_uri()
    dom = _chromium(url, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert problems(dom.stderr) == []
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom.stdout
    assert dom.stdout.count('<img src="data:image/png;base64,') == 3  # curves, overlay and the seed blog's
    verdict = re.search(r'<section id="verdict">(.*?)</section>', dom.stdout, re.S).group(1)
    rows = report.summary["verdict"].rows
    cells = re.findall(r'<td class="[^"]+" title="[^"]*"><a href="#([^"]+)">([^<]+)</a></td>', verdict)
    assert [text for _, text in cells] == [c.text for row in rows for c in row.cells]
    assert all(f'<section id="{target}">' in dom.stdout for target, _ in cells)
    seed = re.search(r'<figure id="figure-seed-blog"><img src="data:image/png;base64,([^"]+)"', dom.stdout)
    assert seed and base64.b64decode(seed.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    shot = tmp_path / "page.png"
    run = _chromium(url, tmp_path / "profile", "--window-size=1280,2000", f"--screenshot={shot}")
    assert run.returncode == 0 and problems(run.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000  # a blank page is ~5 kB


def test_the_console_check_catches_an_error(chromium, tmp_path) -> None:
    """The detector itself: a page that logs an error to the console is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("boom")</script></body></html>')
    dom = _chromium(page.as_uri(), tmp_path / "profile", "--dump-dom")
    assert any('"boom"' in line for line in problems(dom.stderr))


def test_the_paper_presets_overlay_renders(chromium, tmp_path) -> None:
    """A run of the seed blog's setup: its curves are drawn on ours (one figure), and the page loads cleanly."""
    report = build_report(make_run(tmp_path, preset="paper"))
    dom = _chromium(report.html.resolve().as_uri(), tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0 and problems(dom.stderr) == []
    seed = re.search(r'<figure id="figure-seed-overlay"><img src="data:image/png;base64,([^"]+)"', dom.stdout)
    assert seed and base64.b64decode(seed.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'id="figure-seed-blog"' not in dom.stdout
