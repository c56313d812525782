"""A cheaper "is there a GPU?" for CPU training steps on a machine without NVML.

Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (so that asking whether CUDA is
available does not initialise it before DataLoader workers fork). torch then answers
``torch.cuda.is_available()`` through NVML, and caches nothing until CUDA is initialised. Every
``Adam``/``AdamW`` step asks (its graph-capture health check), so a CPU run pays for an attempt
to load ``libnvidia-ml.so.1`` at every step: about 0.17 ms of CPU a step on the 2-core dev box,
where a whole AdamW step on a small model takes 0.2 ms (docs/speed.md).

Where that library cannot be loaded, torch falls back to the CUDA runtime's own count after the
failed attempt; asking the runtime directly (the variable at ``0``) gives the same answer without
the attempt. `cheap_cuda_check` does that for the length of a block, only there (a CUDA build of
torch, NVML missing), and restores the variable after. Where NVML loads, nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

VARIABLE = "PYTORCH_NVML_BASED_CUDA_CHECK"
NVML_LIBRARY = "libnvidia-ml.so.1"  # the name torch loads


@functools.cache
def nvml_loads() -> bool:
    """Whether NVML's library can be loaded on this machine (as torch loads it)."""
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return False
    return True


def nvml_attempt_fails() -> bool:
    """Whether every CUDA availability check would first try NVML and fail to load it."""
    built_with_cuda = hasattr(torch._C, "_cuda_getDeviceCount")
    return os.environ.get(VARIABLE) == "1" and built_with_cuda and not nvml_loads()


@contextmanager
def cheap_cuda_check() -> Iterator[None]:
    """For the block, ask the CUDA runtime directly where the NVML attempt would fail anyway."""
    if not nvml_attempt_fails():
        yield
        return
    os.environ[VARIABLE] = "0"
    try:
        yield
    finally:
        os.environ[VARIABLE] = "1"
