"""The image's HEALTHCHECK: exit 0 when this container's server answers `GET /healthz`.

The image runs any one of the services, the console or the sandbox, so the port is the one
its settings read: `BANGFU_<SERVICE>_PORT` when set (compose and Kubernetes set it), else the
defaults of every server are tried; only the one this container runs can answer on 127.0.0.1.
"""

import os
import sys
import urllib.request

DEFAULT_PORTS = {
    "registry": 8101,
    "verification": 8102,
    "benefits": 8103,
    "notifications": 8104,
    "console": 8105,
    "sandbox": 8190,
}


def ports() -> list[int]:
    configured = [
        int(os.environ[f"BANGFU_{name.upper()}_PORT"])
        for name in DEFAULT_PORTS
        if f"BANGFU_{name.upper()}_PORT" in os.environ
    ]
    return configured or list(DEFAULT_PORTS.values())


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(0 if any(healthy(port) for port in ports()) else 1)
