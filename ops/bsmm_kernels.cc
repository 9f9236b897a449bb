// CPU kernels of the block-sparse matmul ops (registration: bsmm_ops.cc).
//
// Layout of the work (each unit owns its output, see bsmm_common.h):
// - forward, bs > 1: one unit per output block-column, blocks grouped by column (counting sort),
//   batch tiles of R rows kept in registers across the column's blocks;
// - forward, bs = 1: x is transposed to [n_in, M] so that the batch is contiguous; one unit per
//   group of output columns, each column an AXPY over the batch per non-zero;
// - input gradient: the same two kernels on dy with blocks grouped by row (W^T);
// - values gradient: one unit per non-zero block (a [bs, M] x [M, bs] product), in row order so
//   that x's block strip stays in cache; bs = 1 uses dot products in transposed space;
// - dense gradient: one unit per 64 x 64 output tile, pooled inside the tile.
#include <cmath>
#include <string>

#include "bsmm_common.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/types.h"

namespace dynsparse {
namespace {

using tensorflow::DataTypeToEnum;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::TensorShape;

constexpr int64_t kColumnGroup = 16;  // output columns per unit for bs = 1

template <typename T>
absl::Status AllocateTransposed(OpKernelContext* ctx, const T* src, int64_t rows, int64_t cols,
                                Tensor* out) {
  TF_RETURN_IF_ERROR(ctx->allocate_temp(DataTypeToEnum<T>::value, TensorShape({cols, rows}), out));
  ParallelTranspose<T>(ctx, src, rows, cols, cols, out->flat<T>().data());
  return absl::OkStatus();
}

// out[m, u] for units u (output block-columns of width B) from the grouped blocks.
template <typename T, int B>
void BlockProduct(OpKernelContext* ctx, const T* in, int64_t m, int64_t ld_in,
                  const BlockGroups& groups, const int32_t* idx, const T* w, T* out,
                  int64_t ld_out) {
  const int64_t units = static_cast<int64_t>(groups.ptr.size()) - 1;
  const int64_t nnz = static_cast<int64_t>(groups.order.size());
  const int64_t cost = m * B * (1 + (nnz * B) / std::max<int64_t>(units, 1)) / 4;
  ParallelUnits(ctx, units, cost, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int32_t p0 = groups.ptr[u];
      BlockRowProduct<T, B>(in, ld_in, m, groups.order.data() + p0, groups.ptr[u + 1] - p0, idx,
                            w, out + u * B, ld_out);
    }
  });
}

// Block size 1: out[m, j] = sum over group j of weight * in[m, other], in transposed space.
template <typename T>
absl::Status ElementProduct(OpKernelContext* ctx, const T* in, int64_t m, int64_t in_width,
                            const BlockGroups& groups, const int32_t* other, const T* values,
                            T* out, int64_t out_width) {
  Tensor in_t;
  TF_RETURN_IF_ERROR(AllocateTransposed<T>(ctx, in, m, in_width, &in_t));
  const T* in_t_data = in_t.flat<T>().data();
  const int64_t nnz = static_cast<int64_t>(groups.order.size());
  std::vector<int64_t> offset(nnz);
  std::vector<T> weight(nnz);
  const int64_t units = (out_width + kColumnGroup - 1) / kColumnGroup;
  const int64_t cost = m * (kColumnGroup + (nnz * kColumnGroup) / std::max<int64_t>(out_width, 1));
  ParallelUnits(ctx, units, cost, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t j0 = u * kColumnGroup;
      const int64_t j1 = std::min(out_width, j0 + kColumnGroup);
      for (int32_t p = groups.ptr[j0]; p < groups.ptr[j1]; ++p) {
        const int32_t b = groups.order[p];
        offset[p] = static_cast<int64_t>(other[b]) * m;
        weight[p] = values[b];
      }
      SparseColumnsTransposed<T>(in_t_data, m, groups.ptr.data(), offset.data(), weight.data(),
                                 j0, j1, out, out_width);
    }
  });
  return absl::OkStatus();
}

