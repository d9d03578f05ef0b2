#include "op_library.h"

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace fastclip {
namespace {

void reject_sparse(const c10::OperatorHandle& op, torch::jit::Stack*) {
  TORCH_CHECK(false, "fastclip: ", op.schema().name(),
              " got a sparse tensor; only dense (strided) tensors are supported, not sparse ones");
}

// A held_<op>'s boxed kernel: <op> run on the same stack, its first argument, the held list,
// replaced by the list's tensors.
class RunOnHeldList final : public c10::OperatorKernel {
 public:
  // The op is defined by then (define_op_with_held defines it first).
  explicit RunOnHeldList(const std::string& op) : op_(c10::Dispatcher::singleton().findSchemaOrThrow(op.c_str(), "")) {}

  void operator()(const c10::OperatorHandle& held_op, c10::DispatchKeySet, torch::jit::Stack* stack) const {
    c10::IValue& list = (*stack)[stack->size() - held_op.schema().arguments().size()];
    list = c10::IValue(c10::List<at::Tensor>(list.toCustomClass<HeldList>()->tensors));
    const BelowAutograd below_autograd;
    op_.callBoxed(stack);
  }

 private:
  c10::OperatorHandle op_;
};

// torch.classes.fastclip.TensorList, registered by the first op to define a held form: the held
// schemas name it, and the fragments of csrc/ops/ are initialised in no set order. Eager only:
// the held ops' schemas cannot say that the held tensors are written (and opcheck takes no
// ScriptObject).
void register_held_list_class(torch::Library& m) {
  static std::once_flag registered;
  std::call_once(registered, [&] {
    m.class_<HeldList>("TensorList").def(torch::init<std::vector<at::Tensor>>()).def("__len__", [](const Held& self) {
      return static_cast<int64_t>(self->tensors.size());
    });
  });
}

std::string name_of(const std::string& schema) { return schema.substr(0, schema.find('(')); }

// The schema of held_<op>: its first argument, a list of tensors, a TensorList instead.
std::string held_schema(const std::string& schema) {
  const size_t open = schema.find('(');
  const size_t list_end = schema.find("[] ", open);
  const size_t name_end = schema.find_first_of(",)", list_end);
  TORCH_INTERNAL_ASSERT(list_end != std::string::npos && schema.find(',', open) > list_end,
                        "an op with a held form takes a list of tensors first: ", schema);
  const std::string name = schema.substr(list_end + 3, name_end - list_end - 3);
  return "held_" + schema.substr(0, open + 1) + "__torch__.torch.classes.fastclip.TensorList " + name +
         schema.substr(name_end);
}

}  // namespace

void define_op(torch::Library& m, const std::string& schema) {
  m.def(schema.c_str());
  const std::string name = name_of(schema);
  for (const c10::DispatchKey key : {c10::DispatchKey::SparseCPU, c10::DispatchKey::SparseCUDA}) {
    m.impl(name.c_str(), torch::dispatch(key, torch::CppFunction::makeFromBoxedFunction<&reject_sparse>()));
  }
}

void define_held_form(torch::Library& m, const std::string& schema, torch::CppFunction held_kernel) {
  register_held_list_class(m);
  const std::string held = held_schema(schema);
  define_op(m, held);
  m.impl(name_of(held).c_str(), torch::dispatch(c10::DispatchKey::CompositeImplicitAutograd, std::move(held_kernel)));
}

void define_op_with_held(torch::Library& m, const std::string& schema) {
  define_op(m, schema);
  define_held_form(
      m, schema,
      torch::CppFunction::makeFromBoxedFunctor(std::make_unique<RunOnHeldList>("fastclip::" + name_of(schema))));
}

}  // namespace fastclip
