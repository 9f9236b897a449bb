// Group normalisation with one group (the transformer's GroupNorm1, models.py) and its gradient,
// each in one op:
//
//   DynsparseGroupNorm(x [N, ..., H], gamma [H], beta [H]; epsilon) -> (y, mean [N], rstd [N])
//     y = (x - mean_n) * rstd_n * gamma + beta,  mean_n and variance_n over example n's M elements,
//     rstd_n = 1 / sqrt(variance_n + epsilon)
//   DynsparseGroupNormGrad(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)
//     xhat = (x - mean) * rstd, g = dy * gamma,
//     dx = rstd * (g - sum(g) / M - xhat * sum(g * xhat) / M),
//     dgamma = sum over examples and positions of dy * xhat, dbeta = the same of dy.
//
// TensorFlow's version is ~10 ops forward and ~25 backward; on the transformer's [32, 28, 96]
// activations they took 0.28-0.31 ms a norm (forward and backward, one thread), these two take
// 0.12-0.13 ms; two such norms and the positional table's run every step, in the dense and the
// sparse models alike (docs/performance.md). Each example is one unit of the thread pool,
// with its sums in eight fixed lanes, and dgamma, dbeta are summed over the examples' parts in
// example order: the result does not depend on the threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bsmm_groups.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dynsparse {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::TensorShape;

constexpr int kNormLanes = 8;
typedef float NormLanes __attribute__((vector_size(kNormLanes * sizeof(float))));

inline NormLanes LoadLanes(const float* p) {
  NormLanes v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Sum over i in [0, n) of f(a[i], b[i], c[i]) (f elementwise, on lanes or floats), element i in
// lane i % kNormLanes, then the lanes in order: a fixed order whatever the thread split.
template <typename F>
inline float LaneSum(int64_t n, const float* a, const float* b, const float* c, F f) {
  NormLanes lanes = {};
  int64_t i = 0;
  for (; i + kNormLanes <= n; i += kNormLanes) {
    lanes += f(LoadLanes(a + i), LoadLanes(b + i), LoadLanes(c + i));
  }
  for (int k = 0; i + k < n; ++k) lanes[k] += f(a[i + k], b[i + k], c[i + k]);
  float total = 0.0f;
  for (int k = 0; k < kNormLanes; ++k) total += lanes[k];
  return total;
}

// gamma (or beta) repeated over an example's m elements (m a multiple of its h), so that every
// loop below walks contiguous elements.
std::vector<float> Tiled(const float* features, int64_t h, int64_t m) {
  std::vector<float> tiled(static_cast<size_t>(m));
  for (int64_t s = 0; s < m; s += h) std::copy_n(features, h, tiled.data() + s);
  return tiled;
}

// Checks shared by both ops: x of rank >= 2 (examples first), gamma and beta [H], H = x's last
// axis. Sets n (examples), m (elements an example) and h.
absl::Status CheckNormShapes(const char* op, const Tensor& x, const Tensor& gamma,
                             const Tensor& beta, int64_t* n, int64_t* m, int64_t* h) {
  if (x.dims() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": x must be [examples, ..., features] (rank >= 2), got shape ",
        x.shape().DebugString(), "."));
  }
  *h = x.dim_size(x.dims() - 1);
  const TensorShape features({*h});
  if (gamma.shape() != features || beta.shape() != features) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": gamma and beta must be [", *h, "] (x's last axis), got ",
        gamma.shape().DebugString(), " and ", beta.shape().DebugString(), "."));
  }
  *n = x.dim_size(0);
  *m = *n == 0 ? 0 : x.NumElements() / *n;
  return absl::OkStatus();
}

class GroupNormOp : public OpKernel {
 public:
  explicit GroupNormOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES(c, epsilon_ > 0.0f,
                absl::InvalidArgumentError(absl::StrCat(
                    "DynsparseGroupNorm: epsilon must be > 0, got ", epsilon_,
                    ". GroupNorm1 uses 1e-6.")));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& gamma = ctx->input(1);
    const Tensor& beta = ctx->input(2);
    int64_t n = 0, m = 0, h = 0;
    OP_REQUIRES_OK(ctx, CheckNormShapes("DynsparseGroupNorm", x, gamma, beta, &n, &m, &h));
    Tensor *y = nullptr, *mean = nullptr, *rstd = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({n}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({n}), &rstd));
    if (m == 0) return;
    const float* xd = Data<float>(x);
    const float* gd = Data<float>(gamma);
    const float* bd = Data<float>(beta);
    float* yd = MutableData<float>(y);
    float* meand = MutableData<float>(mean);
    float* rstdd = MutableData<float>(rstd);
    const float inverse_m = 1.0f / static_cast<float>(m);
    const std::vector<float> gamma_tiled = Tiled(gd, h, m), beta_tiled = Tiled(bd, h, m);
    const float* gt = gamma_tiled.data();
    const float* bt = beta_tiled.data();
    ParallelUnits(ctx, n, m * 6, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const float* xe = xd + e * m;
        float* ye = yd + e * m;
        const float mu = LaneSum(m, xe, xe, xe, [](auto x, auto, auto) { return x; }) * inverse_m;
        const float variance = LaneSum(m, xe, xe, xe, [mu](auto x, auto, auto) {
                                 const auto d = x - mu;
                                 return d * d;
                               }) * inverse_m;
        const float r = 1.0f / std::sqrt(variance + epsilon_);
        meand[e] = mu;
        rstdd[e] = r;
        for (int64_t i = 0; i < m; ++i) ye[i] = (xe[i] - mu) * r * gt[i] + bt[i];
      }
    });
  }

 private:
  float epsilon_;
};

