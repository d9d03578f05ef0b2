// The stateful clippers' whole step through launch_clip_step (stats_kernels.h): the norms of a
// planned list, the step on them and the scale of the grads by the factors the step wrote, once
// as one cooperative launch (clip_step.cuh's clip_step_kernel and its three grid barriers, which
// the ThreadSanitizer build then checks) and once on a copy of everything as the norm, step and
// scale kernels. Step after step (warm-up, a spike, a NaN and an infinite norm), the two must
// agree bit for bit -- grads, norms, state, result slots, per-entry coef/threshold -- and both
// with the host: the common/<clipper>_step.h step on the norms the kernels stored, and the grads
// scaled by the factor it wrote, under each of the grads updates (common/stats_op_args.h's
// GradsUpdate: factor, per-tensor factors, clear_on_zero, zero_where_set, none).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../../common/layouts.h"
#include "../../cuda/stats_kernels.h"
#include "../runtime.h"
#include "selftest.h"

namespace fastclip {
namespace selftest {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
using P = NonfinitePolicy;

// --- the grads update (common/stats_op_args.h needs torch: its two functions restated) --------

struct Update {
  bool active, per_tensor, zero_where_set, clear_on_zero;
};

// stats_op_args.cpp's grads_update for a non-empty list.
Update grads_update(bool scale_grads, NonfinitePolicy policy, bool per_tensor_factors) {
  const bool zero = policy == P::kZero;
  return Update{scale_grads || zero, scale_grads && per_tensor_factors, !scale_grads, zero};
}

// stats_op_args.h's update_factors: where the step wrote what the update reads.
float* update_factors(const Update& update, float* result, float* coef) {
  if (update.per_tensor) return coef;
  return result + (update.zero_where_set ? result_slot::nonfinite : result_slot::coef);
}

// --- what is compared bit for bit ------------------------------------------------------------

struct Field {
  const char* name;
  const void* data;
  size_t bytes;
};

template <typename T>
Field field(const char* name, const ExactArray<T>& array) {
  return Field{name, array.data(), array.size() * sizeof(T)};
}
Field field(const char* name, const TensorBuffer& buffer) {
  return Field{name, buffer.data(),
               static_cast<size_t>(buffer.numel() * dtype_size(static_cast<int32_t>(buffer.dtype())))};
}

void expect_same_fields(const std::vector<Field>& got, const std::vector<Field>& want, const std::string& what) {
  for (size_t i = 0; i < got.size(); ++i) {
    const bool same = got[i].bytes == want[i].bytes &&
                      (got[i].bytes == 0 || std::memcmp(got[i].data, want[i].data, got[i].bytes) == 0);
    expect(same, what + ": " + got[i].name + " differs");
  }
}

DeviceValues values_of(TensorBuffer& buffer) {
  return DeviceValues{buffer.data(), static_cast<int32_t>(buffer.dtype())};
}

// --- the clippers: each a config, a State (everything the step reads and writes besides the
// norms, one per copy), the step struct over a State and the norms, and the host's step ---------

// Entries of a per-entry step: one per tensor (per_tensor) or the one of the total; entry j owns
// state row rows[j] (a reversal, so rows differ from entries).
struct Entries {
  ExactArray<int64_t> rows;
  ExactArray<float> coef, threshold, result;
  explicit Entries(int64_t n) : rows(n), coef(n), threshold(n), result(result_slot::count) {
    for (int64_t j = 0; j < n; ++j) rows[j] = n - 1 - j;
  }
  int64_t size() const { return static_cast<int64_t>(rows.size()); }
  EntryOutputs out() { return EntryOutputs{rows.data(), size(), coef.data(), threshold.data()}; }
  EntryParams params(NormBuffers& norm, bool per_tensor) {
    return EntryParams{values_of(norm.total), per_tensor ? values_of(norm.per_tensor_norms) : values_of(norm.total),
                       size(), out(), result.data()};
  }
  std::vector<Field> fields() const {
    return {field("coef", coef), field("threshold", threshold), field("result", result)};
  }
};

// The norm of entry j as the kernels stored it (the step reads it back from memory).
double stored_entry_norm(const NormBuffers& norm, bool per_tensor, int64_t j) {
  return per_tensor ? norm.per_tensor_norms.get(j) : norm.total.get(0);
}

struct ZClip {
  ZClipConfig config;
  static constexpr bool per_tensor = false;
  struct State {
    ExactArray<double> state;
    ExactArray<float> result;
    State(const ZClip& c, int64_t)
        : state(static_cast<size_t>(zclip_state::header_size + c.config.warmup_steps)), result(result_slot::count) {}
    float* result_slots() { return result.data(); }
    float* coef() { return nullptr; }
    std::vector<Field> fields() const { return {field("state", state), field("result", result)}; }
  };
  cuda::ZClipStep step(State& s, NormBuffers& norm) const {
    return cuda::ZClipStep{config, values_of(norm.total), s.state.data(), s.result.data()};
  }
  void host_step(State& s, const NormBuffers& norm) const {
    zclip_step(config, s.state.data(), norm.total.get(0), s.result.data());
  }
};

struct NormClip {
  NormClipConfig config;
  static constexpr bool per_tensor = false;
  struct State {
    ExactArray<float> result;
    State(const NormClip&, int64_t) : result(result_slot::count) {}
    float* result_slots() { return result.data(); }
    float* coef() { return nullptr; }
    std::vector<Field> fields() const { return {field("result", result)}; }
  };
  cuda::NormClipStep step(State& s, NormBuffers& norm) const {
    return cuda::NormClipStep{config, values_of(norm.total), s.result.data()};
  }
  void host_step(State& s, const NormBuffers& norm) const { normclip_step(config, norm.total.get(0), s.result.data()); }
};

struct AutoClip {
  AutoClipConfig config;
  int64_t lower_capacity, upper_capacity, window_size;
  bool per_tensor;  // an entry (and a factor) per tensor, else the one entry of the total
  struct State {
    Entries entries;
    ExactArray<float> lower, upper, window;
    ExactArray<int64_t> counters;
    State(const AutoClip& c, int64_t num_tensors)
        : entries(c.per_tensor ? num_tensors : 1),
          lower(entries.size() * c.lower_capacity),
          upper(entries.size() * c.upper_capacity),
          window(entries.size() * c.window_size),
          counters(entries.size() * autoclip_counter::count) {}
    float* result_slots() { return entries.result.data(); }
    float* coef() { return entries.coef.data(); }
    AutoClipBuffers buffers(const AutoClip& c) {
      return AutoClipBuffers{lower.data(),  c.lower_capacity, upper.data(),   c.upper_capacity,
                             window.data(), c.window_size,    counters.data()};
    }
    std::vector<Field> fields() const {
      std::vector<Field> out = entries.fields();
      for (const Field& f : {field("lower heaps", lower), field("upper heaps", upper), field("windows", window),
                             field("counters", counters)}) {
        out.push_back(f);
      }
      return out;
    }
  };
  cuda::AutoClipStep step(State& s, NormBuffers& norm) const {
    return cuda::AutoClipStep{config, s.buffers(*this), s.entries.params(norm, per_tensor)};
  }
  void host_step(State& s, const NormBuffers& norm) const {
    const double total = norm.total.get(0);
    const AutoClipBuffers buffers = s.buffers(*this);
    for (int64_t j = 0; j < s.entries.size(); ++j) {
      autoclip_entry(config, buffers, s.entries.out(), j, stored_entry_norm(norm, per_tensor, j), total);
    }
    autoclip_finish(config, s.entries.result.data(), s.entries.out(), s.entries.size(), total);
  }
};

struct AdaGC {
  AdaGCConfig config;
  static constexpr bool per_tensor = true;  // the op's entries are always the grads
  struct State {
    Entries entries;
    ExactArray<double> gamma, steps;
    State(const AdaGC&, int64_t num_tensors)
        : entries(num_tensors), gamma(num_tensors * adagc_gamma::count), steps(1) {}
    float* result_slots() { return entries.result.data(); }
    float* coef() { return entries.coef.data(); }
    std::vector<Field> fields() const {
      std::vector<Field> out = entries.fields();
      out.push_back(field("gamma", gamma));
      out.push_back(field("steps", steps));
      return out;
    }
  };
  cuda::AdaGCStep step(State& s, NormBuffers& norm) const {
    return cuda::AdaGCStep{config, s.gamma.data(), s.steps.data(), s.entries.params(norm, per_tensor)};
  }
  void host_step(State& s, const NormBuffers& norm) const {
    const double total = norm.total.get(0);
    const double finite_steps = s.steps[0];  // as every thread reads it, before thread 0 counts
    for (int64_t j = 0; j < s.entries.size(); ++j) {
      adagc_entry(config, s.gamma.data(), finite_steps, s.entries.out(), j, norm.per_tensor_norms.get(j), total);
    }
    adagc_finish(config, s.steps.data(), s.entries.result.data(), s.entries.out(), s.entries.size(), total);
  }
};

// --- one copy of everything a clip step touches ------------------------------------------------

template <typename Clipper>
struct Copy {
  Rng unused{0};
  TestList list;
  NormBuffers norm;
  typename Clipper::State state;
  ScaleParams scale;

