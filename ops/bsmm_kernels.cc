// CPU kernels of the block-sparse matmul ops (registration: bsmm_ops.cc).
//
// Layout of the work (each unit owns its output, see bsmm_common.h):
// - forward, bs > 1: x is packed into [n_in/bs, M, bs] panels; one unit per output block-column
//   (blocks grouped by column with a counting sort); tiles of R batch rows stay in registers
//   across the column's blocks, and the batch is walked in passes of ~48 rows so that the panels'
//   slices stay in L2 across the shard's columns;
// - forward, bs = 1: x is packed transposed in batch chunks of 64 rows ([n_in, 64] each), so a
//   column's non-zero is an AXPY over contiguous vectors; one unit per 16 output columns, chunks
//   outermost;
// - forward, bs = 4: the batch-chunk layout of bs = 1 with 4 x 2 vector accumulators per output
//   block (the panel kernel would only use 4-wide vectors);
// - input gradient: the same kernels on dy with blocks grouped by row and values^T;
// - values gradient: one unit per non-zero block ([bs, M] x [M, bs] from the two panels), in row
//   order; bs = 1: dot products of the chunked x and dy, one unit per input row;
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

template <typename T>
absl::Status AllocateTemp(OpKernelContext* ctx, int64_t size, Tensor* out) {
  return ctx->allocate_temp(DataTypeToEnum<T>::value, TensorShape({size}), out);
}

// ---- panels: forward and input gradient for block sizes 8, 16; values gradient for 4, 8, 16 ----

// x [m, width] as panels [width/B, m, B].
template <typename T, int B>
absl::Status Panels(OpKernelContext* ctx, const T* x, int64_t m, int64_t width, Tensor* out) {
  TF_RETURN_IF_ERROR(AllocateTemp<T>(ctx, m * width, out));
  PackPanels<T>(ctx, x, m, width, B, MutableData<T>(out));
  return absl::OkStatus();
}

// out[:, u*B : +B] for each group u of `groups` (an output block-column, or an input block-row for
// the input gradient), from the panels of the input.
template <typename T, int B>
void BlockProduct(OpKernelContext* ctx, const T* panels, int64_t m, const BlockGroups& groups,
                  const T* w, T* out, int64_t ld_out) {
  const int64_t units = groups.keys();
  const int64_t cost = m * B * (4 + (groups.size() * B) / std::max<int64_t>(units, 1)) / 4;
  // Batch rows per pass: the panels' slices for these rows stay in L2 across the shard's units.
  constexpr int64_t kRows = RowTileRows<T, B>() * std::max(1, 48 / RowTileRows<T, B>());
  ParallelUnits(ctx, units, cost, [&](int64_t begin, int64_t end) {
    for (int64_t m0 = 0; m0 < m; m0 += kRows) {
      const int64_t m1 = std::min(m, m0 + kRows);
      for (int64_t u = begin; u < end; ++u) {
        const int32_t p0 = groups.ptr[u];
        BlockRowProduct<T, B>(panels, m * B, B, m0, m1, groups.order.get() + p0,
                              groups.other.get() + p0, groups.ptr[u + 1] - p0, w, out + u * B,
                              ld_out);
      }
    }
  });
}

// ---- batch chunks: block sizes 1 and 4 --------------------------------------------------------

template <typename T>
absl::Status Chunks(OpKernelContext* ctx, const T* x, const BatchChunks<T>& layout, Tensor* out) {
  TF_RETURN_IF_ERROR(AllocateTemp<T>(ctx, layout.size(), out));
  PackBatchChunks<T>(ctx, x, layout, MutableData<T>(out));
  return absl::OkStatus();
}

