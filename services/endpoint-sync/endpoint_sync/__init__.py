"""The ``endpoint-sync`` service: the tracking server's built-in AI Gateway endpoints kept equal to
the chat models the stack's gateway serves, so that MLflow 3's Playground, AI Gateway page and
judges can use the local models.

- start.py: the service's command (settings, then the sync forever); settings.py: its knobs.
- sync.py: one pass over the tracking server's public REST API, and the loop.
- health.py: the healthcheck, from the heartbeat each pass leaves.
"""
