"""``promptlab-eval``: one Prompt Engineering template over a dataset of inputs, on several
endpoints, into runs the Prompt Engineering UI shows as its own.

It talks to the tracking server only through its REST API, as the UI does, so it runs wherever
that server is reachable (by default in the tracking container: ``docker compose exec -T tracking
promptlab-eval ...``).

- cli.py: the command (arguments, inputs checked before anything is created, the summary);
  settings.py: the knobs it reads.
- dataset.py: CSV and JSON Lines in the encodings Japanese users have; prompt_template.py: the
  UI's template rules.
- runner.py: one endpoint's run, rows sent concurrently, saved as the UI saves them.
- tracking_client.py: the REST calls; judge.py: MLflow's GenAI judge for ``--judge`` (the one
  MLflow import, made only then).
"""
