// python_cuda.h; compiled empty in a build without the CUDA kernels.
#ifdef FASTCLIP_WITH_CUDA
#include "python_cuda.h"

#include <ATen/ATen.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "../cuda/device_runtime.h"
#include "../cuda/kernel_log.h"

namespace fastclip {

PyObject* index_tensor(PyObject* /*module*/, PyObject* args) {
  HANDLE_TH_ERRORS
  PyObject* indices = nullptr;
  int device = 0;
  if (!PyArg_ParseTuple(args, "Oi", &indices, &device)) return nullptr;
  PyObject* sequence = PySequence_Fast(indices, "index_tensor: indices must be a sequence of ints");
  if (sequence == nullptr) return nullptr;
  const Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
  std::vector<int64_t> values(static_cast<size_t>(count));
  for (Py_ssize_t i = 0; i < count; ++i) {
    values[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(sequence, i));
    if (values[i] == -1 && PyErr_Occurred()) {
      Py_DECREF(sequence);
      return nullptr;
    }
  }
  Py_DECREF(sequence);
  const size_t bytes = values.size() * sizeof(int64_t);
  const cuda::DeviceScope scope(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
  const at::Tensor staged =
      cuda::upload_to_device(bytes, [&](uint8_t* host) { std::memcpy(host, values.data(), bytes); }, scope);
  // At least 16 bytes were uploaded (staging_bytes): the first `count` int64 are the indices.
  return THPVariable_Wrap(staged.view(at::kLong).narrow(0, 0, static_cast<int64_t>(count)));
  END_HANDLE_TH_ERRORS
}

PyObject* kept_staging_buffers(PyObject* /*module*/, PyObject* /*args*/) {
  return PyLong_FromSize_t(cuda::kept_staging_buffers());
}

PyObject* launch_counters(PyObject* /*module*/, PyObject* /*args*/) {
  const cuda::LaunchCounters counters = cuda::launch_counters();
  return Py_BuildValue("{s:L,s:L}", "refused_cooperative_launches",
                       static_cast<long long>(counters.refused_cooperative_launches), "occupancy_queries",
                       static_cast<long long>(counters.occupancy_queries));
}

}  // namespace fastclip
#endif  // FASTCLIP_WITH_CUDA
