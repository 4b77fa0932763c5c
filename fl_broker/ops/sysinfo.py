"""What `sys_info` reports about the machine a participant runs on."""

from __future__ import annotations

import os
import platform
import resource
import socket
import sys
from typing import Any


def system_info() -> dict[str, Any]:
    """Host, OS, Python, CPU count, load and this process's peak memory."""
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "pid": os.getpid(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
