"""What every target is asked: the same greedy chat prompts, Japanese and English."""

PROMPTS = [
    "りんごは何色ですか？",
    "東京は日本の首都です。富士山はどこにありますか？",
    "こんにちは",
    "The quick brown fox jumps over the lazy dog. What does the fox do?",
    "空は青く、海も青い。日本語の文章を書いてください。",
    "MLflow tracks experiments; the gateway routes prompts to models. What does MLflow do?",
    "カタカナとひらがなと漢字を使います。絵文字も😀使えます。",
    "What colour is an apple?",
]
