"""A streamed row's text: pieces that join to exactly the answer, never a broken character or a
part of a stop string (pyfunc_server/token_stream.py), on the tiny model's real tokenizer."""

from __future__ import annotations

import pytest

from pyfunc_server.sampling import RowSettings, StopRules
from pyfunc_server.token_stream import TextDeltas, stop_prefix_length


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def streamed(tokenizer, new_ids: list[int], stop: tuple[str, ...] = (), eos: int = -1):
    """The pieces shown step by step (`push` for every step that does not end the row, as the
    step loop calls it), then the rest; and the row's answer (StopRules.finish)."""
    row = RowSettings((1,), budget=len(new_ids), greedy=True, stop=stop)
    rules = StopRules(tokenizer, {eos})
    deltas = TextDeltas(tokenizer, {eos}, row)
    pieces = []
    for n in range(1, len(new_ids) + 1):
        if rules.ends(row, new_ids[:n]):
            new_ids = new_ids[:n]
            break
        pieces.append(deltas.push(new_ids[:n]))
    answer = rules.finish(row, new_ids).text
    pieces.append(deltas.rest(answer))
    return pieces, answer


def test_a_character_split_across_tokens_is_shown_whole_once_complete(tokenizer):
    ids = tokenizer.encode("りんご", add_special_tokens=False)
    assert "\ufffd" in tokenizer.decode(ids[:1])  # the first token ends inside ご
    pieces, answer = streamed(tokenizer, ids)
    assert answer == "りんご"
    assert pieces == ["りん", "ご"]  # the last token ends the row (max_tokens): `rest` shows it


def test_a_stop_string_split_across_steps_is_never_shown(tokenizer):
    text = "りんごは赤い。バナナは黄色い。"
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces, answer = streamed(tokenizer, ids, stop=("バナナ",))
    assert answer == "りんごは赤い。"
    assert "".join(pieces) == answer
    assert all("バ" not in p for p in pieces), pieces


def test_the_pieces_join_to_the_answer_for_every_cut(tokenizer):
    text = "Hello, りんご and バナナ! 東京タワー 🍎 end"
    ids = tokenizer.encode(text, add_special_tokens=False)
    for n in range(1, len(ids) + 1):
        for stop in ((), ("ナ!",), ("end", "東京")):
            pieces, answer = streamed(tokenizer, ids[:n], stop=stop)
            assert "".join(pieces) == answer, (n, stop, pieces)
            assert not any("\ufffd" in p for p in pieces), (n, pieces)


def test_eos_ends_the_text(tokenizer):
    eos = tokenizer.eos_token_id
    ids = [*tokenizer.encode("りんご", add_special_tokens=False), eos]
    pieces, answer = streamed(tokenizer, ids, eos=eos)
    assert "".join(pieces) == answer == "りんご"


def test_how_much_text_could_begin_a_stop_string():
    assert stop_prefix_length("abc ST", ("STOP",)) == 2
    assert stop_prefix_length("abc", ("STOP",)) == 0
    assert stop_prefix_length("xバ", ("バナナ", "xバナ")) == 2
    assert stop_prefix_length("", ("a",)) == 0
