"""Device choice: CUDA when present, otherwise CPU."""

from __future__ import annotations

import platform

import torch


def pick_device() -> torch.device:
    """CUDA if a GPU is visible, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    """A readable name of the hardware (recorded in every result)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
