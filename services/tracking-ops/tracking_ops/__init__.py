"""The tracking server's operations commands, run in its image (not by the server).

- backup.py, restore.py: ``promptlab-backup`` and ``promptlab-restore``, every experiment, run and
  artifact on the tracking volumes as one tar file (volumes.py: what is in it).
- db_upgrade.py: ``promptlab-db-upgrade``, the one-shot ``db-upgrade`` service that brings the
  schema up to date before the server starts.
- mlflow_compat.py: every private MLflow name these commands use.

Commands a person runs: a bad setting exits 2, as command-line tools do.
"""