  Copy(const Clipper& clipper, const ListCase& list_case, double p, const Update& update)
      : list(list_case.specs, list_case.chunk_size, unused),
        norm(list, p, clipper.per_tensor),
        state(clipper, static_cast<int64_t>(list.size())),
        scale{update.active ? list.list() : ChunkList{},
              DeviceValues{update_factors(update, state.result_slots(), state.coef()),
                           static_cast<int32_t>(DType::kFloat32)},
              update.per_tensor, update.clear_on_zero, update.zero_where_set} {}
  std::vector<Field> fields() const {
    std::vector<Field> out = state.fields();
    out.push_back(field("total norm", norm.total));
    out.push_back(field("per-tensor norms", norm.per_tensor_norms));
    for (size_t t = 0; t < list.size(); ++t) out.push_back(field("grads", list.tensor(t)));
    return out;
  }
};

// What a step's grads hold before it: fresh values, the same on every copy, then the step's event.
enum class Event { kNone, kSpike, kNaN, kInf };
const std::vector<Event> kSteps = {Event::kNone, Event::kNone, Event::kSpike, Event::kNaN, Event::kNone, Event::kInf};

void fill_grads(TestList& list, uint32_t seed, Event event) {
  Rng rng(seed);
  size_t last = list.size();  // the last non-empty tensor gets the NaN or the infinity
  for (size_t t = 0; t < list.size(); ++t) {
    TensorBuffer& tensor = list.tensor(t);
    tensor.fill(rng);
    if (event == Event::kSpike) {
      for (int64_t i = 0; i < tensor.numel(); ++i) tensor.set(i, 8 * tensor.get(i));
    }
    if (tensor.numel() > 0) last = t;
  }
  if ((event == Event::kNaN || event == Event::kInf) && last < list.size()) {
    list.tensor(last).set(list.tensor(last).numel() / 2, event == Event::kNaN ? kNaN : kInf);
  }
}

double stored_as(DType dtype, double value) {
  double storage = 0;
  store_element(&storage, dtype, 0, value);
  return load_element(&storage, dtype, 0);
}

// The same value, the sign of a zero included; any NaN matches any NaN.
bool same_value(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || (a == b && std::signbit(a) == std::signbit(b));
}

// x after the scale kernel's update by the raw factor read (vectorized.cuh's scale_chunks).
double scaled(double x, DType dtype, double factor, const Update& update) {
  const double coef = update.zero_where_set ? (factor != 0.0 ? 0.0 : 1.0) : factor;
  if (update.clear_on_zero && coef == 0.0) return 0.0;
  if (coef == 1.0) return x;
  if (dtype == DType::kFloat64) return x * coef;
  return stored_as(dtype, static_cast<float>(x) * static_cast<float>(coef));
}

void check_norms(const NormBuffers& norm, const NormResult& expected, bool per_tensor, const std::string& what) {
  expect_close(norm.total.get(0), expected.total, tolerance({norm.acc_dtype, norm.total_dtype}),
               [&] { return what + ": total norm"; });
  if (!per_tensor) return;
  for (size_t t = 0; t < expected.per_tensor.size(); ++t) {
    expect_close(norm.per_tensor_norms.get(static_cast<int64_t>(t)), expected.per_tensor[t], tolerance(norm.acc_dtype),
                 [&] { return what + ": norm of tensor " + std::to_string(t); });
  }
}

// The clipper's steps on `list_case`, one copy through the single launch, one through the
// several kernels with a grid alternating between 1 and `grid` blocks, one on the host.
template <typename Clipper>
void test_clip_step(const Clipper& clipper, const std::string& name, const ListCase& list_case, double p,
                    bool scale_grads, int grid, const std::vector<Event>& events = kSteps) {
  const bool per_tensor = clipper.per_tensor;
  const Update update = grads_update(scale_grads, clipper.config.policy, per_tensor);
  Copy<Clipper> single(clipper, list_case, p, update), several(clipper, list_case, p, update);
  typename Clipper::State host(clipper, static_cast<int64_t>(single.list.size()));
  const int cooperative_grid = std::min(simt::max_cooperative_blocks(), std::max(single.list.num_chunks(), 1));
  const std::string what_list = name + " p=" + std::to_string(p) + " on " + single.list.describe() +
                                " (cooperative grid " + std::to_string(cooperative_grid) + ")";
  int step = 0;
  for (const Event event : events) {
    const int blocks = step % 2 == 0 ? 1 : grid;
    const std::string what = what_list + " step " + std::to_string(step) + " grid=" + std::to_string(blocks);
    const uint32_t seed = 1000 + 17 * static_cast<uint32_t>(step++);
    fill_grads(single.list, seed, event);
    fill_grads(several.list, seed, event);
    const std::vector<std::vector<double>> before = single.list.values();
    single.norm.blocks_done[0] = several.norm.blocks_done[0] = 0;

    expect_launched(cuda::launch_clip_step(single.norm.params, clipper.step(single.state, single.norm), single.scale,
                                           blocks, /*single_launch=*/true, nullptr),
                    what + " single launch");
    // The cooperative kernel takes no ticket: the norm kernel's counter tells the paths apart.
    expect(single.norm.blocks_done[0] == 0, what + ": the single launch ran the norm kernel");
    expect_launched(cuda::launch_clip_step(several.norm.params, clipper.step(several.state, several.norm),
                                           several.scale, blocks, /*single_launch=*/false, nullptr),
                    what + " several kernels");
    expect(several.norm.blocks_done[0] == static_cast<unsigned>(blocks),
           what + ": every block of the norm kernel takes one ticket");
    expect_same_fields(single.fields(), several.fields(), what + ": single launch against several kernels");

    const NormResult reference = reference_norm(before, p);
    check_norms(single.norm, reference, per_tensor, what);
    clipper.host_step(host, single.norm);
    expect_same_fields(single.state.fields(), host.fields(), what + ": against the host step");

    // The grads: each scaled by its factor as the host step wrote it (an inactive update, none).
    const float* factors = update_factors(update, host.result_slots(), host.coef());
    for (size_t t = 0; t < single.list.size(); ++t) {
      const TensorBuffer& tensor = single.list.tensor(t);
      const double factor = factors[update.per_tensor ? t : 0];
      for (int64_t i = 0; i < tensor.numel(); ++i) {
        const double want = update.active ? scaled(before[t][i], tensor.dtype(), factor, update) : before[t][i];
        const bool ok = same_value(tensor.get(i), want);
        expect(ok, ok ? std::string()
                      : what + ": tensor " + std::to_string(t) + "[" + std::to_string(i) + "] " +
                            describe(tensor.get(i), want));
      }
    }
    single.list.expect_guards_intact(what + " single launch");
    several.list.expect_guards_intact(what + " several kernels");
  }
}

}  // namespace

void test_clip_step_kernels() {
  using D = DType;
  // Small lists (the sanitizer builds are slow) of 32-element chunks: starts 0-7 elements off,
  // lengths around the 16-byte vectors and the chunks, empty tensors. "mixed" has 9 chunks, more
  // than a cooperative grid has blocks; "with float64" 6 (the norms accumulate in double, the
  // total is float64); "one chunk" is bfloat16 (a cooperative grid of 1, a bfloat16 total).
  const ListCase mixed{"mixed",
                       {{D::kFloat32, 9, 1},
                        {D::kFloat16, 0, 3},
                        {D::kBFloat16, 65, 5},
                        {D::kFloat32, 8, 0},
                        {D::kFloat16, 33, 7},
                        {D::kFloat32, 0, 2},
                        {D::kBFloat16, 1, 1},
                        {D::kFloat32, 40, 3}},
                       32};
  const ListCase with_double{
      "with float64", {{D::kFloat64, 9, 1}, {D::kFloat32, 40, 2}, {D::kFloat16, 0, 0}, {D::kBFloat16, 70, 6}}, 32};
  const ListCase one_chunk{"one chunk", {{D::kBFloat16, 0, 1}, {D::kBFloat16, 20, 3}, {D::kBFloat16, 0, 0}}, 32};

  // A tensor of more than 32 chunks (4 elements each), folded by a warp (norm_partials.cuh): its
  // lane 0 writes the contribution another thread reads after the second grid barrier. Slow
  // under ThreadSanitizer (a block-wide reduction per chunk): two steps.
  const ListCase many_chunks{"many chunks", {{D::kFloat32, 3, 1}, {D::kFloat16, 131, 3}}, 4};
  // Only empty tensors: no chunk at all (a cooperative grid of 1; zero norms).
  const ListCase all_empty{"all empty", {{D::kFloat32, 0, 1}, {D::kFloat16, 0, 2}}, 32};

  // ZClip scaling by its factor; the zero policy clears the grads of a non-finite step.
  const ZClipConfig zclip{.alpha = 0.9,
                          .z_thresh = 2.5,
                          .max_grad_norm = 0,
                          .eps = 1e-6,
                          .clip_factor = 1.0,
                          .warmup_steps = 2,
                          .threshold_mode = ZClipThresholdMode::kZScore,
                          .clip_option = ZClipClipOption::kAdaptiveScaling,
                          .has_max_grad_norm = false,
                          .skip_update_on_spike = false,
                          .reference = false,
                          .policy = P::kZero};
  test_clip_step(ZClip{zclip}, "zclip zero", mixed, 2.0, /*scale_grads=*/true, 3);
  // NormClip: with an attached optimizer (zero_where_set: only a non-finite step's grads change,
  // to zeros); in the inf-norm, propagating (a NaN factor; 0 for an infinite norm, no clear);
  // in the 1-norm, skipping; with a warp's fold.
  test_clip_step(NormClip{NormClipConfig{.max_norm = 3.0, .policy = P::kZero}}, "normclip zero, optimizer scales",
                 with_double, 2.0, /*scale_grads=*/false, 3);
  test_clip_step(NormClip{NormClipConfig{.max_norm = 1.5, .policy = P::kPropagate}}, "normclip propagate", one_chunk,
                 kInf, /*scale_grads=*/true, 2);
  test_clip_step(NormClip{NormClipConfig{.max_norm = 20.0, .policy = P::kSkip}}, "normclip skip", mixed, 1.0,
                 /*scale_grads=*/true, 3);
  test_clip_step(NormClip{NormClipConfig{.max_norm = 3.0, .policy = P::kZero}}, "normclip zero, warp fold", many_chunks,
                 2.0, /*scale_grads=*/true, 3, {Event::kNone, Event::kNaN});
  // AutoClip on the total (its factor in the result) and per tensor (a factor each, zero policy).
  test_clip_step(
      AutoClip{AutoClipConfig{.q = 0.5, .whole_history = true, .lag = false, .reference = false, .policy = P::kSkip}, 8,
               8, 0, /*per_tensor=*/false},
      "autoclip global", mixed, 2.0, /*scale_grads=*/true, 3);
  test_clip_step(
      AutoClip{AutoClipConfig{.q = 0.25, .whole_history = false, .lag = true, .reference = false, .policy = P::kZero},
               0, 0, 3, /*per_tensor=*/true},
      "autoclip per tensor", with_double, 2.0, /*scale_grads=*/true, 3);
  // AdaGC per tensor; and with the grads left alone (an empty scale list).
  const AdaGCConfig adagc{.lambda_abs = 1.0,
                          .lambda_rel = 1.05,
                          .beta = 0.9,
                          .eps = 1e-6,
                          .warmup_steps = 1,
                          .reference = false,
                          .policy = P::kSkip};
  test_clip_step(AdaGC{adagc}, "adagc", mixed, 2.0, /*scale_grads=*/true, 3);
  test_clip_step(AdaGC{adagc}, "adagc, grads untouched", one_chunk, 2.0, /*scale_grads=*/false, 2);
  test_clip_step(AdaGC{adagc}, "adagc, empty tensors", all_empty, 2.0, /*scale_grads=*/true, 2,
                 {Event::kNone, Event::kNone, Event::kNone});
}

}  // namespace selftest
}  // namespace fastclip
