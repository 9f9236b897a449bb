// CPU kernels of the block-sparse matmul ops (registration: bsmm_ops.cc). They check the
// arguments, group the blocks (cached per kernel), allocate the outputs and call the products of
// the instruction-set variant chosen at load time (bsmm_dispatch.h, bsmm_products.h).
#include <algorithm>
#include <string>

#include "bsmm_checks.h"
#include "bsmm_dispatch.h"
#include "bsmm_groups.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/types.h"

namespace dynsparse {
namespace {

using tensorflow::DataTypeToEnum;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::TensorShape;

absl::Status CheckRank(const char* op, const char* name, const Tensor& t, int rank) {
  if (t.dims() == rank) return absl::OkStatus();
  return RankError(op, name, rank, t.shape().DebugString());
}

absl::Status CheckSameBatch(const char* op, const Tensor& x, const Tensor& dy) {
  if (x.dim_size(0) == dy.dim_size(0)) return absl::OkStatus();
  return SameBatchError(op, x.shape().DebugString(), dy.shape().DebugString());
}

// values [nnz, bs, bs], rows [nnz], cols [nnz]; `values` may be null (ops without values).
absl::Status CheckBlockTensors(const char* op, const Tensor* values, const Tensor& rows,
                               const Tensor& cols, int64_t bs) {
  TF_RETURN_IF_ERROR(CheckRank(op, "rows", rows, 1));
  TF_RETURN_IF_ERROR(CheckRank(op, "cols", cols, 1));
  if (rows.dim_size(0) != cols.dim_size(0)) {
    return CoordinateLengthError(op, absl::StrCat(rows.dim_size(0)),
                                 absl::StrCat(cols.dim_size(0)));
  }
  if (values == nullptr) return absl::OkStatus();
  TF_RETURN_IF_ERROR(CheckRank(op, "values", *values, 3));
  if (values->dim_size(1) != bs || values->dim_size(2) != bs) {
    return ValuesShapeError(op, bs, values->shape().DebugString());
  }
  if (values->dim_size(0) != rows.dim_size(0)) {
    return ValuesCountError(op, absl::StrCat(values->dim_size(0)),
                            absl::StrCat(rows.dim_size(0)));
  }
  return absl::OkStatus();
}

template <typename T>
const KernelTable<T>* TableOrFail(OpKernelContext* ctx) {
  const KernelTable<T>* table = nullptr;
  const absl::Status status = ActiveTable<T>(&table);
  if (!status.ok()) ctx->CtxFailure(__FILE__, __LINE__, status);
  return table;
}

// values^T per block, so the input gradient reuses the forward micro-kernels.
template <typename T>
absl::Status TransposedBlocks(OpKernelContext* ctx, const Tensor& values, int64_t bs,
                              Tensor* out) {
  const int64_t nnz = values.dim_size(0);
  TF_RETURN_IF_ERROR(ctx->allocate_temp(DataTypeToEnum<T>::value, values.shape(), out));
  const T* src = Data<T>(values);
  T* dst = MutableData<T>(out);
  ParallelUnits(ctx, nnz, bs * bs * 2, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* s = src + b * bs * bs;
      T* d = dst + b * bs * bs;
      for (int64_t i = 0; i < bs; ++i) {
        for (int64_t j = 0; j < bs; ++j) d[j * bs + i] = s[i * bs + j];
      }
    }
  });
  return absl::OkStatus();
}

// What differs between the forward op and the input-gradient op: y = x . W against dx = dy . W^T.
struct ForwardKind {
  static constexpr char kOp[] = "BsmmForward";
  static constexpr char kInput[] = "x";
  static constexpr char kInputWidth[] = "n_in (x.shape[1])";
  static constexpr char kOutAttr[] = "n_out";
  static constexpr bool kByRow = false;  // blocks grouped by output block-column
};
struct InputGradKind {
  static constexpr char kOp[] = "BsmmInputGrad";
  static constexpr char kInput[] = "dy";
  static constexpr char kInputWidth[] = "n_out (dy.shape[1])";
  static constexpr char kOutAttr[] = "n_in";
  static constexpr bool kByRow = true;  // blocks grouped by input block-row, values^T
};

