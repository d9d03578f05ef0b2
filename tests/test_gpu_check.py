"""bench/gpu_check.sh, the one command a session with a GPU runs: without a GPU it says so, exits 0
and writes nothing; its sanitizer workload (bench/gpu_sanitize.py) runs, here on the CPU."""

import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_it_says_so_and_exits_0():
    before = set(os.listdir(os.path.join(ROOT, "bench", "results")))
    done = subprocess.run(
        ["bash", os.path.join(ROOT, "bench", "gpu_check.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU visible" in done.stdout
    assert set(os.listdir(os.path.join(ROOT, "bench", "results"))) == before


def test_the_sanitizer_workload_runs_every_op_and_clipper():
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "gpu_sanitize.py")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "every op and clipper ran" in done.stdout