// out[m, j] = sum over group j of values[b] * in[m, other], for every group j (output column, or
// input row for the input gradient).
template <typename T>
absl::Status ElementProduct(OpKernelContext* ctx, const T* in, int64_t m, int64_t in_width,
                            const BlockGroups& groups, const T* values, T* out,
                            int64_t out_width) {
  constexpr int64_t kColumns = 16;
  const BatchChunks<T> layout{m, in_width};
  Tensor packed;
  TF_RETURN_IF_ERROR(Chunks<T>(ctx, in, layout, &packed));
  const T* packed_data = Data<T>(packed);
  std::unique_ptr<T[]> weight(new T[std::max<int64_t>(groups.size(), 1)]);
  const int64_t units = (out_width + kColumns - 1) / kColumns;
  const int64_t cost =
      m * (kColumns + (groups.size() * kColumns) / std::max<int64_t>(out_width, 1)) / 4;
  ParallelUnits(ctx, units, cost, [&](int64_t begin, int64_t end) {
    const int64_t j0 = begin * kColumns;
    const int64_t j1 = std::min(out_width, end * kColumns);
    for (int32_t p = groups.ptr[j0]; p < groups.ptr[j1]; ++p) weight[p] = values[groups.order[p]];
    SparseColumns<T>(packed_data, layout, groups.ptr.get(), groups.other.get(), weight.get(),
                     j0, j1, out, out_width);
  });
  return absl::OkStatus();
}

// Block sizes 8 and 16, for the forward op (groups by column, w = values) and the input gradient
// (groups by row, w = values^T).
template <typename T, int B>
absl::Status BlockMatmul(OpKernelContext* ctx, const T* in, int64_t m, int64_t in_width,
                         const BlockGroups& groups, const T* w, T* out, int64_t out_width) {
  Tensor panels;
  TF_RETURN_IF_ERROR((Panels<T, B>(ctx, in, m, in_width, &panels)));
  BlockProduct<T, B>(ctx, Data<T>(panels), m, groups, w, out, out_width);
  return absl::OkStatus();
}

// Block size 4: the batch-chunk kernel (see Block4Columns).
template <typename T>
absl::Status Block4Matmul(OpKernelContext* ctx, const T* in, int64_t m, int64_t in_width,
                          const BlockGroups& groups, const T* w, T* out, int64_t out_width) {
  const BatchChunks<T> layout{m, in_width};
  Tensor packed;
  TF_RETURN_IF_ERROR(Chunks<T>(ctx, in, layout, &packed));
  const T* packed_data = Data<T>(packed);
  const int64_t units = groups.keys();
  const int64_t cost = m * 16 * (1 + groups.size() / std::max<int64_t>(units, 1)) / 4;
  ParallelUnits(ctx, units, cost, [&](int64_t begin, int64_t end) {
    Block4Columns<T>(packed_data, layout, groups.ptr.get(), groups.order.get(),
                     groups.other.get(), w, begin, end, out, out_width);
  });
  return absl::OkStatus();
}

template <typename T>
absl::Status SparseMatmul(OpKernelContext* ctx, int64_t bs, const T* in, int64_t m,
                          int64_t in_width, const BlockGroups& groups, const T* w, T* out,
                          int64_t out_width) {
  switch (bs) {
    case 1:
      return ElementProduct<T>(ctx, in, m, in_width, groups, w, out, out_width);
    case 4:
      return Block4Matmul<T>(ctx, in, m, in_width, groups, w, out, out_width);
    case 8:
      return BlockMatmul<T, 8>(ctx, in, m, in_width, groups, w, out, out_width);
    default:
      return BlockMatmul<T, 16>(ctx, in, m, in_width, groups, w, out, out_width);
  }
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
    std::shared_ptr<const BlockGroups> by_col;
    OP_REQUIRES_OK(ctx, groups_.Get(ctx, kOp, Data<int32_t>(rows), Data<int32_t>(cols),
                                    rows.dim_size(0), n_in / bs_, n_out_ / bs_, n_in, n_out_, bs_,
                                    /*by_row=*/false, &by_col));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({m, n_out_}), &y));
    if (m == 0 || n_out_ == 0) return;
    OP_REQUIRES_OK(ctx, SparseMatmul<T>(ctx, bs_, Data<T>(x), m, n_in, *by_col, Data<T>(values),
                                        MutableData<T>(y), n_out_));
  }

 private:
  static constexpr char kOp[] = "BsmmForward";
  int64_t bs_;
  int64_t n_out_;
  GroupCache groups_;
};

