"""`python deploy/healthcheck.py PATH [PORT]`: exit 0 when the Blaze web process in this container
answers `GET PATH` with a 200, else print why and exit 1.

The container probes run it (the image's HEALTHCHECK, compose's healthchecks, the Kubernetes
readiness probe), so the request comes from loopback, which BLAZE_METRICS_ALLOW_IPS lets read
/health/detailed by default. It also sends:

- `Host: localhost`: keep `localhost` in ALLOWED_HOSTS, or Django answers 400;
- `X-Forwarded-Proto: https`: with BLAZE_HTTPS and BLAZE_BEHIND_PROXY, the probe is not redirected;
- `Authorization: Bearer $BLAZE_METRICS_TOKEN` when that is set: /health/detailed answers even where
  BLAZE_METRICS_ALLOW_IPS leaves loopback out.

Only the standard library: a probe every few seconds must not load Django.
"""

import os
import sys
import urllib.error
import urllib.request


def headers():
    sent = {"Host": "localhost", "X-Forwarded-Proto": "https"}
    if os.environ.get("BLAZE_METRICS_TOKEN"):
        sent["Authorization"] = f"Bearer {os.environ['BLAZE_METRICS_TOKEN']}"
    return sent


def probe(path, port="8000"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers())
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"GET {path}: HTTP {exc.code} {exc.read(300).decode(errors='replace')}", file=sys.stderr)
    except OSError as exc:
        print(f"GET {path}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 3:
        sys.exit(__doc__.splitlines()[0])
    sys.exit(probe(*sys.argv[1:]))
