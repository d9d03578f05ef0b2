"""The CUDA entry points' dealings with the runtime, on the CPU execution layer (csrc/simt), each in
a subprocess (what they remember lasts the process, and the layer reads its simulations once): the
pinned staging block of a list's metadata is written whole, so that a re-captured graph finds its
kept buffer (csrc/cuda/device_list.cpp); a refused cooperative launch is remembered, not retried on
every call, and is not logged; a failed occupancy query is asked again, not taken for "no
cooperative launch" (csrc/cuda/launch.cuh). On a GPU: tests/test_cuda.py and
bench/gpu_runtime_check.py."""

import pytest
from conftest import run_json_script

import fastclip

pytestmark = pytest.mark.skipif(
    not fastclip.build_info()["cuda_on_cpu"], reason="the CPU execution layer was not built"
)

TENSOR_META_BYTES, CHUNK_META_BYTES = 24, 8  # csrc/common/tensor_list.h


def run_on_layer(script, tmp_path, **env):
    """The JSON the script prints last, run with FASTCLIP_CPU_KERNELS=cuda, `env` and a kernel log
    at argv[1]."""
    return run_json_script(script, tmp_path, 240, FASTCLIP_CPU_KERNELS="cuda", **env)


_PRELUDE = """
import json, os, sys
import torch
import fastclip
import fastclip._cuda_on_cpu as layer

LOG = sys.argv[1]
os.environ["FASTCLIP_KERNEL_LOG"] = LOG


def take():
    lines = open(LOG).read().splitlines() if os.path.exists(LOG) else []
    open(LOG, "w").close()
    return lines
"""

_STAGING = """
out = {}
for tensors in range(6):
    for chunks in range(4):
        out[f"{tensors} {chunks}"] = [list(layer.staged_list_metadata(tensors, chunks, fill)) for fill in (0, 0xA5)]
print(json.dumps(out))
"""


def test_the_metadata_staging_block_is_written_whole(tmp_path):
    """The block is torch's pinned memory on a GPU, recycled with whatever it held: the bytes
    staged must not depend on it (a kept buffer is found by comparing every byte), the 8 bytes
    between an odd number of tensors and the 16-byte aligned chunk array included."""
    for key, (from_zeros, from_stale) in run_on_layer(_PRELUDE + _STAGING, tmp_path).items():
        tensors, chunks = map(int, key.split())
        chunk_offset = (tensors * TENSOR_META_BYTES + 15) // 16 * 16
        end = chunk_offset + chunks * CHUNK_META_BYTES
        assert len(from_stale) == max(16, end), key
        assert from_stale == from_zeros, f"{key}: bytes left from the block's earlier content"
        assert set(from_stale[tensors * TENSOR_META_BYTES : chunk_offset]) <= {0}, f"{key}: the gap"
        assert set(from_stale[end:]) <= {0}, f"{key}: the padding"


_CLIP_AND_STEP = """
gen = torch.Generator().manual_seed(0)
grads = [torch.randn(3, generator=gen) for _ in range(5)]  # 5 chunks: a grid of 5 blocks
out = {"clip": [], "steps": []}
for _ in range(4):
    clipped = [g.clone() for g in grads]
    total = fastclip.ops.multi_tensor_clip_grad_norm_(clipped, 0.5, 2.0)
    out["clip"].append({"log": take(), **layer.launch_counters()})
os.environ["FASTCLIP_SINGLE_LAUNCH"] = "0"
several = [g.clone() for g in grads]
expected = fastclip.ops.multi_tensor_clip_grad_norm_(several, 0.5, 2.0)
out["same_bits"] = torch.equal(total, expected) and all(torch.equal(a, b) for a, b in zip(clipped, several))
del os.environ["FASTCLIP_SINGLE_LAUNCH"]
take()
params = [torch.nn.Parameter(torch.zeros(3)) for _ in grads]
clipper = fastclip.ZClip(params, warmup_steps=2, max_grad_norm=0.5)
for step in range(4):
    for p, g in zip(params, grads):
        p.grad = g * (step + 1)
    clipper.step()
    out["steps"].append({"log": take(), **layer.launch_counters()})
print(json.dumps(out))
"""


def kernels(log):
    return [
        line.split(" grid=")[0].split("<")[0] + (" cooperative" if line.endswith(" cooperative") else "")
        for line in log
    ]


def test_a_refused_cooperative_launch_is_remembered_and_not_logged(tmp_path):
    """FASTCLIP_SIMT_CONTEXT_SMS=1: the layer answers the occupancy query for its 4 SMs (8
    blocks) but refuses a cooperative grid over 2 blocks (cudaErrorCooperativeLaunchTooLarge), as
    a GPU does under MPS or in a green context. The first call tries the single launch once; it
    and every later call take the several-kernel path, which is all the log shows."""
    out = run_on_layer(_PRELUDE + _CLIP_AND_STEP, tmp_path, FASTCLIP_SIMT_SMS="4", FASTCLIP_SIMT_CONTEXT_SMS="1")
    for call in out["clip"]:
        assert kernels(call["log"]) == ["multi_tensor_norm_kernel", "multi_tensor_clip_by_norm_kernel"], call
        assert call["refused_cooperative_launches"] == 1, call  # clip_grad_norm_kernel, tried once
    assert out["same_bits"]
    for step in out["steps"]:
        assert kernels(step["log"])[:2] == ["multi_tensor_norm_kernel", "step_kernel"], step
        assert not any(line.endswith(" cooperative") for line in step["log"]), step
        assert step["refused_cooperative_launches"] == 2, step  # and clip_step_kernel, once


def test_a_cooperative_grid_the_context_takes_is_still_one_launch(tmp_path):
    """The same limit, on a list of 2 chunks: the grid fits, nothing is refused."""
    script = _PRELUDE + _CLIP_AND_STEP.replace("range(5)", "range(2)")
    out = run_on_layer(script, tmp_path, FASTCLIP_SIMT_SMS="4", FASTCLIP_SIMT_CONTEXT_SMS="1")
    for call in out["clip"]:
        assert kernels(call["log"]) == ["clip_grad_norm_kernel cooperative"], call
        assert call["refused_cooperative_launches"] == 0, call
    for step in out["steps"]:
        assert kernels(step["log"]) == ["clip_step_kernel cooperative"], step
    assert out["same_bits"]


def test_a_failed_occupancy_query_is_asked_again(tmp_path):
    """FASTCLIP_SIMT_FAILED_QUERIES=1: the first occupancy query fails. That call takes the
    several-kernel path; the next asks again, gets the answer, keeps it, and launches once."""
    out = run_on_layer(_PRELUDE + _CLIP_AND_STEP, tmp_path, FASTCLIP_SIMT_FAILED_QUERIES="1")
    first, *later = out["clip"]
    assert kernels(first["log"]) == ["multi_tensor_norm_kernel", "multi_tensor_clip_by_norm_kernel"], first
    assert first["occupancy_queries"] == 1
    for call in later:
        assert kernels(call["log"]) == ["clip_grad_norm_kernel cooperative"], call
        assert call["occupancy_queries"] == 2, call  # the failed one, then the answer, kept
    for step in out["steps"]:  # clip_step_kernel's own query, answered at once
        assert kernels(step["log"]) == ["clip_step_kernel cooperative"], step
        assert step["occupancy_queries"] == 3, step
    assert out["same_bits"]
