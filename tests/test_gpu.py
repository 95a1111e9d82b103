"""The NVIDIA-stack probe: what it says where TensorRT or a GPU is missing, and how it reads
cuda-python's (error, value...) results. The GPU paths themselves are tested with -m gpu."""

from __future__ import annotations

import enum
import importlib.util

import pytest

from ecg_edge.gpu import check, tensorrt_status


class FakeError(enum.IntEnum):  # shaped like cuda-python's cudaError_t
    cudaSuccess = 0
    cudaErrorNoDevice = 100


def test_check_unwraps_results_and_raises_on_errors():
    assert check((FakeError.cudaSuccess, 7)) == 7
    assert check((0, 1, 2)) == (1, 2)
    with pytest.raises(RuntimeError, match="cudaErrorNoDevice"):
        check((FakeError.cudaErrorNoDevice, 0))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_status_names_what_is_missing():
    usable, reason = tensorrt_status()
    assert not usable
    assert "TensorRT is not installed" in reason and "ecg-edge[tensorrt]" in reason
