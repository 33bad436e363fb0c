"""What the agent reports at registration: its GPUs from NVML (nvidia-ml-py), or CPU-only with its cores."""

from __future__ import annotations

import os
import socket
from typing import Any

from simpletuner_core.jobs.devices import discover


def capabilities() -> dict[str, Any]:
    devices, _ = discover()  # no driver or no pynvml: no devices, a CPU worker
    first = devices[0] if devices else None
    info = {"name": first.name if first else None, "vram_gb": first.memory_gb if first else None,
            "count": len(devices), "accelerator": "cuda" if devices else "cpu"}
    return {"gpu_count": info["count"], "gpu_name": info["name"], "gpu_vram_gb": info["vram_gb"],
            "accelerator_type": info["accelerator"], "gpu_info": info, "cpu_count": os.cpu_count() or 1,
            "hostname": socket.gethostname()}
