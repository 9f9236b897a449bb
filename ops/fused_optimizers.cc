// Fused optimizer updates: one op updates every trainable variable of a model (and Adam's beta
// powers), instead of one ResourceApply* op per variable plus the ops that advance the powers.
// At the FC's size a training step is dominated by per-op costs of the executor, so ~10 ops fewer
// per step is a measurable share of it (docs/performance.md).
//
//   DynsparseApplyAdam(vars, m, v, grads, lr, beta1_power, beta2_power; beta1, beta2, epsilon)
//   DynsparseApplyMomentum(vars, accum, grads, lr; momentum, use_nesterov)
//
// The arithmetic is TensorFlow's ApplyAdam / ApplyMomentum (training_ops.cc), element by element,
// so results do not depend on the number of threads. Variables whose buffer is shared with a
// reader are copied before the update, as TensorFlow's PrepareToUpdateVariable does.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bsmm_groups.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dynsparse {
namespace {

using tensorflow::core::RefCountPtr;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::Var;

// Elements per parallel unit of an update; small variables run inline (ParallelUnits).
constexpr int64_t kOptimizerUnitElements = 4096;
constexpr int64_t kCostPerElement = 8;

absl::Status LookupVar(OpKernelContext* ctx, int input, const char* op, const char* what,
                       RefCountPtr<Var>* var) {
  const absl::Status status = LookupResource(ctx, HandleFromInput(ctx, input), var);
  if (status.ok()) return status;
  return absl::FailedPreconditionError(absl::StrCat(
      op, ": ", what, " (input ", input, ") is not an initialised resource variable: ",
      status.message(), ". Create the variables (and the optimizer's slots) before the update."));
}

// The variable's tensor, float and of `shape`, with a buffer no reader shares.
absl::Status WritableFloat(OpKernelContext* ctx, const char* op, const char* what, int64_t index,
                           Var* var, const tensorflow::TensorShape& shape, float** data) {
  Tensor* tensor = var->tensor();
  if (!tensor->IsInitialized() || tensor->dtype() != tensorflow::DT_FLOAT) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", what, "[", index,
                                                   "] must be an initialised float32 variable."));
  }
  if (tensor->shape() != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": ", what, "[", index, "] has shape ", tensor->shape().DebugString(),
        " but its gradient has shape ", shape.DebugString(), "; pass the slots of the same "
        "variables, in the same order."));
  }
  if (var->copy_on_read_mode.load() || !tensor->RefCountIsOne()) {
    Tensor copy;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_FLOAT, shape, &copy));
    std::memcpy(const_cast<char*>(copy.tensor_data().data()), tensor->tensor_data().data(),
                tensor->TotalBytes());
    *tensor = copy;
  }
  *data = MutableData<float>(tensor);
  return absl::OkStatus();
}

absl::Status ReadScalar(OpKernelContext* ctx, int input, const char* op, const char* what,
                        float* value) {
  RefCountPtr<Var> var;
  TF_RETURN_IF_ERROR(LookupVar(ctx, input, op, what, &var));
  tensorflow::tf_shared_lock lock(*var->mu());
  const Tensor* t = var->tensor();
  if (!t->IsInitialized() || t->dtype() != tensorflow::DT_FLOAT || t->NumElements() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", what, " must be a float32 scalar variable."));
  }
  *value = Data<float>(*t)[0];
  return absl::OkStatus();
}

// Locks the given variables' mutexes in address order (no deadlock with other multi-variable
// updates) for the lifetime of the object.
class LockedVars {
 public:
  explicit LockedVars(std::vector<Var*> vars) : vars_(std::move(vars)) {
    std::sort(vars_.begin(), vars_.end());
    vars_.erase(std::unique(vars_.begin(), vars_.end()), vars_.end());
    for (Var* v : vars_) v->mu()->lock();
  }
  ~LockedVars() {
    for (auto it = vars_.rbegin(); it != vars_.rend(); ++it) (*it)->mu()->unlock();
  }
  LockedVars(const LockedVars&) = delete;
  LockedVars& operator=(const LockedVars&) = delete;

 private:
  std::vector<Var*> vars_;
};

void ForElements(OpKernelContext* ctx, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t units = (n + kOptimizerUnitElements - 1) / kOptimizerUnitElements;
  const int64_t cost = kOptimizerUnitElements * kCostPerElement;
  ParallelUnits(ctx, units, cost, [&](int64_t begin, int64_t end) {
    fn(begin * kOptimizerUnitElements, std::min(n, end * kOptimizerUnitElements));
  });
}

