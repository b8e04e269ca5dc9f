"""Peak memory of one stretch of work (a model's fit): the CUDA allocator's peak on a CUDA device,
and the process's peak resident set (RSS) where the kernel lets a process restart it (Linux)."""

from __future__ import annotations

from pathlib import Path

import torch

PROC_SELF = Path("/proc/self")


class PeakMemory:
    """Measures peak memory from construction to :meth:`read`.

    The RSS peak is the whole process's (model, LLM weights and data included). It restarts
    from the current RSS, so it never reads below what earlier work left allocated.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            (PROC_SELF / "clear_refs").write_text("5")  # Linux >= 4.0: VmHWM restarts from the current RSS
            self.rss_restarted = True
        except OSError:  # no procfs (macOS, Windows) or not allowed: a lifetime peak would mislead
            self.rss_restarted = False

    def read(self) -> dict[str, float | None]:
        """``peak_memory_mib`` (CUDA allocator; None off CUDA) and ``peak_rss_mib`` (the process; None where it cannot be restarted)."""
        return {
            "peak_memory_mib": torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None,
            "peak_rss_mib": peak_rss_kib() / 1024 if self.rss_restarted else None,
        }


def peak_rss_kib() -> int:
    """The process's peak resident set size in KiB (``VmHWM`` of ``/proc/self/status``)."""
    for line in (PROC_SELF / "status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise OSError("/proc/self/status has no VmHWM line")
