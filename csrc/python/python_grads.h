// fastclip._C.grads_of (python_grads.cpp): parameters' grads read in C++, for the Python module.
#pragma once

#include <Python.h>

namespace fastclip {

// grads_of(params: list, skip_missing: bool) -> torch.classes.fastclip.TensorList | None: the
// grads of the parameters, in order (with skip_missing, of those that have one), or None where
// Python must read them: an entry that is not exactly a torch.Tensor or torch.nn.Parameter, a
// missing grad (without skip_missing, or of a tensor that is not a leaf: Python warns), a grad
// that is a tensor subclass or requires grad.
PyObject* grads_of(PyObject* module, PyObject* args);

}  // namespace fastclip
