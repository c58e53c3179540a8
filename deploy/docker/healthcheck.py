#!/usr/bin/env python3
"""Container health check: GET one URL on this container, healthy on a 2xx answer.

The URL comes from BAND_HEALTHCHECK_URL (default: the composer service's /healthz on port
8000). Set it to an empty string for roles that serve no HTTP (``bot run``, ``bot db
upgrade``): the check then passes, since such a process is alive exactly while its
container runs. No curl in the slim images, so this is plain Python (stdlib only).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/healthz"


def main() -> int:
    url = os.environ.get("BAND_HEALTHCHECK_URL", DEFAULT_URL).strip()
    if not url:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("BAND_HEALTHCHECK_TIMEOUT", "4"))) as answer:
            return 0 if 200 <= answer.status < 300 else 1
    except urllib.error.HTTPError as exc:  # /healthz answers 503 while models load or when one failed
        print(f"{url}: HTTP {exc.code}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
