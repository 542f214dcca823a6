"""Read the inputs of `promptlab-eval`: CSV or JSON Lines, in the encodings Japanese users have.

Excel saves CSV as CP932 (Shift_JIS) or as UTF-8 with a byte-order mark; other tools write plain
UTF-8. Without `--encoding`, a BOM means UTF-8, else UTF-8 is tried strictly, then CP932; a file
that is neither is refused, never decoded into mojibake. Every problem is a DatasetError whose
message names the file and what to do, raised before any model is called.
"""

from __future__ import annotations

import codecs
import csv
import io
import json

DETECTED = ("utf-8", "cp932")


class DatasetError(ValueError):
    """The input file cannot be used; the message says why and what to do."""


def decode(data: bytes, name: str, encoding: str | None = None) -> tuple[str, str]:
    """(text, the encoding used). `encoding` None: detect (see the module's docstring)."""
    if not data.strip():
        raise DatasetError(f"{name} is empty: give a header line and at least one row")
    if b"\x00" in data:
        raise DatasetError(f"{name} looks binary (it has NUL bytes): give a CSV or JSON Lines file")
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise DatasetError(f"--encoding {encoding!r} is not an encoding Python knows") from None
        try:
            return data.decode(encoding).removeprefix("\ufeff"), encoding
        except UnicodeDecodeError as e:
            raise DatasetError(f"{name} is not valid {encoding}: {e}") from None
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as e:
            raise DatasetError(
                f"{name} starts with a UTF-8 byte-order mark but is not UTF-8: {e}"
            ) from None
    for candidate in DETECTED:
        try:
            return data.decode(candidate), candidate
        except UnicodeDecodeError:
            continue
    raise DatasetError(f"{name} is neither UTF-8 nor CP932 (Shift_JIS): pass --encoding")


def parse(text: str, name: str, fmt: str | None = None) -> list[dict[str, str]]:
    """The rows, each a {column: value} dict. `fmt` "csv" or "jsonl"; None: JSON Lines when the
    first character is "{", else CSV."""
    fmt = fmt or ("jsonl" if text.lstrip().startswith("{") else "csv")
    rows = parse_jsonl(text, name) if fmt == "jsonl" else parse_csv(text, name)
    if not rows:
        raise DatasetError(f"{name} has a header but no rows")
    return rows


def parse_csv(text: str, name: str) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{name} is empty") from None
    header = [h.strip() for h in header]
    if not any(header) or len(set(header)) != len(header):
        raise DatasetError(
            f"{name}: the header line needs distinct, non-empty column names, got {header}"
        )
    rows = []
    for number, values in enumerate(reader, start=2):
        if not values or not any(v.strip() for v in values):
            continue  # a blank line
        if len(values) != len(header):
            raise DatasetError(
                f"{name}, row {number}: {len(values)} fields for {len(header)} columns "
                "(quote fields that hold commas or newlines)"
            )
        rows.append(dict(zip(header, values, strict=True)))
    return rows


def parse_jsonl(text: str, name: str) -> list[dict[str, str]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DatasetError(f"{name}, line {number} is not JSON: {e}") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{name}, line {number} must be a JSON object of column: value")
        rows.append(
            {
                str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                for k, v in row.items()
            }
        )
    return rows


def read_dataset(
    data: bytes, name: str, *, encoding: str | None = None, fmt: str | None = None
) -> tuple[list[dict[str, str]], str]:
    """(rows, the encoding used) of a CSV or JSON Lines file's bytes."""
    text, used = decode(data, name, encoding)
    return parse(text, name, fmt), used
