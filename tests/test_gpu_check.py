"""`make gpu-check` where there is no GPU: one line and a non-zero exit."""

import pytest
import torch

from conftest import run_cli


def test_the_gpu_check_refuses_in_one_line_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: make gpu-check runs for real here")
    result = run_cli("gpu_check.py")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: make gpu-check needs a CUDA GPU, and torch sees none here."
    )
