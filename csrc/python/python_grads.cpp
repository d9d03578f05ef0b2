// fastclip._C.grads_of(params, skip_missing): the grads of a Python list of parameters as a held
// list (held_list.h), read here instead of by `p.grad` in Python. On long lists of small
// parameters (MoE, LoRA), reading `.grad` in Python, checking it for None and converting the list
// of grads into an op's argument was most of a clip; here each grad is two pointer reads away
// from its parameter's Python object. Runs with the GIL held, as the Python read does, and keeps
// nothing: the grads are read afresh at every call. Only the Python extension compiles it.
#include "python_grads.h"

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/python/pybind_utils.h>

#include <vector>

#include "../common/tensor_prefetch.h"
#include "../ops/held_list.h"

namespace fastclip {
namespace {

// Whether `type` is exactly torch.Tensor or torch.nn.Parameter, whose `.grad` in Python is the
// grad read here (a subclass may override the property, or see ops through __torch_function__).
bool is_plain_tensor_type(PyTypeObject* type) {
  return type == reinterpret_cast<PyTypeObject*>(THPVariableClass) ||
         type == reinterpret_cast<PyTypeObject*>(ParameterClass);
}

// The tensor a parameter's Python object holds; the object is known to be a plain tensor.
const at::Tensor& tensor_of(PyObject* object) { return THPVariable_Unpack(object); }

}  // namespace

PyObject* grads_of(PyObject* /*module*/, PyObject* args) {
  HANDLE_TH_ERRORS
  PyObject* params = nullptr;
  int skip_missing = 0;
  if (!PyArg_ParseTuple(args, "O!p:grads_of", &PyList_Type, &params, &skip_missing)) return nullptr;
  const Py_ssize_t count = PyList_GET_SIZE(params);
  std::vector<at::Tensor> grads;
  grads.reserve(static_cast<size_t>(count));
  for (Py_ssize_t i = 0; i < count; ++i) {
    // Each read waits on the parameter's Python object, its TensorImpl, then its autograd
    // metadata: each is prefetched further ahead than the next.
    constexpr Py_ssize_t kAhead = static_cast<Py_ssize_t>(kPrefetchAhead);
    if (i + 3 * kAhead < count) prefetch_line(PyList_GET_ITEM(params, i + 3 * kAhead));
    if (i + 2 * kAhead < count) {
      PyObject* ahead = PyList_GET_ITEM(params, i + 2 * kAhead);
      if (is_plain_tensor_type(Py_TYPE(ahead))) prefetch_line(tensor_of(ahead).unsafeGetTensorImpl());
    }
    if (i + kAhead < count) {
      PyObject* ahead = PyList_GET_ITEM(params, i + kAhead);
      if (is_plain_tensor_type(Py_TYPE(ahead))) {
        if (const auto* meta = tensor_of(ahead).unsafeGetTensorImpl()->autograd_meta()) {
          prefetch_line(meta);
          prefetch_line(reinterpret_cast<const char*>(meta) + 64);
        }
      }
    }
    PyObject* object = PyList_GET_ITEM(params, i);
    if (!is_plain_tensor_type(Py_TYPE(object))) Py_RETURN_NONE;
    const at::Tensor& param = tensor_of(object);
    const at::Tensor& grad = param.unsafeGetTensorImpl()->grad();
    if (!grad.defined()) {
      // Python warns when it reads the missing grad of a tensor that is not a leaf: let it.
      if (skip_missing && (param.is_leaf() || param.retains_grad())) continue;
      Py_RETURN_NONE;
    }
    // A grad that Python sees as a tensor subclass (DTensor, or one with __torch_function__):
    // the ops must see it from Python. A grad with no Python object (never handed to Python, or
    // its object gone) is a plain tensor unless it has Python dispatch.
    const PyObject* grad_object = grad.unsafeGetTensorImpl()->pyobj_slot()->load_pyobj();
    if (grad_object != nullptr && Py_TYPE(grad_object) != reinterpret_cast<PyTypeObject*>(THPVariableClass)) {
      Py_RETURN_NONE;
    }
    if (grad.unsafeGetTensorImpl()->is_python_dispatch()) Py_RETURN_NONE;
    // A grad that requires grad (backward with create_graph=True): the ops' results then say
    // that they are not differentiable, which the held ops, below autograd, would not.
    if (grad.requires_grad()) Py_RETURN_NONE;
    grads.push_back(grad);
  }
  return torch::jit::toPyObject(c10::IValue(c10::make_intrusive<HeldList>(std::move(grads)))).release().ptr();
  END_HANDLE_TH_ERRORS
}

}  // namespace fastclip
