"""The Prompt Engineering UI's template rules, for runs made outside the browser.

The UI finds variables with `/\\{\\{\\s*([\\w-]+)\\s*\\}\\}/g` and lower-cases their names; a run's
`eval_results_table.json` has one column per variable, then `prompt` and `output`.
"""

from __future__ import annotations

import re

VARIABLE = re.compile(r"\{\{\s*([\w-]+)\s*\}\}")


def variables(template: str) -> list[str]:
    """The template's variables, in order of first use, lower-cased as the UI does."""
    seen: dict[str, None] = {}
    for match in VARIABLE.finditer(template):
        seen.setdefault(match.group(1).lower(), None)
    return list(seen)


def render(template: str, values: dict[str, str]) -> str:
    """The prompt for one row: each {{ variable }} replaced by its value."""
    return VARIABLE.sub(lambda m: values[m.group(1).lower()], template)


def missing_columns(template: str, columns: list[str]) -> list[str]:
    """Variables the data has no column for (columns match case-insensitively, as the UI's do)."""
    have = {c.lower() for c in columns}
    return [v for v in variables(template) if v not in have]


def row_values(template: str, row: dict[str, str]) -> dict[str, str]:
    """The row's value of each template variable."""
    lowered = {k.lower(): v for k, v in row.items()}
    return {v: lowered[v] for v in variables(template)}
