// `import fastclip._cuda_on_cpu` loads the CPU execution layer, whose static initialisers register
// the CUDA entry points (csrc/cuda/<op>.cpp, built with FASTCLIP_CUDA_ON_CPU) for CPU tensors.
// fastclip/_library.py imports it, after fastclip._C, only when FASTCLIP_CPU_KERNELS=cuda (_C
// then registers no CPU kernel of its own). The module itself is empty.
#include <Python.h>

PyMODINIT_FUNC PyInit__cuda_on_cpu(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_cuda_on_cpu", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
