// The block-sparse products of one instruction-set variant, and its KernelTable. Included only by
// a variant's translation unit (bsmm_avx2.cc, bsmm_avx512.cc) after every outside header and
// under its `#pragma GCC target`; DYNSPARSE_ISA_NS names the variant's namespace.
//
// Layout of the work (each unit owns its output, see bsmm_groups.h):
// - forward, bs > 4: x is packed into [n_in/bs, M, bs] panels; one unit per output block-column;
//   tiles of R batch rows stay in registers across the column's blocks, and the batch is walked
//   in passes of ~48 rows so that the panels' slices stay in L2 across the shard's columns;
// - forward, bs = 1: x is packed transposed in batch chunks of 8 vectors of rows ([n_in, rows]
//   each), so a column's non-zero is an AXPY over contiguous vectors; one unit per 16 output
//   columns, chunks outermost;
// - forward, bs = 4: the batch-chunk layout of bs = 1 with 4 x 2 vector accumulators per output
//   block (the panel kernel would only use 4-wide vectors);
// - input gradient: the same kernels on dy with blocks grouped by row and values^T;
// - values gradient: one unit per non-zero block ([bs, M] x [M, bs] from the two panels), in row
//   order; bs = 1: dot products of the chunked x and dy, one unit per input row;
// - dense gradient: one unit per 64 x 64 output tile, pooled inside the tile.
#ifndef DYNSPARSE_OPS_BSMM_PRODUCTS_H_
#define DYNSPARSE_OPS_BSMM_PRODUCTS_H_

#ifndef DYNSPARSE_ISA_NS
#error "include bsmm_products.h through a variant's translation unit (bsmm_avx2.cc, ...)"
#endif

namespace dynsparse {
namespace DYNSPARSE_ISA_NS {

using tensorflow::DataTypeToEnum;
using tensorflow::TensorShape;

#include "bsmm_microkernels.h"

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
  // The weights in group order: read through the permutation in the kernel for one batch chunk,
  // gathered once per shard for several (each chunk reads them again), not at all in order.
  const bool gather = !groups.in_order && layout.count() > 1;
  std::unique_ptr<T[]> weight(gather ? new T[std::max<int64_t>(groups.size(), 1)] : nullptr);
  const int32_t* order = groups.in_order || gather ? nullptr : groups.order.get();
  const int64_t units = (out_width + kColumns - 1) / kColumns;
  const int64_t cost =
      m * (kColumns + (groups.size() * kColumns) / std::max<int64_t>(out_width, 1)) / 4;
  ParallelUnits(ctx, units, cost, [&](int64_t begin, int64_t end) {
    const int64_t j0 = begin * kColumns;
    const int64_t j1 = std::min(out_width, end * kColumns);
    if (gather) {
      for (int32_t p = groups.ptr[j0]; p < groups.ptr[j1]; ++p) {
        weight[p] = values[groups.order[p]];
      }
    }
    SparseColumns<T>(packed_data, layout, groups.ptr.get(), groups.other.get(),
                     gather ? weight.get() : values, order, j0, j1, out, out_width);
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
    // Sums go straight into dvalues when the blocks are in row order; else into `total` first.
    std::unique_ptr<T[]> total_buffer(by_row.in_order ? nullptr : new T[p1 - p0]);
    std::unique_ptr<T[]> part(x_layout.count() > 1 ? new T[p1 - p0] : nullptr);
    T* total = by_row.in_order ? dvalues + p0 : total_buffer.get();
    for (int64_t c = 0; c < x_layout.count(); ++c) {
      const int64_t stride = x_layout.padded(c);
      const int nv = static_cast<int>(stride / L);
      const T* x_chunk = xc + x_layout.offset(c);
      const T* dy_chunk = dyc + dy_layout.offset(c);
      T* out = c == 0 ? total : part.get();
      for (int64_t k = begin; k < end; ++k) {
        const int32_t q = by_row.ptr[k];
        ChunkDotsDispatch<T>(nv, x_chunk + k * stride, dy_chunk, stride, by_row.other.get() + q,
                             by_row.ptr[k + 1] - q, out + (q - p0));
      }
      if (c > 0) {
        for (int32_t i = 0; i < p1 - p0; ++i) total[i] += part[i];
      }
    }
    if (!by_row.in_order) {
      for (int32_t p = p0; p < p1; ++p) dvalues[by_row.order[p]] = total[p - p0];
    }
  });
  return absl::OkStatus();
}

template <typename T>
absl::Status ValuesGrad1(OpKernelContext* ctx, const T* x, int64_t m, int64_t n_in, const T* dy,
                         int64_t n_out, const BlockGroups& by_row, const int32_t*, T* dvalues) {
  return ValuesGradElements<T>(ctx, x, m, n_in, dy, n_out, by_row, dvalues);
}

constexpr int64_t kDenseGradTile = 64;  // a multiple of every block size

template <typename T>
void DenseGrad(OpKernelContext* ctx, const T* xd, int64_t m, int64_t n_in, const T* dyd,
               int64_t n_out, int64_t bs, Pooling pooling, T* gd) {
  constexpr int64_t kTile = kDenseGradTile;
  const bool pooled = pooling != Pooling::kNone;
  const int64_t out_cols = pooled ? n_out / bs : n_out;
  const int64_t tiles_i = (n_in + kTile - 1) / kTile;
  const int64_t tiles_j = (n_out + kTile - 1) / kTile;
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

// The product of block size B (an index into kBlockSizes).
template <typename T, int B>
absl::Status Product(OpKernelContext* ctx, const T* in, int64_t m, int64_t in_width,
                     const BlockGroups& groups, const T* w, T* out, int64_t out_width) {
  if constexpr (B == 1) {
    return ElementProduct<T>(ctx, in, m, in_width, groups, w, out, out_width);
  } else if constexpr (B == 4) {
    return Block4Matmul<T>(ctx, in, m, in_width, groups, w, out, out_width);
  } else {
    return BlockMatmul<T, B>(ctx, in, m, in_width, groups, w, out, out_width);
  }
}

template <typename T>
const KernelTable<T>& Table() {
  static const KernelTable<T> table = {
      DYNSPARSE_ISA_NAME,
      {&Product<T, 1>, &Product<T, 4>, &Product<T, 8>, &Product<T, 16>},
      {&ValuesGrad1<T>, &ValuesGradBlocks<T, 4>, &ValuesGradBlocks<T, 8>,
       &ValuesGradBlocks<T, 16>},
      &DenseGrad<T>,
      &dropout::Elements,
  };
  return table;
}

template const KernelTable<float>& Table<float>();
template const KernelTable<double>& Table<double>();

}  // namespace DYNSPARSE_ISA_NS
}  // namespace dynsparse

#endif  // DYNSPARSE_OPS_BSMM_PRODUCTS_H_
