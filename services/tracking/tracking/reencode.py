"""Pure re-encoders that turn ``\\uXXXX``-escaped JSON/YAML into readable UTF-8 text.

No MLflow import here on purpose: these functions are tested without a server and must not break
when MLflow's internals move.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

import yaml

# One JSON escape sequence. A surrogate pair (e.g. an emoji) must be decoded as a whole, and
# "\\" must be consumed as one token so that the "u" in "\\u3042" (a literal backslash followed
# by "u3042") is never mistaken for an escape.
_JSON_ESCAPE = re.compile(
    r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"  # surrogate pair
    r"|\\u([0-9a-fA-F]{4})"  # any other \uXXXX
    r"|\\.",  # \\, \", \n, \t, ... (kept as they are)
    re.DOTALL,
)

# YAML double-quoted escapes that stand for non-ASCII characters (\x.., \u...., \U........, and
# the named \N \_ \L \P). A cheap pre-check only: false positives just cost a re-dump.
_YAML_NON_ASCII_ESCAPE = re.compile(r"\\(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[N_LP])")

# PyYAML's emitter escapes characters beyond U+FFFF (emoji) as \UXXXXXXXX inside double-quoted
# scalars even with allow_unicode=True (plain and single-quoted scalars are fine). "\\." consumes
# every other escape, so "\\U..." (an escaped backslash) is left alone.
_YAML_ASTRAL_ESCAPE = re.compile(r"\\U([0-9A-Fa-f]{8})|\\.", re.DOTALL)

# The options MLflow's promptlab model uses for parameters.yaml (yaml.safe_dump(...,
# default_flow_style=False)). sort_keys=False keeps the order just loaded from the file, i.e.
# MLflow's (sorted) order, instead of imposing a new one.
_YAML_DUMP_OPTIONS = {"default_flow_style": False, "sort_keys": False}


def _unescape_json_token(match: re.Match) -> str:
    high, low, single = match.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    if single is not None:
        code = int(single, 16)
        # JSON requires control characters, '"' and '\' to stay escaped (exactly what
        # json.dumps(ensure_ascii=False) does); a lone surrogate cannot be written as UTF-8.
        if code < 0x20 or code in (0x22, 0x5C) or 0xD800 <= code <= 0xDFFF:
            return match.group(0)
        return chr(code)
    return match.group(0)


def _unescape_yaml_astral(match: re.Match) -> str:
    code = match.group(1)
    if code is not None and 0x10000 <= int(code, 16) <= 0x10FFFF:
        return chr(int(code, 16))
    return match.group(0)


class _ReadableDumper(yaml.SafeDumper):
    """SafeDumper that also writes emoji literally inside double-quoted scalars.

    Only the text of a double-quoted scalar is touched, where every backslash is an escape; in
    plain and single-quoted scalars a backslash is literal and must stay as it is.
    """

    def write_double_quoted(self, text, split=True):
        start = self.stream.tell()  # a StringIO: we always dump to a string
        super().write_double_quoted(text, split)
        written = self.stream.getvalue()[start:]
        readable = _YAML_ASTRAL_ESCAPE.sub(_unescape_yaml_astral, written)
        if readable != written:
            self.stream.seek(start)
            self.stream.truncate()
            self.stream.write(readable)


def readable_json(text: str) -> str:
    """Return ``text`` with ``\\uXXXX`` escapes of printable characters replaced by the characters.

    Equivalent to ``json.dumps(json.loads(text), ensure_ascii=False)`` but done on the escape
    tokens only, so every other byte of MLflow's layout (``indent=2`` in
    serving_input_example.json, separators, key order) is kept as it was. The result is checked
    to load back to identical data; ``text`` is returned unchanged when there is nothing to undo
    or the check fails. Raises ``ValueError`` when ``text`` is not JSON and has escapes.
    """
    if "\\u" not in text:
        return text
    original = json.loads(text)
    result = _JSON_ESCAPE.sub(_unescape_json_token, text)
    if result == text or json.loads(result) != original:
        return text
    return result


def readable_yaml(text: str) -> str:
    """Return ``text`` re-dumped with ``allow_unicode=True`` if it escapes non-ASCII characters.

    Loads with ``yaml.safe_load`` and dumps with ``yaml.safe_dump(allow_unicode=True,
    default_flow_style=False, sort_keys=False)``, except that emoji in double-quoted scalars
    are written out too (PyYAML keeps them as ``\\U`` escapes). ``text`` is returned unchanged
    when it has no escapes to undo or when the result would not load back to identical data.
    """
    if not _YAML_NON_ASCII_ESCAPE.search(text):
        return text
    data = yaml.safe_load(text)
    result = yaml.dump(data, Dumper=_ReadableDumper, allow_unicode=True, **_YAML_DUMP_OPTIONS)
    if result == yaml.safe_dump(data, allow_unicode=False, **_YAML_DUMP_OPTIONS):
        # Nothing came out readable (e.g. only "\x41"): keep MLflow's bytes as they are.
        return text
    if yaml.safe_load(result) != data:
        return text
    return result


#: Artifacts that MLflow's create-promptlab-run writes with escapes, relative to the run's
#: artifact root, and the re-encoder for each.
ARTIFACT_REENCODERS: Mapping[str, Callable[[str], str]] = MappingProxyType(
    {
        "eval_results_table.json": readable_json,
        "model/parameters.yaml": readable_yaml,
        "model/input_example.json": readable_json,
        "model/serving_input_example.json": readable_json,
    }
)
