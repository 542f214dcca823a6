"""promptlab-eval's inputs (services/promptlab-eval/promptlab_eval/dataset.py): CSV and JSON Lines
in UTF-8, UTF-8 with BOM and CP932."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptlab_eval.dataset import DatasetError, read_dataset

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