// values^T per block, so the input gradient reuses the forward micro-kernel.
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
    std::shared_ptr<const BlockGroups> by_row;
    OP_REQUIRES_OK(ctx, groups_.Get(ctx, kOp, Data<int32_t>(rows), Data<int32_t>(cols),
                                    rows.dim_size(0), n_in_ / bs_, n_out / bs_, n_in_, n_out, bs_,
                                    /*by_row=*/true, &by_row));
    Tensor* dx = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({m, n_in_}), &dx));
    if (m == 0 || n_in_ == 0) return;
    const T* w = Data<T>(values);
    Tensor values_t;
    if (bs_ > 1) {
      OP_REQUIRES_OK(ctx, TransposedBlocks<T>(ctx, values, bs_, &values_t));
      w = Data<T>(values_t);
    }
    OP_REQUIRES_OK(ctx, SparseMatmul<T>(ctx, bs_, Data<T>(dy), m, n_out, *by_row, w,
                                        MutableData<T>(dx), n_in_));
  }

 private:
  static constexpr char kOp[] = "BsmmInputGrad";
  int64_t bs_;
  int64_t n_in_;
  GroupCache groups_;
};

template <typename T, int B>
absl::Status ValuesGradBlocks(OpKernelContext* ctx, const T* x, int64_t m, int64_t n_in,
                              const T* dy, int64_t n_out, const BlockGroups& by_row,
                              const int32_t* rows, T* dvalues) {
  Tensor x_panels, dy_panels;
  TF_RETURN_IF_ERROR((Panels<T, B>(ctx, x, m, n_in, &x_panels)));
  TF_RETURN_IF_ERROR((Panels<T, B>(ctx, dy, m, n_out, &dy_panels)));
  const T* xp = Data<T>(x_panels);
  const T* dyp = Data<T>(dy_panels);
  ParallelUnits(ctx, by_row.size(), m * B * B / 8, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = by_row.order[p];
      OuterColumns<T, B>(xp + rows[b] * m * B, B, dyp + by_row.other[p] * m * B, B, m, B,
                         dvalues + b * B * B, B);
    }
  });
  return absl::OkStatus();
}

