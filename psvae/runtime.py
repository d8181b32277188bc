"""Where the fit runs: device, numeric precision and the CPU allocator."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

import torch

from psvae.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda': no CUDA device is available here")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """True where bfloat16 matmuls and convolutions run in hardware (not emulated)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` becomes ``bf16`` (autocast) where the device has native bfloat16, else ``float32``."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "float32"
    return name


@functools.cache
def keep_large_allocations() -> bool:
    """Ask glibc to serve large blocks from its heap instead of fresh mmap'd pages.

    By default every allocation over 32 MB (a 128x128 batch's activations) is mapped anew
    and its pages faulted in and zeroed on every training step; keeping them in the heap made
    CPU training at 128x128 about 10-15% faster here. Memory freed by the fit is then kept
    by the process (its peak stays resident). Linux/glibc only; elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        m_mmap_max, m_trim_threshold = -4, -1
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False