// Adam's element loop in AVX2 vectors (the library's baseline ISA): a plain loop does not
// vectorise, since std::sqrt keeps errno semantics (a scalar call per element).
__attribute__((target("avx2,fma"))) void AdamElements(int64_t begin, int64_t end,
                                                      const float* g, float* w, float* m,
                                                      float* v, float alpha,
                                                      float one_minus_beta1,
                                                      float one_minus_beta2, float epsilon) {
  const __m256 b1 = _mm256_set1_ps(one_minus_beta1);
  const __m256 b2 = _mm256_set1_ps(one_minus_beta2);
  const __m256 a = _mm256_set1_ps(alpha);
  const __m256 eps = _mm256_set1_ps(epsilon);
  int64_t k = begin;
  for (; k + 8 <= end; k += 8) {
    const __m256 gk = _mm256_loadu_ps(g + k);
    __m256 mk = _mm256_loadu_ps(m + k);
    __m256 vk = _mm256_loadu_ps(v + k);
    mk = _mm256_add_ps(mk, _mm256_mul_ps(_mm256_sub_ps(gk, mk), b1));
    vk = _mm256_add_ps(vk, _mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(gk, gk), vk), b2));
    _mm256_storeu_ps(m + k, mk);
    _mm256_storeu_ps(v + k, vk);
    const __m256 step =
        _mm256_div_ps(_mm256_mul_ps(mk, a), _mm256_add_ps(_mm256_sqrt_ps(vk), eps));
    _mm256_storeu_ps(w + k, _mm256_sub_ps(_mm256_loadu_ps(w + k), step));
  }
  for (; k < end; ++k) {
    const float gk = g[k];
    const float mk = m[k] + (gk - m[k]) * one_minus_beta1;
    const float vk = v[k] + (gk * gk - v[k]) * one_minus_beta2;
    m[k] = mk;
    v[k] = vk;
    w[k] -= (mk * alpha) / (std::sqrt(vk) + epsilon);
  }
}

void MomentumElements(int64_t begin, int64_t end, const float* __restrict g, float* __restrict w,
                      float* __restrict a, float lr, float momentum, bool nesterov) {
  if (nesterov) {
    for (int64_t k = begin; k < end; ++k) {
      const float ak = a[k] * momentum + g[k];
      a[k] = ak;
      w[k] -= g[k] * lr + ak * momentum * lr;
    }
    return;
  }
  for (int64_t k = begin; k < end; ++k) {
    const float ak = a[k] * momentum + g[k];
    a[k] = ak;
    w[k] -= ak * lr;
  }
}

class DynsparseApplyAdamOp : public OpKernel {
 public:
  explicit DynsparseApplyAdamOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("N", &n_));
    OP_REQUIRES_OK(c, c->GetAttr("beta1", &beta1_));
    OP_REQUIRES_OK(c, c->GetAttr("beta2", &beta2_));
    OP_REQUIRES_OK(c, c->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const int scalars = 4 * n_;
    float lr = 0, beta1_power = 0, beta2_power = 0;
    OP_REQUIRES_OK(ctx, ReadScalar(ctx, scalars, kOp, "lr", &lr));
    RefCountPtr<Var> b1, b2;
    OP_REQUIRES_OK(ctx, LookupVar(ctx, scalars + 1, kOp, "beta1_power", &b1));
    OP_REQUIRES_OK(ctx, LookupVar(ctx, scalars + 2, kOp, "beta2_power", &b2));
    {
      LockedVars lock({b1.get(), b2.get()});
      float *p1 = nullptr, *p2 = nullptr;
      const tensorflow::TensorShape scalar({});
      OP_REQUIRES_OK(ctx, WritableFloat(ctx, kOp, "beta1_power", 0, b1.get(), scalar, &p1));
      OP_REQUIRES_OK(ctx, WritableFloat(ctx, kOp, "beta2_power", 0, b2.get(), scalar, &p2));
      beta1_power = *p1;
      beta2_power = *p2;
      // Advanced after this step's update reads them, as the per-variable version did.
      *p1 = beta1_power * beta1_;
      *p2 = beta2_power * beta2_;
    }
    const float alpha = lr * std::sqrt(1.0f - beta2_power) / (1.0f - beta1_power);
    const float one_minus_beta1 = 1.0f - beta1_;
    const float one_minus_beta2 = 1.0f - beta2_;
    const float epsilon = epsilon_;
    for (int i = 0; i < n_; ++i) {
      const Tensor& grad = ctx->input(3 * n_ + i);
      RefCountPtr<Var> var, m, v;
      OP_REQUIRES_OK(ctx, LookupVar(ctx, i, kOp, "vars", &var));
      OP_REQUIRES_OK(ctx, LookupVar(ctx, n_ + i, kOp, "m", &m));
      OP_REQUIRES_OK(ctx, LookupVar(ctx, 2 * n_ + i, kOp, "v", &v));
      LockedVars lock({var.get(), m.get(), v.get()});
      float *w = nullptr, *mp = nullptr, *vp = nullptr;
      OP_REQUIRES_OK(ctx, WritableFloat(ctx, kOp, "vars", i, var.get(), grad.shape(), &w));
      OP_REQUIRES_OK(ctx, WritableFloat(ctx, kOp, "m", i, m.get(), grad.shape(), &mp));
      OP_REQUIRES_OK(ctx, WritableFloat(ctx, kOp, "v", i, v.get(), grad.shape(), &vp));
      const float* g = Data<float>(grad);
      ForElements(ctx, grad.NumElements(), [&](int64_t begin, int64_t end) {
        AdamElements(begin, end, g, w, mp, vp, alpha, one_minus_beta1, one_minus_beta2, epsilon);
      });
    }
  }

 private:
  static constexpr char kOp[] = "DynsparseApplyAdam";
  int n_;
  float beta1_, beta2_, epsilon_;
};

