// What fastclip._C adds in a build with the CUDA kernels (python_cuda.cpp): the ops' capture-safe
// upload for Python, and what the runtime code met, for the tests and bench/gpu_runtime_check.py.
#pragma once

#include <Python.h>

namespace fastclip {

// index_tensor(indices: Sequence[int], device: int) -> Tensor: int64 `indices` on CUDA device
// `device`, copied on its current stream as the ops upload their metadata
// (cuda/device_runtime.h's upload_to_device): no host sync, and safe inside a CUDA graph capture
// (the pinned source is then kept for the life of the process). fastclip/distributed.py's
// index_tensor.
PyObject* index_tensor(PyObject* module, PyObject* args);

// kept_staging_buffers() -> int: the pinned staging buffers kept for captured graphs.
PyObject* kept_staging_buffers(PyObject* module, PyObject* args);

// launch_counters() -> {"refused_cooperative_launches": n, "occupancy_queries": n}
// (cuda/kernel_log.h).
PyObject* launch_counters(PyObject* module, PyObject* args);

}  // namespace fastclip
