"""Device choice: CUDA when present, otherwise CPU."""

from __future__ import annotations

import platform

import torch


def pick_device() -> torch.device:
    """CUDA if a GPU is visible, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def use_tf32(device: torch.device, enabled: bool) -> None:
    """TF32 matmuls and convolutions on CUDA as ``runtime.tf32`` says (nothing to set elsewhere)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of a ``precision`` setting (``bf16``: bfloat16 autocast; ``fp32``: off)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def device_name(device: torch.device) -> str:
    """A readable name of the hardware (recorded in every result)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