class DynsparseApplyMomentumOp : public OpKernel {
 public:
  explicit DynsparseApplyMomentumOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("N", &n_));
    OP_REQUIRES_OK(c, c->GetAttr("momentum", &momentum_));
    OP_REQUIRES_OK(c, c->GetAttr("use_nesterov", &nesterov_));
  }

  void Compute(OpKernelContext* ctx) override {
    float lr = 0;
    OP_REQUIRES_OK(ctx, ReadScalar(ctx, 3 * n_, kOp, "lr", &lr));
    const float momentum = momentum_;
    for (int i = 0; i < n_; ++i) {
      const Tensor& grad = ctx->input(2 * n_ + i);
      RefCountPtr<Var> var, accum;
      OP_REQUIRES_OK(ctx, LookupVar(ctx, i, kOp, "vars", &var));
      OP_REQUIRES_OK(ctx, LookupVar(ctx, n_ + i, kOp, "accum", &accum));
      LockedVars lock({var.get(), accum.get()});
      float *w = nullptr, *a = nullptr;
      OP_REQUIRES_OK(ctx, WritableFloat(ctx, kOp, "vars", i, var.get(), grad.shape(), &w));
      OP_REQUIRES_OK(ctx, WritableFloat(ctx, kOp, "accum", i, accum.get(), grad.shape(), &a));
      const float* g = Data<float>(grad);
      const bool nesterov = nesterov_;
      ForElements(ctx, grad.NumElements(), [&](int64_t begin, int64_t end) {
        MomentumElements(begin, end, g, w, a, lr, momentum, nesterov);
      });
    }
  }

 private:
  static constexpr char kOp[] = "DynsparseApplyMomentum";
  int n_;
  float momentum_;
  bool nesterov_;
};

REGISTER_OP("DynsparseApplyAdam")
    .Input("vars: N * resource")
    .Input("m: N * resource")
    .Input("v: N * resource")
    .Input("grads: N * float")
    .Input("lr: resource")
    .Input("beta1_power: resource")
    .Input("beta2_power: resource")
    .Attr("N: int >= 1")
    .Attr("beta1: float")
    .Attr("beta2: float")
    .Attr("epsilon: float")
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);

REGISTER_OP("DynsparseApplyMomentum")
    .Input("vars: N * resource")
    .Input("accum: N * resource")
    .Input("grads: N * float")
    .Input("lr: resource")
    .Attr("N: int >= 1")
    .Attr("momentum: float")
    .Attr("use_nesterov: bool")
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);

REGISTER_KERNEL_BUILDER(Name("DynsparseApplyAdam").Device(tensorflow::DEVICE_CPU),
                        DynsparseApplyAdamOp);
REGISTER_KERNEL_BUILDER(Name("DynsparseApplyMomentum").Device(tensorflow::DEVICE_CPU),
                        DynsparseApplyMomentumOp);

}  // namespace
}  // namespace dynsparse
