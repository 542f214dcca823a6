"""Names and paths that the tests share (tests/ is on pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The tiny test model's folder under LOCAL_MODELS_DIR, and so its endpoint name.
SERVED_MODEL_NAME = "tiny-ja"
CHAT_ENDPOINT = SERVED_MODEL_NAME
COMPLETIONS_ENDPOINT = f"{SERVED_MODEL_NAME}-completions"
QUESTION = "りんごは何色ですか？"
# The second model of the comparison tests: another tokenizer and chat template (ChatML).
SECOND_MODEL_NAME = "tiny-b"
# A model whose answer is always an MLflow judge's "yes" verdict (scripts/make_tiny_model.py).
JUDGE_MODEL_NAME = "judge"
SECOND_MODEL_SHAPE = {"seed": 1, "vocab_size": 384, "chat_style": "chatml"}
