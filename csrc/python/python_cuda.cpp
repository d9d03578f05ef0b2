// python_cuda.h; compiled empty in a build without the CUDA kernels.
#ifdef FASTCLIP_WITH_CUDA
#include "python_cuda.h"

#include "../cuda/device_runtime.h"
#include "../cuda/kernel_log.h"

namespace fastclip {

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
