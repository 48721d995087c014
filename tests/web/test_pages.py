"""Every page, in both languages, on a desktop, a phone and a wall screen: signed in, drawn, no
string missing from the catalogue, nothing fetched from outside the fleet, nothing wider than
the screen, and a screenshot of each (into ``EDGEFLEET_SCREENSHOTS`` if set, else a temporary
directory; ``python -m tests.web.screenshots docs/screenshots`` refreshes the committed ones)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.web.screenshots import LANGUAGES, PAGES, VIEWPORTS, shoot, stage
from tests.web.stack import FleetStack


def test_every_page_reads_in_english_and_vietnamese_on_a_desk_a_phone_and_a_wall_offline(
        browser: Any, stack: FleetStack, tmp_path: Path) -> None:
    stage(stack)
    outdir = Path(os.environ.get("EDGEFLEET_SCREENSHOTS") or tmp_path)
    files = shoot(browser, stack, outdir)
    assert len(files) == len(LANGUAGES) * len(VIEWPORTS) * (len(PAGES) + 1)
    assert all(f.stat().st_size > 10_000 for f in files)
