"""MLflow app plugin ``promptlab-utf8``.

Rewrites the artifacts of Prompt Engineering UI runs (``create-promptlab-run``) as readable
UTF-8 instead of ``\\uXXXX`` escapes (upstream issue mlflow#14785).
Use with ``mlflow server --app-name promptlab-utf8``.
"""
