"""Read the inputs of `promptlab-eval`: CSV or JSON Lines, in the encodings Japanese users have.

Excel saves CSV as CP932 (Shift_JIS) or as UTF-8 with a byte-order mark; other tools write plain
UTF-8. Without `--encoding`, a BOM means UTF-8, else UTF-8 is tried strictly, then CP932; a file
that is neither is refused, never decoded into mojibake. Every problem is a DatasetError whose
message names the file and what to do, raised before any model is called.

A field may be as long as the largest request the stack reads (MAX_REQUEST_MB, as characters: each
takes at least one byte of the request that carries it); a longer one could never reach a model,
so the file is refused with its row, rather than every such row failing later.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from contextlib import contextmanager

from promptlab_stack.settings import RequestLimit

DETECTED = ("utf-8", "cp932")
# The longest field, in characters, by default: MAX_REQUEST_MB's default (cli.py passes the knob's).
MAX_FIELD_CHARS = RequestLimit.from_env({}).max_request_bytes


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
        except (LookupError, ValueError):
            raise DatasetError(f"--encoding {encoding!r} is not an encoding Python knows") from None
        try:
            return data.decode(encoding).removeprefix("\ufeff"), encoding
        except LookupError:  # a codec, but not of bytes to text (rot13, base64, zlib...)
            raise DatasetError(
                f"--encoding {encoding!r} is not a text encoding: give one such as utf-8 or cp932"
            ) from None
        except UnicodeError as e:  # UnicodeDecodeError, or a codec's own ("undefined", "idna")
            raise DatasetError(
                f"{name} is not valid {encoding}{where(data, e)}: {reason(e)}; "
                "pass the file's --encoding"
            ) from None
    if data.startswith(codecs.BOM_UTF8):
        body = data[len(codecs.BOM_UTF8) :]
        try:
            return body.decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as e:
            raise DatasetError(
                f"{name} starts with a UTF-8 byte-order mark but is not UTF-8"
                f"{where(body, e)}: {reason(e)}"
            ) from None
    for candidate in DETECTED:
        try:
            return data.decode(candidate), candidate
        except UnicodeDecodeError:
            continue
    raise DatasetError(f"{name} is neither UTF-8 nor CP932 (Shift_JIS): pass --encoding")


def where(data: bytes, error: UnicodeError) -> str:
    """' (line N, byte M)' of a decoding error, when the codec says where."""
    if not isinstance(error, UnicodeDecodeError):
        return ""
    line = data.count(b"\n", 0, error.start) + 1
    return f" (line {line}, byte {error.start})"


def reason(error: UnicodeError) -> str:
    return error.reason if isinstance(error, UnicodeDecodeError) else str(error)


def too_long(name: str, place: str, limit: int) -> DatasetError:
    return DatasetError(
        f"{name}, {place}: a field is longer than {limit:,} characters, more than a request to a "
        "model may carry (MAX_REQUEST_MB): shorten it"
    )


def parse(
    text: str, name: str, fmt: str | None = None, max_field: int = MAX_FIELD_CHARS
) -> list[dict[str, str]]:
    """The rows, each a {column: value} dict. `fmt` "csv" or "jsonl"; None: JSON Lines when the
    first character is "{", else CSV. A field longer than `max_field` characters is refused."""
    fmt = fmt or ("jsonl" if text.lstrip().startswith("{") else "csv")
    rows = (
        parse_jsonl(text, name, max_field) if fmt == "jsonl" else parse_csv(text, name, max_field)
    )
    if not rows:
        raise DatasetError(f"{name} has a header but no rows")
    return rows


@contextmanager
def field_size_limit(limit: int):
    """csv's limit on a field (process-wide; 131,072 characters by default), for one parse."""
    before = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(before)


def parse_csv(text: str, name: str, max_field: int = MAX_FIELD_CHARS) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    number = 1  # the row being read; the header line is row 1
    try:
        with field_size_limit(max_field):
            for number, values in enumerate(reader, start=1):
                if header is None:
                    header = [h.strip() for h in values]
                    if not any(header) or len(set(header)) != len(header):
                        raise DatasetError(
                            f"{name}: the header line needs distinct, non-empty column names, "
                            f"got {header}"
                        )
                elif not values or not any(v.strip() for v in values):
                    continue  # a blank line
                elif len(values) != len(header):
                    raise DatasetError(
                        f"{name}, row {number}: {len(values)} fields for {len(header)} columns "
                        "(quote fields that hold commas or newlines)"
                    )
                else:
                    rows.append(dict(zip(header, values, strict=True)))
    except csv.Error as e:
        row = "the header line" if number == 1 and header is None else f"row {number + 1}"
        if "field larger than field limit" in str(e):
            raise too_long(name, f"{row} (line {reader.line_num})", max_field) from None
        raise DatasetError(f"{name}, {row} (line {reader.line_num}): {e}") from None
    if header is None:
        raise DatasetError(f"{name} is empty")
    return rows


def parse_jsonl(text: str, name: str, max_field: int = MAX_FIELD_CHARS) -> list[dict[str, str]]:
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
        values = {
            str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in row.items()
        }
        if any(len(v) > max_field for v in values.values()):
            raise too_long(name, f"line {number}", max_field)
        rows.append(values)
    return rows


def read_dataset(
    data: bytes,
    name: str,
    *,
    encoding: str | None = None,
    fmt: str | None = None,
    max_field: int = MAX_FIELD_CHARS,
) -> tuple[list[dict[str, str]], str]:
    """(rows, the encoding used) of a CSV or JSON Lines file's bytes; a field may hold
    `max_field` characters at most."""
    text, used = decode(data, name, encoding)
    return parse(text, name, fmt, max_field), used


def data_digest(rows: list[dict[str, str]]) -> str:
    """A hash of the rows as read: the same for the same values, whatever the file's encoding,
    line ends, blank lines or column order; different when any value, row or column differs."""
    canonical = json.dumps(rows, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
