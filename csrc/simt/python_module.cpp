// `import fastclip._cuda_on_cpu` loads the CPU execution layer, whose static initialisers register
// the CUDA entry points (csrc/cuda/<op>.cpp, built with FASTCLIP_CUDA_ON_CPU) for CPU tensors.
// fastclip/_library.py imports it, after fastclip._C, only when FASTCLIP_CPU_KERNELS=cuda (_C
// then registers no CPU kernel of its own). The module holds one function for the tests
// (tests/test_cuda_runtime.py), on the layer's own copy of the host code:
//   launch_counters() -> {"refused_cooperative_launches": n, "occupancy_queries": n}
//       what the single launches met (csrc/cuda/kernel_log.h).
#include <Python.h>

#include "../cuda/kernel_log.h"

namespace {

PyObject* launch_counters(PyObject* /*module*/, PyObject* /*args*/) {
  const fastclip::cuda::LaunchCounters counters = fastclip::cuda::launch_counters();
  return Py_BuildValue("{s:L,s:L}", "refused_cooperative_launches",
                       static_cast<long long>(counters.refused_cooperative_launches), "occupancy_queries",
                       static_cast<long long>(counters.occupancy_queries));
}

PyMethodDef methods[] = {
    {"launch_counters", launch_counters, METH_NOARGS, "what the single launches met (csrc/cuda/kernel_log.h)"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PyMODINIT_FUNC PyInit__cuda_on_cpu(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_cuda_on_cpu", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
