"""The accelerators a runner may hand out, from NVML when present; a CPU-only machine has none.

Jobs that ask for zero GPUs run in the single **CPU execution slot**, so a CPU box still runs jobs (SimpleTuner's
queue waits forever there). ``CUDA_VISIBLE_DEVICES`` limits which physical GPUs are offered.
"""

from __future__ import annotations

import os

import attrs


@attrs.frozen
class Device:
    index: int
    name: str
    memory_gb: float


def _visible(indices: list[int]) -> list[int]:
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return indices
    wanted = []
    for part in raw.split(","):
        part = part.strip()
        if part.isdigit():
            wanted.append(int(part))
    return [i for i in indices if i in wanted]


def discover() -> tuple[list[Device], str | None]:
    """(devices, note): the note says why there are none (no pynvml, no driver) for status pages."""
    try:
        import pynvml
    except ImportError:
        return [], "no GPU stats: nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"no GPU stats: {exc}"
    try:
        count = pynvml.nvmlDeviceGetCount()
        found = []
        for index in _visible(list(range(count))):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
            found.append(Device(index, name.decode() if isinstance(name, bytes) else str(name), round(memory, 1)))
        return found, None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
