// What fastclip._C adds in a build with the CUDA kernels (python_cuda.cpp): what the runtime code
// met, for the tests and bench/gpu_runtime_check.py.
#pragma once

#include <Python.h>

namespace fastclip {

// kept_staging_buffers() -> int: the pinned staging buffers kept for captured graphs.
PyObject* kept_staging_buffers(PyObject* module, PyObject* args);

// launch_counters() -> {"refused_cooperative_launches": n, "occupancy_queries": n}
// (cuda/kernel_log.h).
PyObject* launch_counters(PyObject* module, PyObject* args);

}  // namespace fastclip
