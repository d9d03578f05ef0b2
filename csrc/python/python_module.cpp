// `import fastclip._C` loads this library, whose static initialisers register the ops (every
// entry point is a torch op). The module holds data: `layouts`, the shared tensor layouts of
// common/layouts.h, `clip_eps`, the epsilon torch adds to the norm before dividing
// (common/norm_math.h), and `build_info`, what this build contains; and one function,
// `grads_of` (python_grads.h), which reads parameters' grads for the ops, plus, in a build with
// the CUDA kernels, `index_tensor`, `kept_staging_buffers` and `launch_counters` (python_cuda.h).
// Only setup.py's extension compiles csrc/python; the CMake library for C++ users has no module.
#include <Python.h>

#include "../common/layouts.h"
#include "../common/norm_math.h"
#include "../cpu/cpu_isa.h"
#include "python_grads.h"

#ifdef FASTCLIP_WITH_CUDA
#include "../cuda/build_info.h"
#include "python_cuda.h"
#endif

namespace {

const char* cuda_archs() {
#ifdef FASTCLIP_WITH_CUDA
  return fastclip::cuda::compiled_archs();
#else
  return "";  // a CPU-only build
#endif
}

// {layout: {field: index}}; nullptr with a Python error set on failure.
PyObject* make_layouts() {
  PyObject* layouts = PyDict_New();
  if (layouts == nullptr) return nullptr;
  for (const fastclip::LayoutField& field : fastclip::kLayoutFields) {
    PyObject* fields = PyDict_GetItemString(layouts, field.layout);  // borrowed
    if (fields == nullptr) {
      fields = PyDict_New();
      if (fields == nullptr || PyDict_SetItemString(layouts, field.layout, fields) < 0) {
        Py_XDECREF(fields);
        Py_DECREF(layouts);
        return nullptr;
      }
      Py_DECREF(fields);  // the dict holds it
    }
    PyObject* index = PyLong_FromLongLong(field.index);
    if (index == nullptr || PyDict_SetItemString(fields, field.name, index) < 0) {
      Py_XDECREF(index);
      Py_DECREF(layouts);
      return nullptr;
    }
    Py_DECREF(index);
  }
  return layouts;
}

PyObject* make_build_info() {
  int count = 0;
  const char* const* isas = fastclip::cpu::compiled_isas(&count);
  PyObject* compiled = PyTuple_New(count);
  if (compiled == nullptr) return nullptr;
  for (int i = 0; i < count; ++i) {
    PyObject* name = PyUnicode_FromString(isas[i]);
    if (name == nullptr) {
      Py_DECREF(compiled);
      return nullptr;
    }
    PyTuple_SET_ITEM(compiled, i, name);  // steals the reference
  }
  return Py_BuildValue("{s:N,s:s,s:s,s:L}", "cpu_isas", compiled, "cpu_isa_in_use", fastclip::cpu::isa_in_use(),
                       "cuda_archs", cuda_archs(), "last_level_cache_bytes",
                       static_cast<long long>(fastclip::cpu::last_level_cache_bytes()));
}

}  // namespace

extern "C" PyObject* PyInit__C(void) {
  static PyMethodDef methods[] = {
      {"grads_of", fastclip::grads_of, METH_VARARGS, "grads_of(params, skip_missing): see csrc/python_grads.h"},
#ifdef FASTCLIP_WITH_CUDA
      {"index_tensor", fastclip::index_tensor, METH_VARARGS,
       "index_tensor(indices, device): see csrc/python/python_cuda.h"},
      {"kept_staging_buffers", fastclip::kept_staging_buffers, METH_NOARGS,
       "the pinned staging buffers kept for captured graphs"},
      {"launch_counters", fastclip::launch_counters, METH_NOARGS, "what the single launches met"},
#endif
      {nullptr, nullptr, 0, nullptr}};
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  PyObject* layouts = make_layouts();
  if (layouts == nullptr || PyModule_AddObject(module, "layouts", layouts) < 0) {
    Py_XDECREF(layouts);
    Py_DECREF(module);
    return nullptr;
  }
  if (PyModule_AddObject(module, "clip_eps", PyFloat_FromDouble(fastclip::kClipEps)) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  PyObject* build_info = make_build_info();
  if (build_info == nullptr || PyModule_AddObject(module, "build_info", build_info) < 0) {
    Py_XDECREF(build_info);
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