template <typename T>
class BsmmForwardOp : public OpKernel {
 public:
  explicit BsmmForwardOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("block_size", &bs_));
    OP_REQUIRES_OK(c, CheckBlockSize(kOp, bs_));
    OP_REQUIRES_OK(c, c->GetAttr("n_out", &n_out_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& values = ctx->input(1);
    const Tensor& rows = ctx->input(2);
    const Tensor& cols = ctx->input(3);
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "x", x, 2));
    OP_REQUIRES_OK(ctx, CheckBlockTensors(kOp, &values, rows, cols, bs_));
    const int64_t m = x.dim_size(0);
    const int64_t n_in = x.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in (x.shape[1])", n_in, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_out", n_out_, bs_));
    const int32_t* rows_data = rows.flat<int32_t>().data();
    const int32_t* cols_data = cols.flat<int32_t>().data();
    BlockGroups by_col;
    OP_REQUIRES_OK(ctx, GroupBlocks(kOp, rows_data, cols_data, rows.dim_size(0), n_in / bs_,
                                    n_out_ / bs_, n_in, n_out_, bs_, /*by_row=*/false, &by_col));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({m, n_out_}), &y));
    if (m == 0 || n_out_ == 0) return;
    const T* xd = x.flat<T>().data();
    const T* vd = values.flat<T>().data();
    T* yd = y->flat<T>().data();
    switch (bs_) {
      case 1:
        OP_REQUIRES_OK(ctx, ElementProduct<T>(ctx, xd, m, n_in, by_col, rows_data, vd, yd, n_out_));
        break;
      case 4:
        BlockProduct<T, 4>(ctx, xd, m, n_in, by_col, rows_data, vd, yd, n_out_);
        break;
      case 8:
        BlockProduct<T, 8>(ctx, xd, m, n_in, by_col, rows_data, vd, yd, n_out_);
        break;
      case 16:
        BlockProduct<T, 16>(ctx, xd, m, n_in, by_col, rows_data, vd, yd, n_out_);
        break;
    }
  }

 private:
  static constexpr char kOp[] = "BsmmForward";
  int64_t bs_;
  int64_t n_out_;
};

// values^T per block, so the input gradient reuses the forward micro-kernel.
template <typename T, int B>
absl::Status TransposedBlocks(OpKernelContext* ctx, const Tensor& values, Tensor* out) {
  const int64_t nnz = values.dim_size(0);
  TF_RETURN_IF_ERROR(ctx->allocate_temp(DataTypeToEnum<T>::value, values.shape(), out));
  const T* src = values.flat<T>().data();
  T* dst = out->flat<T>().data();
  ParallelUnits(ctx, nnz, B * B * 2, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* s = src + b * B * B;
      T* d = dst + b * B * B;
      for (int i = 0; i < B; ++i) {
        for (int j = 0; j < B; ++j) d[j * B + i] = s[i * B + j];
      }
    }
  });
  return absl::OkStatus();
}

template <typename T, int B>
absl::Status InputGradBlocks(OpKernelContext* ctx, const T* dy, int64_t m, int64_t n_out,
                             const Tensor& values, const BlockGroups& by_row,
                             const int32_t* cols, T* dx, int64_t n_in) {
  Tensor values_t;
  TF_RETURN_IF_ERROR((TransposedBlocks<T, B>(ctx, values, &values_t)));
  BlockProduct<T, B>(ctx, dy, m, n_out, by_row, cols, values_t.flat<T>().data(), dx, n_in);
  return absl::OkStatus();
}

template <typename T>
class BsmmInputGradOp : public OpKernel {
 public:
  explicit BsmmInputGradOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("block_size", &bs_));
    OP_REQUIRES_OK(c, CheckBlockSize(kOp, bs_));
    OP_REQUIRES_OK(c, c->GetAttr("n_in", &n_in_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& values = ctx->input(1);
    const Tensor& rows = ctx->input(2);
    const Tensor& cols = ctx->input(3);
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "dy", dy, 2));
    OP_REQUIRES_OK(ctx, CheckBlockTensors(kOp, &values, rows, cols, bs_));
    const int64_t m = dy.dim_size(0);
    const int64_t n_out = dy.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_out (dy.shape[1])", n_out, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in", n_in_, bs_));
    const int32_t* rows_data = rows.flat<int32_t>().data();
    const int32_t* cols_data = cols.flat<int32_t>().data();
    BlockGroups by_row;
    OP_REQUIRES_OK(ctx, GroupBlocks(kOp, rows_data, cols_data, rows.dim_size(0), n_in_ / bs_,
                                    n_out / bs_, n_in_, n_out, bs_, /*by_row=*/true, &by_row));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({m, n_in_}), &dx));
    if (m == 0 || n_in_ == 0) return;
    const T* dyd = dy.flat<T>().data();
    T* dxd = dx->flat<T>().data();
    switch (bs_) {
      case 1:
        OP_REQUIRES_OK(ctx, ElementProduct<T>(ctx, dyd, m, n_out, by_row, cols_data,
                                              values.flat<T>().data(), dxd, n_in_));
        break;
      case 4:
        OP_REQUIRES_OK(ctx, (InputGradBlocks<T, 4>(ctx, dyd, m, n_out, values, by_row, cols_data,
                                                   dxd, n_in_)));
        break;
      case 8:
        OP_REQUIRES_OK(ctx, (InputGradBlocks<T, 8>(ctx, dyd, m, n_out, values, by_row, cols_data,
                                                   dxd, n_in_)));
        break;
      case 16:
        OP_REQUIRES_OK(ctx, (InputGradBlocks<T, 16>(ctx, dyd, m, n_out, values, by_row, cols_data,
                                                    dxd, n_in_)));
        break;
    }
  }

 private:
  static constexpr char kOp[] = "BsmmInputGrad";
  int64_t bs_;
  int64_t n_in_;
};

