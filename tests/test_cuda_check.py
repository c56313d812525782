"""seqlab.cuda_check: CPU training steps skip torch's failing NVML attempt, same answers."""

from __future__ import annotations

import os

import pytest
import torch

from seqlab import cuda_check


def test_the_check_answers_the_same_and_the_variable_comes_back(monkeypatch) -> None:
    monkeypatch.setenv(cuda_check.VARIABLE, "1")  # as importing Lightning sets it
    fails = cuda_check.nvml_attempt_fails()  # this box: a CUDA build of torch, no NVML
    outside = torch.cuda.is_available()
    with cuda_check.cheap_cuda_check():
        assert os.environ[cuda_check.VARIABLE] == ("0" if fails else "1")
        inside = torch.cuda.is_available()
    assert inside == outside
    assert os.environ[cuda_check.VARIABLE] == "1"


def test_nothing_changes_where_nvml_loads(monkeypatch) -> None:
    monkeypatch.setenv(cuda_check.VARIABLE, "1")
    monkeypatch.setattr(cuda_check, "nvml_loads", lambda: True)
    with cuda_check.cheap_cuda_check():
        assert os.environ[cuda_check.VARIABLE] == "1"


def test_nothing_changes_where_the_variable_was_not_set_to_nvml(monkeypatch) -> None:
    monkeypatch.setenv(cuda_check.VARIABLE, "0")
    monkeypatch.setattr(cuda_check, "nvml_loads", lambda: False)
    with cuda_check.cheap_cuda_check():
        assert os.environ[cuda_check.VARIABLE] == "0"
    assert os.environ[cuda_check.VARIABLE] == "0"


@pytest.mark.skipif(
    not hasattr(torch._C, "_cuda_getDeviceCount"), reason="a CPU build of torch tries no NVML"
)
def test_the_variable_is_restored_when_the_block_fails(monkeypatch) -> None:
    monkeypatch.setenv(cuda_check.VARIABLE, "1")
    monkeypatch.setattr(cuda_check, "nvml_loads", lambda: False)
    with pytest.raises(RuntimeError), cuda_check.cheap_cuda_check():
        assert os.environ[cuda_check.VARIABLE] == "0"
        raise RuntimeError("training failed")
    assert os.environ[cuda_check.VARIABLE] == "1"


@pytest.mark.skipif(
    not hasattr(torch._C, "_cuda_getDeviceCount") or cuda_check.nvml_loads(),
    reason="only a CUDA build of torch on a machine without NVML tries and fails",
)
def test_adamw_steps_try_no_nvml_inside_the_block(monkeypatch) -> None:
    import ctypes

    tries: list[str] = []
    real = ctypes.CDLL

    def counting(name, *args, **kwargs):
        tries.append(str(name))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", counting)
    monkeypatch.setenv(cuda_check.VARIABLE, "1")  # as importing Lightning sets it
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters())
    layer(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    assert tries.count(cuda_check.NVML_LIBRARY) == 1  # what every step paid
    with cuda_check.cheap_cuda_check():
        for _ in range(5):
            optimizer.step()
    assert tries.count(cuda_check.NVML_LIBRARY) == 1