// out [m, out_width] = in [m, in_width] . W (forward) or . W^T (input gradient).
template <typename T, typename Kind>
class BsmmProductOp : public OpKernel {
 public:
  explicit BsmmProductOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("block_size", &bs_));
    OP_REQUIRES_OK(c, CheckBlockSize(Kind::kOp, bs_));
    OP_REQUIRES_OK(c, c->GetAttr(Kind::kOutAttr, &out_width_));
  }

  void Compute(OpKernelContext* ctx) override {
    constexpr const char* op = Kind::kOp;
    const Tensor& in = ctx->input(0);
    const Tensor& values = ctx->input(1);
    const Tensor& rows = ctx->input(2);
    const Tensor& cols = ctx->input(3);
    OP_REQUIRES_OK(ctx, CheckRank(op, Kind::kInput, in, 2));
    OP_REQUIRES_OK(ctx, CheckBlockTensors(op, &values, rows, cols, bs_));
    const int64_t m = in.dim_size(0);
    const int64_t in_width = in.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckDivisible(op, Kind::kInputWidth, in_width, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(op, Kind::kOutAttr, out_width_, bs_));
    const KernelTable<T>* table = TableOrFail<T>(ctx);
    if (table == nullptr) return;
    const int64_t n_in = Kind::kByRow ? out_width_ : in_width;
    const int64_t n_out = Kind::kByRow ? in_width : out_width_;
    const bool by_row = Kind::kByRow || (bs_ == 1 && ElementForwardByRow(m, n_in, n_out));
    std::shared_ptr<const BlockGroups> groups;
    OP_REQUIRES_OK(ctx, groups_.Get(ctx, op, Data<int32_t>(rows), Data<int32_t>(cols),
                                    rows.dim_size(0), n_in / bs_, n_out / bs_, n_in, n_out, bs_,
                                    by_row, &groups));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({m, out_width_}), &out));
    if (m == 0 || out_width_ == 0) return;
    const T* w = Data<T>(values);
    if (bs_ == 1) {
      const T* input = Data<T>(in);
      T* output = MutableData<T>(out);
      OP_REQUIRES_OK(ctx, Kind::kByRow ? table->element_backward(ctx, nullptr, input, m, n_in,
                                                                 n_out, *groups, w, output, nullptr)
                                       : table->element_forward(ctx, input, m, n_in, n_out,
                                                                *groups, w, output));
      return;
    }
    Tensor values_t;
    if (Kind::kByRow && bs_ > 1) {
      OP_REQUIRES_OK(ctx, TransposedBlocks<T>(ctx, values, bs_, &values_t));
      w = Data<T>(values_t);
    }
    OP_REQUIRES_OK(ctx, table->product[BlockSizeIndex(bs_)](ctx, Data<T>(in), m, in_width,
                                                            *groups, w, MutableData<T>(out),
                                                            out_width_));
  }

 private:
  int64_t bs_;
  int64_t out_width_;
  GroupCache groups_;
};

template <typename T>
class BsmmValuesGradOp : public OpKernel {
 public:
  explicit BsmmValuesGradOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("block_size", &bs_));
    OP_REQUIRES_OK(c, CheckBlockSize(kOp, bs_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    const Tensor& rows = ctx->input(2);
    const Tensor& cols = ctx->input(3);
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "x", x, 2));
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "dy", dy, 2));
    OP_REQUIRES_OK(ctx, CheckSameBatch(kOp, x, dy));
    OP_REQUIRES_OK(ctx, CheckBlockTensors(kOp, nullptr, rows, cols, bs_));
    const int64_t m = x.dim_size(0);
    const int64_t n_in = x.dim_size(1);
    const int64_t n_out = dy.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in (x.shape[1])", n_in, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_out (dy.shape[1])", n_out, bs_));
    const KernelTable<T>* table = TableOrFail<T>(ctx);
    if (table == nullptr) return;
    const int64_t nnz = rows.dim_size(0);
    const int32_t* rows_data = Data<int32_t>(rows);
    std::shared_ptr<const BlockGroups> groups;
    OP_REQUIRES_OK(ctx, groups_.Get(ctx, kOp, rows_data, Data<int32_t>(cols), nnz, n_in / bs_,
                                    n_out / bs_, n_in, n_out, bs_, /*by_row=*/true, &groups));
    Tensor* dvalues = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({nnz, bs_, bs_}), &dvalues));
    T* dv = MutableData<T>(dvalues);
    if (nnz == 0) return;
    if (m == 0) {
      std::fill_n(dv, nnz * bs_ * bs_, T(0));
      return;
    }
    if (bs_ == 1) {
      OP_REQUIRES_OK(ctx, table->element_backward(ctx, Data<T>(x), Data<T>(dy), m, n_in, n_out,
                                                  *groups, nullptr, nullptr, dv));
      return;
    }
    OP_REQUIRES_OK(ctx, table->values_grad[BlockSizeIndex(bs_)](
                            ctx, Data<T>(x), m, n_in, Data<T>(dy), n_out, *groups, rows_data, dv));
  }

 private:
  static constexpr char kOp[] = "BsmmValuesGrad";
  int64_t bs_;
  GroupCache groups_;
};

