// Fused inverted dropout: y = x * mask, mask = (u >= rate) / (1 - rate), u uniform in [0, 1),
// in one op that also advances the random generator. TensorFlow's version is ~12 small ops per
// layer and direction (read-and-skip of the generator, Philox, compare, divide, select, ...), which
// at the FC's size costs more than the whole sparse first layer (docs/performance.md).
//
//   DynsparseDropout(x, state; rate) -> (y, mask)        gradient: dx = dy * mask
//
// The uniform numbers are a counter-based hash (SplitMix64 finaliser) of (key, counter + i/2): two
// 24-bit numbers per hash, element i takes half i % 2. `state` is a tf.random.Generator's int64
// state [counter, counter_hi, key] (Philox layout); the op advances the counter by the hashes it
// used, so consecutive calls draw fresh numbers and a run is reproducible from the seed. Each
// element depends only on its index, so the result does not depend on the threads. The element
// loop is vectorised per instruction-set variant (fused_dropout_elements.h, chosen at load time
// like the block-sparse products, bsmm_dispatch.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bsmm_dispatch.h"
#include "bsmm_groups.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dynsparse {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::TensorShape;
using tensorflow::Var;
using tensorflow::core::RefCountPtr;

constexpr char kOp[] = "DynsparseDropout";
constexpr int64_t kUnitElements = 4096;

inline uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class DynsparseDropoutOp : public OpKernel {
 public:
  explicit DynsparseDropoutOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("rate", &rate_));
    OP_REQUIRES(c, rate_ >= 0.0f && rate_ < 1.0f,
                absl::InvalidArgumentError(absl::StrCat(
                    kOp, ": rate must be in [0, 1), got ", rate_, ". Use 0 for no dropout.")));
  }

  void Compute(OpKernelContext* ctx) override {
    const KernelTable<float>* table = nullptr;
    OP_REQUIRES_OK(ctx, ActiveTable(&table));
    const Tensor& x = ctx->input(0);
    const int64_t n = x.NumElements();
    uint64_t key = 0, counter = 0;
    OP_REQUIRES_OK(ctx, Advance(ctx, (n + 1) / 2, &key, &counter));
    Tensor* y = nullptr;
    Tensor* mask = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, x.shape(), &mask));
    const float* xd = Data<float>(x);
    float* yd = MutableData<float>(y);
    float* md = MutableData<float>(mask);
    DropoutParams params;
    params.seed = Mix(key ^ 0x9e3779b97f4a7c15ULL);
    params.counter = counter;
    // u >= rate  <=>  24-bit integer >= threshold, exactly as for u = bits * 2^-24.
    params.threshold = static_cast<uint64_t>(
        std::ceil(static_cast<double>(rate_) * static_cast<double>(1 << 24)));
    params.scale = 1.0f / (1.0f - rate_);
    const int64_t units = (n + kUnitElements - 1) / kUnitElements;
    ParallelUnits(ctx, units, kUnitElements, [&](int64_t begin, int64_t end) {
      table->dropout(params, xd, yd, md, begin * kUnitElements, std::min(n, end * kUnitElements));
    });
  }

 private:
  // Reads the generator's key and counter and advances the counter by `hashes`.
  absl::Status Advance(OpKernelContext* ctx, int64_t hashes, uint64_t* key, uint64_t* counter) {
    RefCountPtr<Var> var;
    TF_RETURN_IF_ERROR(LookupResource(ctx, HandleFromInput(ctx, 1), &var));
    tensorflow::mutex_lock lock(*var->mu());
    Tensor* state = var->tensor();
    if (!state->IsInitialized() || state->dtype() != tensorflow::DT_INT64 ||
        state->NumElements() < 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          kOp, ": state must be the int64 state of a Philox tf.random.Generator (3 elements)."));
    }
    if (var->copy_on_read_mode.load() || !state->RefCountIsOne()) {
      Tensor copy;
      TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_INT64, state->shape(), &copy));
      std::memcpy(const_cast<char*>(copy.tensor_data().data()), state->tensor_data().data(),
                  state->TotalBytes());
      *state = copy;
    }
    int64_t* s = MutableData<int64_t>(state);
    *counter = static_cast<uint64_t>(s[0]);
    *key = static_cast<uint64_t>(s[2]);
    s[0] = static_cast<int64_t>(*counter + static_cast<uint64_t>(hashes));
    return absl::OkStatus();
  }

  float rate_;
};

REGISTER_OP("DynsparseDropout")
    .Input("x: float")
    .Input("state: resource")
    .Output("y: float")
    .Output("mask: float")
    .Attr("rate: float")
    .SetIsStateful()
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("DynsparseDropout").Device(tensorflow::DEVICE_CPU),
                        DynsparseDropoutOp);

}  // namespace
}  // namespace dynsparse
