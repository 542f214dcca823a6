"""Whether the tracking server behind the proxy asks for a login (MLflow's basic auth).

Asked of the server itself rather than read from a setting, so that the proxy never holds the
admin password, and the answer is what a browser would meet.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from promptlab_stack.topology import TRACKING

# Any API route that basic auth guards; the health check is open either way.
GUARDED = "/api/2.0/mlflow/experiments/search?max_results=1"


def basic_auth_on(base_url: str = TRACKING.url, timeout_s: float = 10) -> bool | None:
    """True when an anonymous API call gets 401, False when it is answered, None when the server
    cannot be asked (down, or another answer)."""
    try:
        with urllib.request.urlopen(base_url + GUARDED, timeout=timeout_s) as resp:
            return False if resp.status == 200 else None
    except urllib.error.HTTPError as e:
        return True if e.code == 401 else None
    except (urllib.error.URLError, OSError):
        return None
