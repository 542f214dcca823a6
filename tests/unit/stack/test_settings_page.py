"""docs/settings.md is generated from the services' settings objects and .env.example
(scripts/settings_page.py): it must be the page the generator writes today."""

from settings_page import COMMAND, PAGE, render


def test_the_settings_page_is_current():
    written = PAGE.read_text(encoding="utf-8")
    assert written == render(), f"docs/settings.md is stale: run `{COMMAND}`"
