"""MLflow app plugin ``promptlab-utf8`` (``mlflow server --app-name promptlab-utf8``).

- Rewrites the artifacts of Prompt Engineering UI runs (``create-promptlab-run``) as readable
  UTF-8 instead of ``\\uXXXX`` escapes (upstream issue mlflow#14785): app.py, reencode.py.
- Answers the UI's gateway proxy with the gateway's own 4xx/503 and message instead of a bare
  500: gateway_proxy.py.
"""
