"""The tracking server's package: MLflow app plugin ``promptlab`` and the container's start.

- start.py: the entrypoint (settings, optional basic auth, then ``mlflow server --app-name
  promptlab``); settings.py: its knobs.
- app.py: the app factory that wires in the two changes below and basic auth.
- promptlab_artifacts.py, reencode.py: Prompt Engineering UI runs get readable UTF-8 artifacts
  instead of ``\\uXXXX`` escapes (upstream issue mlflow#14785).
- gateway_proxy.py: the UI's gateway proxy keeps the gateway's 4xx/503 and message instead of a
  bare 500, on the event loop.
- mlflow_compat.py: every private MLflow name this plugin uses.

Beside it in the same image, each its own package: the operations commands (tracking_ops: backup,
restore, schema upgrade), the evaluation command (promptlab_eval) and the endpoint-sync service
(endpoint_sync).
"""