class GroupNormGradOp : public OpKernel {
 public:
  explicit GroupNormGradOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& gamma = ctx->input(2);
    const Tensor& mean = ctx->input(3);
    const Tensor& rstd = ctx->input(4);
    int64_t n = 0, m = 0, h = 0;
    OP_REQUIRES_OK(ctx, CheckNormShapes("DynsparseGroupNormGrad", x, gamma, gamma, &n, &m, &h));
    OP_REQUIRES(ctx,
                dy.shape() == x.shape() && mean.shape() == TensorShape({n}) &&
                    rstd.shape() == TensorShape({n}),
                absl::InvalidArgumentError(absl::StrCat(
                    "DynsparseGroupNormGrad: dy must have x's shape ", x.shape().DebugString(),
                    " and mean, rstd the shape [", n, "] (DynsparseGroupNorm's outputs), got ",
                    dy.shape().DebugString(), ", ", mean.shape().DebugString(), ", ",
                    rstd.shape().DebugString(), ".")));
    Tensor *dx = nullptr, *dgamma = nullptr, *dbeta = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gamma.shape(), &dbeta));
    float* dgd = MutableData<float>(dgamma);
    float* dbd = MutableData<float>(dbeta);
    std::fill_n(dgd, h, 0.0f);
    std::fill_n(dbd, h, 0.0f);
    if (m == 0) return;
    const float* dyd = Data<float>(dy);
    const float* xd = Data<float>(x);
    const float* gd = Data<float>(gamma);
    const float* meand = Data<float>(mean);
    const float* rstdd = Data<float>(rstd);
    float* dxd = MutableData<float>(dx);
    // Each example's part of dgamma and dbeta, summed over the examples below in their order.
    std::vector<float> parts(static_cast<size_t>(n) * 2 * h, 0.0f);
    const float inverse_m = 1.0f / static_cast<float>(m);
    const std::vector<float> gamma_tiled = Tiled(gd, h, m);
    const float* gt = gamma_tiled.data();
    ParallelUnits(ctx, n, m * 10, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        const float* xe = xd + e * m;
        const float* ge = dyd + e * m;
        float* dxe = dxd + e * m;
        const float mu = meand[e], r = rstdd[e];
        const float sum_g = LaneSum(m, ge, gt, gt, [](auto dy, auto g, auto) { return dy * g; });
        const float sum_gx = LaneSum(m, ge, gt, xe, [mu, r](auto dy, auto g, auto x) {
          return dy * g * ((x - mu) * r);
        });
        const float mean_g = sum_g * inverse_m, mean_gx = sum_gx * inverse_m;
        for (int64_t i = 0; i < m; ++i) {
          const float xhat = (xe[i] - mu) * r;
          dxe[i] = r * (ge[i] * gt[i] - mean_g - xhat * mean_gx);
        }
        float* dgamma_part = parts.data() + e * 2 * h;
        float* dbeta_part = dgamma_part + h;
        for (int64_t s = 0; s < m; s += h) {
          for (int64_t f = 0; f < h; ++f) {
            dgamma_part[f] += ge[s + f] * ((xe[s + f] - mu) * r);
            dbeta_part[f] += ge[s + f];
          }
        }
      }
    });
    for (int64_t e = 0; e < n; ++e) {
      const float* dgamma_part = parts.data() + e * 2 * h;
      for (int64_t f = 0; f < h; ++f) {
        dgd[f] += dgamma_part[f];
        dbd[f] += dgamma_part[h + f];
      }
    }
  }
};

REGISTER_OP("DynsparseGroupNorm")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: float")
    .Output("mean: float")
    .Output("rstd: float")
    .Attr("epsilon: float = 1e-6")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 2, &x));
      c->set_output(0, x);
      c->set_output(1, c->Vector(c->Dim(x, 0)));
      c->set_output(2, c->Vector(c->Dim(x, 0)));
      return absl::OkStatus();
    });

REGISTER_OP("DynsparseGroupNormGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("gamma: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Output("dx: float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(1), 2, &x));
      TF_RETURN_IF_ERROR(c->Merge(x, c->input(0), &x));
      c->set_output(0, x);
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("DynsparseGroupNorm").Device(tensorflow::DEVICE_CPU), GroupNormOp);
REGISTER_KERNEL_BUILDER(Name("DynsparseGroupNormGrad").Device(tensorflow::DEVICE_CPU),
                        GroupNormGradOp);

}  // namespace
}  // namespace dynsparse
