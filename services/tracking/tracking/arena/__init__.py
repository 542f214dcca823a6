"""The blind comparison page (issue 26): `/promptlab/arena` on the tracking server.

Two endpoints drawn at random answer the same prompt side by side as "A" and "B", streamed as
they are generated; the user votes, then the names are revealed. Everything is kept in MLflow:
each answer is a trace in the chosen experiment, each vote is feedback (an assessment) on both
traces, with the voter's user name when basic auth is on, and the leaderboard (Bradley–Terry) is
computed from them and can be logged as a run. The calls to MLflow are made as the user who asked
(their login), so MLflow's own permissions apply.

- protocol.py: the requests the page sends, checked with messages that name the field;
- records.py: how a battle and a vote are written as traces and assessments, and read back;
- tracking_store.py: those reads and writes, through this server's REST API, as the user;
- generation.py: both answers streamed from the gateway at once;
- api.py: the routes, and the page (page.html).
"""
