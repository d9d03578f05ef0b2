"""What a report says about the machine: the device's name (a CPU's with its threads, last-level
cache and kernels), the versions, and the memory free for a suite."""

import platform
from typing import Any

import torch

import fastclip

__all__ = ["available_memory_bytes", "cpu_model", "device_name", "machine_info"]


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with its thread count and last-level cache (a grad list
    that fits in a large L3 can beat the DRAM floor)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = fastclip.build_info()
    cache = info["last_level_cache_bytes"]  # the library's probe; 0 when unknown
    cache_text = f", {cache >> 20} MiB last-level cache" if cache else ""
    # The CPU kernels' instruction set (FASTCLIP_CPU_ISA=generic|avx2 caps it): runs on one
    # machine with different caps are then told apart.
    isa = info.get("cpu_isa_in_use")
    isa_text = f", {isa} kernels" if isa else ""
    return f"{cpu_model()} ({torch.get_num_threads()} threads{cache_text}{isa_text})"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` says when that is unknown."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return name


def available_memory_bytes(device: torch.device) -> int | None:
    """Free memory on the device (MemAvailable on the host for the CPU); None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a report starts with: ``device`` (its name), ``device_type``, the torch and fastclip
    versions, and torch's CPU threads."""
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "fastclip": fastclip.__version__,
        "threads": torch.get_num_threads(),
    }