template <typename T, int B>
void ValuesGradBlocks(OpKernelContext* ctx, const T* x, int64_t m, int64_t n_in, const T* dy,
                      int64_t n_out, const BlockGroups& by_row, const int32_t* rows,
                      const int32_t* cols, T* dvalues) {
  const int64_t nnz = static_cast<int64_t>(by_row.order.size());
  ParallelUnits(ctx, nnz, m * B * B / 4, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = by_row.order[p];
      OuterColumns<T, B>(x + static_cast<int64_t>(rows[b]) * B, n_in,
                         dy + static_cast<int64_t>(cols[b]) * B, n_out, m, B,
                         dvalues + b * B * B, B);
    }
  });
}

template <typename T>
absl::Status ValuesGradElements(OpKernelContext* ctx, const T* x, int64_t m, int64_t n_in,
                                const T* dy, int64_t n_out, const BlockGroups& by_row,
                                const int32_t* rows, const int32_t* cols, T* dvalues) {
  Tensor x_t, dy_t;
  TF_RETURN_IF_ERROR(AllocateTransposed<T>(ctx, x, m, n_in, &x_t));
  TF_RETURN_IF_ERROR(AllocateTransposed<T>(ctx, dy, m, n_out, &dy_t));
  const T* xt = x_t.flat<T>().data();
  const T* dyt = dy_t.flat<T>().data();
  const int64_t nnz = static_cast<int64_t>(by_row.order.size());
  ParallelUnits(ctx, nnz, m / 4 + 8, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = by_row.order[p];
      dvalues[b] = Dot<T>(xt + static_cast<int64_t>(rows[b]) * m,
                          dyt + static_cast<int64_t>(cols[b]) * m, m);
    }
  });
  return absl::OkStatus();
}

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
    OP_REQUIRES(ctx, x.dim_size(0) == dy.dim_size(0),
                absl::InvalidArgumentError(absl::StrCat(
                    kOp, ": x and dy must have the same number of rows (batch), got x ",
                    x.shape().DebugString(), " and dy ", dy.shape().DebugString(), ".")));
    OP_REQUIRES_OK(ctx, CheckBlockTensors(kOp, nullptr, rows, cols, bs_));
    const int64_t m = x.dim_size(0);
    const int64_t n_in = x.dim_size(1);
    const int64_t n_out = dy.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in (x.shape[1])", n_in, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_out (dy.shape[1])", n_out, bs_));
    const int64_t nnz = rows.dim_size(0);
    const int32_t* rows_data = rows.flat<int32_t>().data();
    const int32_t* cols_data = cols.flat<int32_t>().data();
    BlockGroups by_row;
    OP_REQUIRES_OK(ctx, GroupBlocks(kOp, rows_data, cols_data, nnz, n_in / bs_, n_out / bs_, n_in,
                                    n_out, bs_, /*by_row=*/true, &by_row));
    Tensor* dvalues = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({nnz, bs_, bs_}), &dvalues));
    T* dv = dvalues->flat<T>().data();
    if (nnz == 0) return;
    if (m == 0) {
      std::fill_n(dv, nnz * bs_ * bs_, T(0));
      return;
    }
    const T* xd = x.flat<T>().data();
    const T* dyd = dy.flat<T>().data();
    switch (bs_) {
      case 1:
        OP_REQUIRES_OK(ctx, ValuesGradElements<T>(ctx, xd, m, n_in, dyd, n_out, by_row, rows_data,
                                                  cols_data, dv));
        break;
      case 4:
        ValuesGradBlocks<T, 4>(ctx, xd, m, n_in, dyd, n_out, by_row, rows_data, cols_data, dv);
        break;
      case 8:
        ValuesGradBlocks<T, 8>(ctx, xd, m, n_in, dyd, n_out, by_row, rows_data, cols_data, dv);
        break;
      case 16:
        ValuesGradBlocks<T, 16>(ctx, xd, m, n_in, dyd, n_out, by_row, rows_data, cols_data, dv);
        break;
    }
  }

 private:
  static constexpr char kOp[] = "BsmmValuesGrad";
  int64_t bs_;
};

enum class Pooling { kNone, kSum, kAvg, kMax };

