// `import fastclip._cuda_on_cpu` loads the CPU execution layer, whose static initialisers register
// the CUDA entry points (csrc/cuda/<op>.cpp, built with FASTCLIP_CUDA_ON_CPU) for CPU tensors.
// fastclip/_library.py imports it, after fastclip._C, only when FASTCLIP_CPU_KERNELS=cuda (_C
// then registers no CPU kernel of its own). The module holds two functions for the tests
// (tests/test_cuda_runtime.py), on the layer's own copy of the host code:
//   launch_counters() -> {"refused_cooperative_launches": n, "occupancy_queries": n}
//       what the single launches met (csrc/cuda/kernel_log.h);
//   staged_list_metadata(num_tensors, num_chunks, fill) -> bytes
//       the staging block of a list's metadata (csrc/cuda/device_list.h's stage_metadata) with
//       made-up entries, written into a block whose every byte held `fill` before.
#include <Python.h>

#include <cstdint>
#include <exception>
#include <vector>

#include "../cuda/device_list.h"
#include "../cuda/device_runtime.h"
#include "../cuda/kernel_log.h"

namespace {

PyObject* launch_counters(PyObject* /*module*/, PyObject* /*args*/) {
  const fastclip::cuda::LaunchCounters counters = fastclip::cuda::launch_counters();
  return Py_BuildValue("{s:L,s:L}", "refused_cooperative_launches",
                       static_cast<long long>(counters.refused_cooperative_launches), "occupancy_queries",
                       static_cast<long long>(counters.occupancy_queries));
}

PyObject* staged_list_metadata(PyObject* /*module*/, PyObject* args) {
  int num_tensors = 0, num_chunks = 0, fill = 0;
  if (!PyArg_ParseTuple(args, "iii", &num_tensors, &num_chunks, &fill)) return nullptr;
  if (num_tensors < 0 || num_chunks < 0 || num_tensors > 4096 || num_chunks > 4096 || fill < 0 || fill > 255) {
    PyErr_SetString(PyExc_ValueError, "staged_list_metadata: counts from 0 to 4096 and a fill byte");
    return nullptr;
  }
  try {
    std::vector<fastclip::TensorMeta> tensors;
    for (int i = 0; i < num_tensors; ++i) {
      tensors.push_back(fastclip::TensorMeta{reinterpret_cast<void*>(static_cast<uintptr_t>(0x1000) * (i + 1)),
                                             int64_t{3} * i + 1, i % 4, i});
    }
    std::vector<fastclip::ChunkMeta> chunks;
    for (int i = 0; i < num_chunks; ++i) chunks.push_back(fastclip::ChunkMeta{i % (num_tensors + 1), i});
    const size_t bytes =
        fastclip::cuda::staging_bytes(fastclip::cuda::metadata_layout(tensors.size(), chunks.size()).bytes);
    std::vector<uint8_t> block(bytes, static_cast<uint8_t>(fill));
    fastclip::cuda::stage_metadata(tensors, chunks, block.data());
    return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(block.data()), static_cast<Py_ssize_t>(bytes));
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

PyMethodDef methods[] = {
    {"launch_counters", launch_counters, METH_NOARGS, "what the single launches met (csrc/cuda/kernel_log.h)"},
    {"staged_list_metadata", staged_list_metadata, METH_VARARGS,
     "staged_list_metadata(num_tensors, num_chunks, fill): a list's metadata staging block, for tests"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PyMODINIT_FUNC PyInit__cuda_on_cpu(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_cuda_on_cpu", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
