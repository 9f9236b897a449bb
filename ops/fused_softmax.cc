// Softmax over the last axis of a scaled input, and its gradient, each in one op:
//
//   DynsparseScaledSoftmax(x; scale) -> y = softmax(scale * x)
//   DynsparseScaledSoftmaxGrad(y, dy; scale) -> dx = scale * y * (dy - sum(dy * y, last axis))
//
// The attention of the transformer (its dense and its sparse models alike) applies them to its
// scores [B, heads, T, T]: TensorFlow's version is a multiply, oneDNN's softmax over rows of 28
// elements and five ops for the gradient (multiply, sum, subtract, multiply, and the scale's
// multiply), 1.0-1.3 ms forward and backward at one thread for the default model's
// [32, 16, 28, 28], of a sparse step of ~10 ms; these two take 0.35-0.44 ms (docs/performance.md). Rows are vectorised per instruction-set variant
// (fused_softmax_elements.h, chosen at load time like the block-sparse products), each row whole in
// one thread: the result does not depend on the threads.
#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bsmm_dispatch.h"
#include "bsmm_groups.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dynsparse {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;

// Roughly the cycles of one element (an exp, or a multiply-add and two multiplies), for the
// thread pool's split: the attention's 401,408 scores split, a few rows do not.
constexpr int64_t kSoftmaxElementCost = 8;

absl::Status ReadScale(OpKernelConstruction* c, const char* op, float* scale) {
  TF_RETURN_IF_ERROR(c->GetAttr("scale", scale));
  if (!(*scale > 0.0f) || !std::isfinite(*scale)) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": scale must be a finite number > 0, got ", *scale,
        ". The attention passes 1/sqrt(head size); use 1 for a plain softmax."));
  }
  return absl::OkStatus();
}

// DynsparseScaledSoftmax (kGradient false: x -> y) and its gradient (true: y, dy -> dx).
template <bool kGradient>
class ScaledSoftmaxOp : public OpKernel {
 public:
  static constexpr const char* kName =
      kGradient ? "DynsparseScaledSoftmaxGrad" : "DynsparseScaledSoftmax";

  explicit ScaledSoftmaxOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, ReadScale(c, kName, &scale_));
  }

  void Compute(OpKernelContext* ctx) override {
    const KernelTable<float>* table = nullptr;
    OP_REQUIRES_OK(ctx, ActiveTable(&table));
    const Tensor& in = ctx->input(0);
    const Tensor& dy = ctx->input(kGradient ? 1 : 0);
    OP_REQUIRES(ctx, in.dims() >= 1 && in.shape() == dy.shape(),
                absl::InvalidArgumentError(absl::StrCat(
                    kName,
                    kGradient ? ": y and dy must have one shape with at least one axis, got "
                              : ": x must have at least one axis (the softmax's), got ",
                    in.shape().DebugString(), kGradient ? " and " : "",
                    kGradient ? dy.shape().DebugString() : "", ".")));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, in.shape(), &out));
    const int64_t n = in.dim_size(in.dims() - 1);
    if (in.NumElements() == 0) return;
    const float* ind = Data<float>(in);
    const float* dyd = Data<float>(dy);
    float* outd = MutableData<float>(out);
    // n >= 1 here: the tensor has elements.
    ParallelUnits(ctx, in.NumElements() / n, n * kSoftmaxElementCost,
                  [&](int64_t begin, int64_t end) {
                    if constexpr (kGradient) {
                      table->softmax_grad(ind, dyd, outd, n, scale_, begin, end);
                    } else {
                      table->softmax(ind, outd, n, scale_, begin, end);
                    }
                  });
  }

 private:
  float scale_;
};

REGISTER_OP("DynsparseScaledSoftmax")
    .Input("x: float")
    .Output("y: float")
    .Attr("scale: float = 1.0")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &x));
      c->set_output(0, x);
      return absl::OkStatus();
    });

REGISTER_OP("DynsparseScaledSoftmaxGrad")
    .Input("y: float")
    .Input("dy: float")
    .Output("dx: float")
    .Attr("scale: float = 1.0")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle y;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 1, &y));
      TF_RETURN_IF_ERROR(c->Merge(y, c->input(1), &y));
      c->set_output(0, y);
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("DynsparseScaledSoftmax").Device(tensorflow::DEVICE_CPU),
                        ScaledSoftmaxOp<false>);
REGISTER_KERNEL_BUILDER(Name("DynsparseScaledSoftmaxGrad").Device(tensorflow::DEVICE_CPU),
                        ScaledSoftmaxOp<true>);

}  // namespace
}  // namespace dynsparse
