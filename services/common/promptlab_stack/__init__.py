"""What every image of the stack shares (installed in each of them from services/common/).

- settings.py: the typed settings loader each service builds its one settings object with, and
  the knobs that more than one service reads (the model, the generation timeout).
- timings.py: the timeouts and keep-alive times that must nest across the three services.
- run_and_drain.py: the containers' entrypoint, so that `docker stop` drains requests in flight.
- text.py: rules for the text of an answer (no broken character at its end).
- error_body.py: the readable message of an HTTP error body, for messages that reach the browser.
- http_pool.py: one aiohttp keep-alive pool per event loop (gateway and tracking images only: the
  one module here that needs aiohttp).
"""