template <typename T>
class BsmmDenseGradOp : public OpKernel {
 public:
  explicit BsmmDenseGradOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("block_size", &bs_));
    OP_REQUIRES_OK(c, CheckBlockSize(kOp, bs_));
    std::string pooling;
    OP_REQUIRES_OK(c, c->GetAttr("pooling", &pooling));
    if (pooling == "NONE") {
      pooling_ = Pooling::kNone;
    } else if (pooling == "SUM") {
      pooling_ = Pooling::kSum;
    } else if (pooling == "AVG") {
      pooling_ = Pooling::kAvg;
    } else if (pooling == "MAX") {
      pooling_ = Pooling::kMax;
    } else {
      OP_REQUIRES(c, false,
                  absl::InvalidArgumentError(absl::StrCat(
                      kOp, ": pooling must be one of NONE, SUM, AVG, MAX, got '", pooling, "'.")));
    }
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "x", x, 2));
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "dy", dy, 2));
    OP_REQUIRES(ctx, x.dim_size(0) == dy.dim_size(0),
                absl::InvalidArgumentError(absl::StrCat(
                    kOp, ": x and dy must have the same number of rows (batch), got x ",
                    x.shape().DebugString(), " and dy ", dy.shape().DebugString(), ".")));
    const int64_t m = x.dim_size(0);
    const int64_t n_in = x.dim_size(1);
    const int64_t n_out = dy.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in (x.shape[1])", n_in, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_out (dy.shape[1])", n_out, bs_));
    const bool pooled = pooling_ != Pooling::kNone;
    const int64_t out_rows = pooled ? n_in / bs_ : n_in;
    const int64_t out_cols = pooled ? n_out / bs_ : n_out;
    Tensor* grad = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({out_rows, out_cols}), &grad));
    if (n_in == 0 || n_out == 0) return;
    const T* xd = x.flat<T>().data();
    const T* dyd = dy.flat<T>().data();
    T* gd = grad->flat<T>().data();
    const int64_t tiles_i = (n_in + kTile - 1) / kTile;
    const int64_t tiles_j = (n_out + kTile - 1) / kTile;
    const int64_t bs = bs_;
    const Pooling pooling = pooling_;
    ParallelUnits(ctx, tiles_i * tiles_j, m * kTile * kTile / 8, [&](int64_t begin, int64_t end) {
      alignas(64) T buf[kTile * kTile];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i0 = (t / tiles_j) * kTile;
        const int64_t j0 = (t % tiles_j) * kTile;
        const int64_t ni = std::min(kTile, n_in - i0);
        const int64_t nj = std::min(kTile, n_out - j0);
        if (pooling == Pooling::kNone) {
          T* out = gd + i0 * n_out + j0;
          OuterBlock<T>(xd + i0, n_in, dyd + j0, n_out, m, ni, nj, out, n_out);
          for (int64_t i = 0; i < ni; ++i) {
            for (int64_t j = 0; j < nj; ++j) out[i * n_out + j] = std::abs(out[i * n_out + j]);
          }
          continue;
        }
        OuterBlock<T>(xd + i0, n_in, dyd + j0, n_out, m, ni, nj, buf, kTile);
        for (int64_t bi = 0; bi < ni / bs; ++bi) {
          for (int64_t bj = 0; bj < nj / bs; ++bj) {
            T acc = T(0);
            for (int64_t i = 0; i < bs; ++i) {
              const T* row = buf + (bi * bs + i) * kTile + bj * bs;
              for (int64_t j = 0; j < bs; ++j) {
                const T a = std::abs(row[j]);
                acc = pooling == Pooling::kMax ? std::max(acc, a) : acc + a;
              }
            }
            if (pooling == Pooling::kAvg) acc /= static_cast<T>(bs * bs);
            gd[(i0 / bs + bi) * out_cols + j0 / bs + bj] = acc;
          }
        }
      }
    });
  }

 private:
  static constexpr char kOp[] = "BsmmDenseGrad";
  static constexpr int64_t kTile = 64;  // a multiple of every block size
  int64_t bs_;
  Pooling pooling_;
};

#define DYNSPARSE_REGISTER_KERNELS(T)                                                            \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmForward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),                 \
      BsmmForwardOp<T>);                                                                         \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmInputGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),               \
      BsmmInputGradOp<T>);                                                                       \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmValuesGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),              \
      BsmmValuesGradOp<T>);                                                                      \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmDenseGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),               \
      BsmmDenseGradOp<T>);

DYNSPARSE_REGISTER_KERNELS(float)
DYNSPARSE_REGISTER_KERNELS(double)

#undef DYNSPARSE_REGISTER_KERNELS

}  // namespace
}  // namespace dynsparse