template <typename T>
absl::Status ValuesGradElements(OpKernelContext* ctx, const T* x, int64_t m, int64_t n_in,
                                const T* dy, int64_t n_out, const BlockGroups& by_row,
                                T* dvalues) {
  constexpr int L = NativeLanes<T>();
  const BatchChunks<T> x_layout{m, n_in};
  const BatchChunks<T> dy_layout{m, n_out};
  Tensor x_chunks, dy_chunks;
  TF_RETURN_IF_ERROR(Chunks<T>(ctx, x, x_layout, &x_chunks));
  TF_RETURN_IF_ERROR(Chunks<T>(ctx, dy, dy_layout, &dy_chunks));
  const T* xc = Data<T>(x_chunks);
  const T* dyc = Data<T>(dy_chunks);
  const int64_t cost = (m + 8) * (1 + by_row.size() / std::max<int64_t>(n_in, 1)) / 2;
  // Unit: an input row; its entries are summed chunk by chunk in chunk order.
  ParallelUnits(ctx, n_in, cost, [&](int64_t begin, int64_t end) {
    const int32_t p0 = by_row.ptr[begin];
    const int32_t p1 = by_row.ptr[end];
    std::vector<T> total(p1 - p0), part(p1 - p0);
    for (int64_t c = 0; c < x_layout.count(); ++c) {
      const int64_t stride = x_layout.padded(c);
      const int nv = static_cast<int>(stride / L);
      const T* x_chunk = xc + x_layout.offset(c);
      const T* dy_chunk = dyc + dy_layout.offset(c);
      T* out = c == 0 ? total.data() : part.data();
      for (int64_t k = begin; k < end; ++k) {
        const int32_t q = by_row.ptr[k];
        ChunkDotsDispatch<T>(nv, x_chunk + k * stride, dy_chunk, stride, by_row.other.get() + q,
                             by_row.ptr[k + 1] - q, out + (q - p0));
      }
      if (c > 0) {
        for (int32_t i = 0; i < p1 - p0; ++i) total[i] += part[i];
      }
    }
    for (int32_t p = p0; p < p1; ++p) dvalues[by_row.order[p]] = total[p - p0];
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
    OP_REQUIRES_OK(ctx, CheckSameBatch(kOp, x, dy));
    OP_REQUIRES_OK(ctx, CheckBlockTensors(kOp, nullptr, rows, cols, bs_));
    const int64_t m = x.dim_size(0);
    const int64_t n_in = x.dim_size(1);
    const int64_t n_out = dy.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in (x.shape[1])", n_in, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_out (dy.shape[1])", n_out, bs_));
    const int64_t nnz = rows.dim_size(0);
    const int32_t* rows_data = Data<int32_t>(rows);
    std::shared_ptr<const BlockGroups> by_row;
    OP_REQUIRES_OK(ctx, groups_.Get(ctx, kOp, rows_data, Data<int32_t>(cols), nnz, n_in / bs_,
                                    n_out / bs_, n_in, n_out, bs_, /*by_row=*/true, &by_row));
    Tensor* dvalues = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({nnz, bs_, bs_}), &dvalues));
    T* dv = MutableData<T>(dvalues);
    if (nnz == 0) return;
    if (m == 0) {
      std::fill_n(dv, nnz * bs_ * bs_, T(0));
      return;
    }
    const T* xd = Data<T>(x);
    const T* dyd = Data<T>(dy);
    switch (bs_) {
      case 1:
        OP_REQUIRES_OK(ctx, ValuesGradElements<T>(ctx, xd, m, n_in, dyd, n_out, *by_row, dv));
        break;
      case 4:
        OP_REQUIRES_OK(ctx, (ValuesGradBlocks<T, 4>(ctx, xd, m, n_in, dyd, n_out, *by_row,
                                                    rows_data, dv)));
        break;
      case 8:
        OP_REQUIRES_OK(ctx, (ValuesGradBlocks<T, 8>(ctx, xd, m, n_in, dyd, n_out, *by_row,
                                                    rows_data, dv)));
        break;
      case 16:
        OP_REQUIRES_OK(ctx, (ValuesGradBlocks<T, 16>(ctx, xd, m, n_in, dyd, n_out, *by_row,
                                                     rows_data, dv)));
        break;
    }
  }

 private:
  static constexpr char kOp[] = "BsmmValuesGrad";
  int64_t bs_;
  GroupCache groups_;
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
    OP_REQUIRES_OK(ctx, CheckSameBatch(kOp, x, dy));
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
    const T* xd = Data<T>(x);
    const T* dyd = Data<T>(dy);
    T* gd = MutableData<T>(grad);
    const int64_t tiles_i = (n_in + kTile - 1) / kTile;
    const int64_t tiles_j = (n_out + kTile - 1) / kTile;
    const int64_t bs = bs_;
    const Pooling pooling = pooling_;
    ParallelUnits(ctx, tiles_i * tiles_j, m * kTile * kTile / 8, [&](int64_t begin, int64_t end) {
      alignas(64) T buf[kTile * kTile];
      // The tile's strips of x and dy, contiguous: the micro-kernel streams them once per
      // 6 x 16 sub-tile, and strided rows would each cost a TLB entry.
      std::unique_ptr<T[]> x_strip(new T[m * kTile]);
      std::unique_ptr<T[]> dy_strip(new T[m * kTile]);
      int64_t packed_i0 = -1;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i0 = (t / tiles_j) * kTile;
        const int64_t j0 = (t % tiles_j) * kTile;
        const int64_t ni = std::min(kTile, n_in - i0);
        const int64_t nj = std::min(kTile, n_out - j0);
        if (i0 != packed_i0) {
          for (int64_t r = 0; r < m; ++r) {
            std::memcpy(x_strip.get() + r * kTile, xd + r * n_in + i0, ni * sizeof(T));
          }
          packed_i0 = i0;
        }
        for (int64_t r = 0; r < m; ++r) {
          std::memcpy(dy_strip.get() + r * kTile, dyd + r * n_out + j0, nj * sizeof(T));
        }
        const T* xs = x_strip.get();
        const T* ys = dy_strip.get();
        if (pooling == Pooling::kNone) {
          T* out = gd + i0 * n_out + j0;
          OuterBlock<T>(xs, kTile, ys, kTile, m, ni, nj, out, n_out);
          for (int64_t i = 0; i < ni; ++i) {
            for (int64_t j = 0; j < nj; ++j) out[i * n_out + j] = std::abs(out[i * n_out + j]);
          }
          continue;
        }
        OuterBlock<T>(xs, kTile, ys, kTile, m, ni, nj, buf, kTile);
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