// dx = dy . W^T (when compute_dx) and dvalues = (x^T . dy) at the blocks, from one grouping of
// the blocks; at block size 1 from one pass over dy (ElementBackward).
template <typename T>
class BsmmBackwardOp : public OpKernel {
 public:
  explicit BsmmBackwardOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("block_size", &bs_));
    OP_REQUIRES_OK(c, CheckBlockSize(kOp, bs_));
    OP_REQUIRES_OK(c, c->GetAttr("compute_dx", &compute_dx_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    const Tensor& values = ctx->input(2);
    const Tensor& rows = ctx->input(3);
    const Tensor& cols = ctx->input(4);
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "x", x, 2));
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "dy", dy, 2));
    OP_REQUIRES_OK(ctx, CheckSameBatch(kOp, x, dy));
    OP_REQUIRES_OK(ctx, CheckBlockTensors(kOp, &values, rows, cols, bs_));
    const int64_t m = x.dim_size(0);
    const int64_t n_in = x.dim_size(1);
    const int64_t n_out = dy.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in (x.shape[1])", n_in, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_out (dy.shape[1])", n_out, bs_));
    const KernelTable<T>* table = TableOrFail<T>(ctx);
    if (table == nullptr) return;
    const int64_t nnz = rows.dim_size(0);
    const int32_t* rows_data = Data<int32_t>(rows);
    std::shared_ptr<const BlockGroups> groups;
    OP_REQUIRES_OK(ctx, groups_.Get(ctx, kOp, rows_data, Data<int32_t>(cols), nnz, n_in / bs_,
                                    n_out / bs_, n_in, n_out, bs_, /*by_row=*/true, &groups));
    Tensor* dx = nullptr;
    Tensor* dvalues = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({compute_dx_ ? m : 0, n_in}), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({nnz, bs_, bs_}), &dvalues));
    T* dx_data = compute_dx_ ? MutableData<T>(dx) : nullptr;
    T* dv = MutableData<T>(dvalues);
    if (m == 0 || nnz == 0) {
      std::fill_n(dv, nnz * bs_ * bs_, T(0));
      if (dx_data != nullptr) std::fill_n(dx_data, m * n_in, T(0));
      return;
    }
    const T* w = Data<T>(values);
    if (bs_ == 1) {
      OP_REQUIRES_OK(ctx, table->element_backward(ctx, Data<T>(x), Data<T>(dy), m, n_in, n_out,
                                                  *groups, w, dx_data, dv));
      return;
    }
    const int size_index = BlockSizeIndex(bs_);
    if (dx_data != nullptr) {
      Tensor values_t;
      OP_REQUIRES_OK(ctx, TransposedBlocks<T>(ctx, values, bs_, &values_t));
      OP_REQUIRES_OK(ctx, table->product[size_index](ctx, Data<T>(dy), m, n_out, *groups,
                                                     Data<T>(values_t), dx_data, n_in));
    }
    OP_REQUIRES_OK(ctx, table->values_grad[size_index](ctx, Data<T>(x), m, n_in, Data<T>(dy),
                                                       n_out, *groups, rows_data, dv));
  }

 private:
  static constexpr char kOp[] = "BsmmBackward";
  int64_t bs_;
  bool compute_dx_;
  GroupCache groups_;
};

