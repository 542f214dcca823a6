"""promptlab-eval's inputs (services/promptlab-eval/promptlab_eval/dataset.py): CSV and JSON Lines
in UTF-8, UTF-8 with BOM and CP932."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptlab_eval.dataset import MAX_FIELD_CHARS, DatasetError, data_digest, read_dataset

ROWS = [
    {"object": "りんご", "note": 'a "quoted", comma\nand a newline', "expected": "赤"},
    {"object": "ｶﾀｶﾅ半角と全角：？！", "note": "が (か\u3099) é (e\u0301)", "expected": "黄"},
]
EMOJI_ROW = {"object": "🍎👨\u200d👩\u200d👧🇯🇵", "note": "絵文字", "expected": ""}
# CP932 has neither emoji nor combining marks.
CP932_ROWS = [ROWS[0], {"object": "ｶﾀｶﾅ半角と全角：？！", "note": "①髙﨑・〒", "expected": "黄"}]


def csv_bytes(rows: list[dict], encoding: str) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\r\n")  # as Excel writes
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


@pytest.mark.parametrize(
    "encoding, rows, detected",
    [
        ("utf-8", ROWS + [EMOJI_ROW], "utf-8"),
        ("utf-8-sig", ROWS + [EMOJI_ROW], "utf-8-sig"),
        ("cp932", CP932_ROWS, "cp932"),
    ],
)
def test_excel_and_other_csv_files_round_trip(encoding, rows, detected):
    got, used = read_dataset(csv_bytes(rows, encoding), "in.csv")
    assert got == rows and used == detected


def test_an_explicit_encoding_wins_and_a_wrong_one_is_named():
    data = csv_bytes(CP932_ROWS, "cp932")
    assert read_dataset(data, "in.csv", encoding="cp932")[0] == CP932_ROWS
    with pytest.raises(DatasetError, match="not valid utf-8"):
        read_dataset(data, "in.csv", encoding="utf-8")
    with pytest.raises(DatasetError, match="not an encoding"):
        read_dataset(data, "in.csv", encoding="klingon")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "object": st.text(
                    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                    min_size=1,
                ),
                "note": st.text(
                    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
                ),
            }
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_utf8_csv_round_trips(rows):
    rows = [{k: v.replace("\r", "") for k, v in r.items()} for r in rows]  # csv keeps \r\n as \n
    rows = [r for r in rows if r["object"].strip() or r["note"].strip()]
    if not rows:
        return
    got, _ = read_dataset(csv_bytes(rows, "utf-8"), "in.csv")
    assert got == rows


def test_json_lines_are_read_and_non_text_values_kept_as_json():
    data = (
        "\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS).encode() + b'\n{"object": 3}\n'
    )
    rows, _ = read_dataset(data, "in.jsonl")
    assert rows[:2] == ROWS and rows[2] == {"object": "3"}


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (b"object,note\n", "no rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary"),
        (
            "object\nりんご\n".encode("latin-1", "replace") + b"\xff\xfe\xfa",
            "neither UTF-8 nor CP932",
        ),
        (b"object,object\nx,y\n", "distinct"),
        (b'object,note\n"x,y\n', "fields"),
        (b'{"object": "x"}\nnot json\n', "line 2 is not JSON"),
    ],
)
def test_bad_files_are_refused_with_a_reason(data, words):
    with pytest.raises(DatasetError, match=words):
        read_dataset(data, "in.csv")


@pytest.mark.parametrize(
    "encoding, words",
    [
        ("klingon", "--encoding 'klingon' is not an encoding Python knows"),
        # Codecs, but not of bytes to text: bytes.decode raises LookupError.
        ("rot13", "--encoding 'rot13' is not a text encoding"),
        ("base64", "--encoding 'base64' is not a text encoding"),
        ("zlib", "--encoding 'zlib' is not a text encoding"),
        # A text codec that refuses everything (a bare UnicodeError).
        ("undefined", "in.csv is not valid undefined"),
        # CP932's あ (0x82 0xa0) on line 2 is not UTF-8.
        ("utf-8", r"in.csv is not valid utf-8 \(line 2, byte 12\): invalid start byte"),
    ],
)
def test_an_unknown_or_unusable_encoding_is_refused_naming_the_option(encoding, words):
    with pytest.raises(DatasetError, match=words):
        read_dataset("object,note\nあ,y\n".encode("cp932"), "in.csv", encoding=encoding)


def test_a_field_may_be_as_long_as_a_request_and_no_longer():
    """Past csv's own default of 131,072 characters, up to MAX_REQUEST_MB (8 MB, as characters:
    each is at least a byte of the request); a longer field could never reach a model."""
    assert MAX_FIELD_CHARS == 8_000_000
    long = "長" * 200_000
    limit_before = csv.field_size_limit()
    rows, _ = read_dataset(csv_bytes([{"object": long, "note": "x"}], "utf-8"), "in.csv")
    assert rows == [{"object": long, "note": "x"}]
    assert csv.field_size_limit() == limit_before  # the process-wide limit is put back

    rows = [{"object": "x" * 1000, "note": "y"}, {"object": "z", "note": "y" * 1001}]
    assert read_dataset(csv_bytes(rows[:1], "utf-8"), "in.csv", max_field=1000)[0] == rows[:1]
    with pytest.raises(
        DatasetError,
        match=r"^in.csv, row 3 \(line 3\): a field is longer than 1,000 characters, .*"
        "MAX_REQUEST_MB",
    ):
        read_dataset(csv_bytes(rows, "utf-8"), "in.csv", max_field=1000)
    with pytest.raises(DatasetError, match=r"^in.csv, the header line \(line 1\): a field is"):
        read_dataset(b"object," + b"n" * 1001 + b"\nx,y\n", "in.csv", max_field=1000)
    jsonl = "\n".join(json.dumps(r) for r in rows).encode()
    with pytest.raises(DatasetError, match=r"^in.jsonl, line 2: a field is longer than 1,000"):
        read_dataset(jsonl, "in.jsonl", max_field=1000)
    assert csv.field_size_limit() == limit_before


def test_the_datas_digest_follows_the_values_not_the_files_bytes():
    """What promptlab-eval's resume keys on (runner.py): the rows as read."""
    digest = data_digest(read_dataset(csv_bytes(CP932_ROWS, "utf-8"), "in.csv")[0])
    same = [
        csv_bytes(CP932_ROWS, "cp932"),
        csv_bytes(CP932_ROWS, "utf-8-sig") + b"\r\n\r\n",
        csv_bytes([{k: r[k] for k in reversed(list(r))} for r in CP932_ROWS], "utf-8"),
    ]
    assert {data_digest(read_dataset(data, "in.csv")[0]) for data in same} == {digest}
    edited = [dict(CP932_ROWS[0], expected="赤い"), CP932_ROWS[1]]
    assert data_digest(edited) != digest
    assert data_digest(CP932_ROWS[:1]) != digest
    assert data_digest(list(reversed(CP932_ROWS))) != digest
