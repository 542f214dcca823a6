"""The Prompt Engineering UI's template rules, for promptlab-eval's runs
(services/promptlab-eval/promptlab_eval/prompt_template.py)."""

from __future__ import annotations

from promptlab_eval.prompt_template import missing_columns, render, row_values, variables


def test_template_variables_follow_the_uis_rules():
    template = "{{ Object }}は{{object}}、{{ note-1 }}？"
    assert variables(template) == ["object", "note-1"]
    assert missing_columns(template, ["OBJECT", "note"]) == ["note-1"]
    values = row_values(template, {"Object": "りんご", "note-1": "x"})
    assert render(template, values) == "りんごはりんご、x？"