template <typename T>
class BsmmDenseGradOp : public OpKernel {
 public:
  explicit BsmmDenseGradOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("block_size", &bs_));
    OP_REQUIRES_OK(c, CheckBlockSize(kOp, bs_));
    std::string pooling;
    OP_REQUIRES_OK(c, c->GetAttr("pooling", &pooling));
    static const std::pair<const char*, Pooling> kPoolings[] = {
        {"NONE", Pooling::kNone}, {"SUM", Pooling::kSum}, {"AVG", Pooling::kAvg},
        {"MAX", Pooling::kMax}};
    const auto* found = std::find_if(std::begin(kPoolings), std::end(kPoolings),
                                     [&](const auto& entry) { return pooling == entry.first; });
    OP_REQUIRES(c, found != std::end(kPoolings),
                absl::InvalidArgumentError(absl::StrCat(
                    kOp, ": pooling must be one of NONE, SUM, AVG, MAX, got '", pooling, "'.")));
    pooling_ = found->second;
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "x", x, 2));
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "dy", dy, 2));
    OP_REQUIRES_OK(ctx, CheckSameBatch(kOp, x, dy));
    const int64_t m = x.dim_size(0);
    const int64_t n_in = x.dim_size(1);
    const int64_t n_out = dy.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in (x.shape[1])", n_in, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_out (dy.shape[1])", n_out, bs_));
    const KernelTable<T>* table = TableOrFail<T>(ctx);
    if (table == nullptr) return;
    const bool pooled = pooling_ != Pooling::kNone;
    const int64_t out_rows = pooled ? n_in / bs_ : n_in;
    const int64_t out_cols = pooled ? n_out / bs_ : n_out;
    Tensor* grad = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({out_rows, out_cols}), &grad));
    if (n_in == 0 || n_out == 0) return;
    table->dense_grad(ctx, Data<T>(x), m, n_in, Data<T>(dy), n_out, bs_, pooling_,
                      MutableData<T>(grad));
  }

 private:
  static constexpr char kOp[] = "BsmmDenseGrad";
  int64_t bs_;
  Pooling pooling_;
};

// The variant in use and the variants this CPU supports; `select` switches to another one.
class BsmmIsaOp : public OpKernel {
 public:
  explicit BsmmIsaOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("select", &select_));
  }

  void Compute(OpKernelContext* ctx) override {
    if (!select_.empty()) OP_REQUIRES_OK(ctx, SelectIsa(select_));
    std::string active;
    OP_REQUIRES_OK(ctx, ActiveIsa(&active));
    const std::vector<std::string> supported = SupportedIsas();
    Tensor* active_out = nullptr;
    Tensor* supported_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &active_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            1, TensorShape({static_cast<int64_t>(supported.size())}),
                            &supported_out));
    active_out->scalar<tensorflow::tstring>()() = active;
    auto names = supported_out->vec<tensorflow::tstring>();
    for (size_t i = 0; i < supported.size(); ++i) names(i) = supported[i];
  }

 private:
  std::string select_;
};

#define DYNSPARSE_REGISTER_KERNELS(T)                                                            \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmForward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),                 \
      (BsmmProductOp<T, ForwardKind>));                                                          \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmInputGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),               \
      (BsmmProductOp<T, InputGradKind>));                                                        \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmValuesGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),              \
      BsmmValuesGradOp<T>);                                                                      \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmBackward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),                \
      BsmmBackwardOp<T>);                                                                        \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmDenseGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),               \
      BsmmDenseGradOp<T>);

DYNSPARSE_REGISTER_KERNELS(float)
DYNSPARSE_REGISTER_KERNELS(double)

#undef DYNSPARSE_REGISTER_KERNELS

REGISTER_KERNEL_BUILDER(Name("BsmmIsa").Device(tensorflow::DEVICE_CPU), BsmmIsaOp);

}  // namespace
}  // namespace dynsparse
