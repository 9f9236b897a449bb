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
// - input gradient: the same kernels on dy with blocks grouped by row and values^T; with dy in
//   the heads layout (bs >= 8), both gradients a batch element at a time from that element's
//   panels of dy in the thread's scratch (BlockBackwardFromHeads);
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

// x [m, width] (addressed by `map`) as panels [width/B, m, B].
template <typename T, int B>
absl::Status Panels(OpKernelContext* ctx, const T* x, const MatrixMap& map, int64_t m,
                    int64_t width, Tensor* out) {
  TF_RETURN_IF_ERROR(AllocateTemp<T>(ctx, m * width, out));
  PackPanels<T, B>(ctx, x, map, m, width, MutableData<T>(out));
  return absl::OkStatus();
}

// out[:, u*B : +B] for each group u of `groups` (an output block-column, or an input block-row for
// the input gradient), from the panels of the input; out addressed by `map`.
template <typename T, int B>
void BlockProduct(OpKernelContext* ctx, const T* panels, int64_t m, const BlockGroups& groups,
                  const T* w, T* out, const MatrixMap& map) {
  const int64_t units = groups.keys();
  const int64_t cost = m * B * (4 + (groups.size() * B) / std::max<int64_t>(units, 1)) / 4;
  // Batch rows per pass: the panels' slices for these rows stay in L2 across the shard's units.
  constexpr int64_t kRows = RowTileRows<T, B>() * std::max(1, 48 / RowTileRows<T, B>());
  ParallelUnits(ctx, units, cost, [&](int64_t begin, int64_t end) {
    for (int64_t m0 = 0; m0 < m; m0 += kRows) {
      const int64_t m1 = std::min(m, m0 + kRows);
      for (int64_t u = begin; u < end; ++u) {
        const int32_t p0 = groups.ptr[u];
        BlockRowProduct<T, B>(panels + m0 * B, m * B, B, m0, m1, groups.order.get() + p0,
                              groups.other.get() + p0, groups.ptr[u + 1] - p0, w,
                              out + map.Col(u * B), map);
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

// Block sizes 8 and 16, for the forward op (groups by column, w = values) and the input gradient
// (groups by row, w = values^T).
template <typename T, int B>
absl::Status BlockMatmul(OpKernelContext* ctx, const T* in, const MatrixMap& in_map, int64_t m,
                         int64_t in_width, const BlockGroups& groups, const T* w, T* out,
                         const MatrixMap& out_map) {
  Tensor panels;
  TF_RETURN_IF_ERROR((Panels<T, B>(ctx, in, in_map, m, in_width, &panels)));
  BlockProduct<T, B>(ctx, Data<T>(panels), m, groups, w, out, out_map);
  return absl::OkStatus();
}

// Block size 4: the batch-chunk kernel (see Block4Columns); out row-major only (out_map.ld).
template <typename T>
absl::Status Block4Matmul(OpKernelContext* ctx, const T* in, int64_t m, int64_t in_width,
                          const BlockGroups& groups, const T* w, T* out,
                          const MatrixMap& out_map) {
  const int64_t out_width = out_map.ld;
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

// values^T per block [nnz, B, B], so the input gradient reuses the forward micro-kernels.
template <typename T, int B>
absl::Status TransposedBlocks(OpKernelContext* ctx, const T* values, int64_t nnz, Tensor* out) {
  TF_RETURN_IF_ERROR(AllocateTemp<T>(ctx, nnz * B * B, out));
  T* dst = MutableData<T>(out);
  ParallelUnits(ctx, nnz, B * B * 2, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* s = values + b * B * B;
      T* d = dst + b * B * B;
      for (int i = 0; i < B; ++i) {
        for (int j = 0; j < B; ++j) d[j * B + i] = s[i * B + j];
      }
    }
  });
  return absl::OkStatus();
}

// The rows of a matrix as runs of constant stride: row r of run (r0, r1, ld) at
// map.Row(r0) + (r - r0) * ld. The heads layout: one run per batch element.
struct RowRun {
  int64_t r0, r1, ld;
};

inline std::vector<RowRun> RowRuns(const MatrixMap& map, int64_t m) {
  std::vector<RowRun> runs;
  for (int64_t r = 0; r < m; ++r) {
    if (!runs.empty()) {
      RowRun& run = runs.back();
      const int64_t step = map.Row(r) - map.Row(r - 1);
      if (run.r1 - run.r0 == 1 && step > 0) run.ld = step;
      if (step == run.ld) {
        run.r1 = r + 1;
        continue;
      }
    }
    runs.push_back({r, r + 1, 0});
  }
  return runs;
}

// Both gradients at block size B >= 8 with dy in the heads layout, a batch element (a run of
// rows of constant stride) at a time: the run's rows of dy packed as panels [n_out / B, rows, B]
// into the thread's scratch (where they stay in L2 for both products; panels of the whole of
// dy, the QKV layer's 5.5 MB gradient, went to memory and were read back twice), then
//   dx: the forward kernel on the run's panels, for the unit's input block-rows;
//   dvalues: one [B, rows] x [rows, B] product per block, continued run by run (OuterColumns
//   with kAccumulate: one running sum per element, the bits of the product over all rows at
//   once).
// Each thread packs every run for itself: the units split the blocks, not the rows.
template <typename T, int B>
absl::Status BlockBackwardFromHeads(OpKernelContext* ctx, const T* x, const MatrixMap& x_map,
                                    const T* dy, const MatrixMap& dy_map, int64_t m,
                                    int64_t n_in, int64_t n_out, const BlockGroups& groups,
                                    const T* values, T* dx, T* dvalues) {
  const std::vector<RowRun> runs = RowRuns(dy_map, m);
  int64_t longest = 0;
  for (const RowRun& run : runs) longest = std::max(longest, run.r1 - run.r0);
  const int64_t nnz = groups.size();
  const int64_t panels = n_out / B;
  std::vector<int64_t> panel_at(panels);  // block column j's offset from a run's first row
  for (int64_t j = 0; j < panels; ++j) panel_at[j] = dy_map.Col(j * B);
  Tensor values_t, x_panels;
  const T* w = nullptr;
  if (dx != nullptr) {
    TF_RETURN_IF_ERROR((TransposedBlocks<T, B>(ctx, values, nnz, &values_t)));
    w = Data<T>(values_t);
  }
  const T* xp = nullptr;
  if (dvalues != nullptr) {
    TF_RETURN_IF_ERROR((Panels<T, B>(ctx, x, x_map, m, n_in, &x_panels)));
    xp = Data<T>(x_panels);
  }
  const int64_t units = groups.keys();
  const int64_t per_unit = nnz / std::max<int64_t>(units, 1);
  const int64_t cost = m * B * (1 + per_unit * B / 2) + m * n_out / 4;
  ParallelUnits(ctx, units, cost, [&](int64_t begin, int64_t end) {
    T* run_panels = ThreadScratch<T>(2, panels * longest * B);
    for (size_t i = 0; i < runs.size(); ++i) {
      const RowRun& run = runs[i];
      const int64_t rows = run.r1 - run.r0;
      const T* first = dy + dy_map.Row(run.r0);
      for (int64_t j = 0; j < panels; ++j) {
        const T* src = first + panel_at[j];
        T* dst = run_panels + j * rows * B;
        for (int64_t r = 0; r < rows; ++r) {
          std::memcpy(dst + r * B, src + r * run.ld, B * sizeof(T));
        }
      }
      for (int64_t k = begin; k < end; ++k) {
        const int32_t p0 = groups.ptr[k];
        const int32_t p1 = groups.ptr[k + 1];
        if (dx != nullptr) {
          BlockRowProduct<T, B>(run_panels, rows * B, B, run.r0, run.r1, groups.order.get() + p0,
                                groups.other.get() + p0, p1 - p0, w, dx + x_map.Col(k * B),
                                x_map);
        }
        if (dvalues == nullptr) continue;
        const T* x_rows = xp + (k * m + run.r0) * B;
        const auto dy_rows = [&](int64_t q) {
          return run_panels + groups.other[p0 + q] * rows * B;
        };
        const auto out = [&](int64_t q) { return dvalues + groups.order[p0 + q] * B * B; };
        if (i == 0) {
          OuterBlocksOfRow<T, B>(x_rows, rows, p1 - p0, dy_rows, out);
        } else {
          OuterBlocksOfRow<T, B, true>(x_rows, rows, p1 - p0, dy_rows, out);
        }
      }
    }
  });
  return absl::OkStatus();
}

// Both gradients at block size B > 1, `groups` by input block-row:
//   dx [m, n_in] = dy . W^T (when dx is not null): the forward kernels on dy with values^T;
//   dvalues [nnz, B, B] = x^T . dy at the blocks (when not null; else x may be null): one
//   [B, m] x [m, B] product per block from the panels of x and dy.
// At B >= 8 both read the same panels of dy, packed once.
template <typename T, int B>
absl::Status BlockBackward(OpKernelContext* ctx, const T* x, const MatrixMap& x_map, const T* dy,
                           const MatrixMap& dy_map, int64_t m, int64_t n_in, int64_t n_out,
                           const BlockGroups& groups, const T* values, T* dx, T* dvalues) {
  if constexpr (B >= 8) {
    if (dy_map.row_offsets != nullptr) {
      return BlockBackwardFromHeads<T, B>(ctx, x, x_map, dy, dy_map, m, n_in, n_out, groups,
                                          values, dx, dvalues);
    }
  }
  Tensor dy_panels, x_panels, values_t;
  const bool shared_panels = B >= 8 || dvalues != nullptr;
  if (shared_panels) TF_RETURN_IF_ERROR((Panels<T, B>(ctx, dy, dy_map, m, n_out, &dy_panels)));
  if (dx != nullptr) {
    TF_RETURN_IF_ERROR((TransposedBlocks<T, B>(ctx, values, groups.size(), &values_t)));
    if constexpr (B >= 8) {
      BlockProduct<T, B>(ctx, Data<T>(dy_panels), m, groups, Data<T>(values_t), dx, x_map);
    } else {
      // Block size 4 reads dy row-major (the op accepts no other layout for it).
      TF_RETURN_IF_ERROR(
          Block4Matmul<T>(ctx, dy, m, n_out, groups, Data<T>(values_t), dx, x_map));
    }
  }
  if (dvalues == nullptr) return absl::OkStatus();
  TF_RETURN_IF_ERROR((Panels<T, B>(ctx, x, x_map, m, n_in, &x_panels)));
  const T* xp = Data<T>(x_panels);
  const T* dyp = Data<T>(dy_panels);
  ParallelUnits(ctx, groups.keys(), m * B * B / 8 * (1 + groups.size() / groups.keys()),
                [&](int64_t begin, int64_t end) {
                  for (int64_t k = begin; k < end; ++k) {
                    const int32_t p0 = groups.ptr[k];
                    OuterBlocksOfRow<T, B>(
                        xp + k * m * B, m, groups.ptr[k + 1] - p0,
                        [&](int64_t q) { return dyp + groups.other[p0 + q] * m * B; },
                        [&](int64_t q) { return dvalues + groups.order[p0 + q] * B * B; });
                  }
                });
  return absl::OkStatus();
}

// ---- block size 1: a chunk of batch rows at a time --------------------------------------------
//
// Each unit of work is a chunk of rows. The chunk's slice of every operand read in full is
// transposed into the calling thread's scratch ([width][stride], stride = the chunk's rows padded
// to whole vectors), where it stays in cache while it is used, and the results are transposed
// back into the output's rows:
// - forward, by output column: out[:, j] = sum of W[k, j] x_t[k] in registers (gather), 16
//   columns at a time; or, for a small batch into a narrower output (ElementForwardByRow), by
//   input row: out_t[j] += W[k, j] x_t[k] with x_t[k] in registers (scatter);
// - backward, by input row: each chunk of dy is transposed once and read by both gradients, the
//   values gradient as dot products of x_t[k] (in registers) with the rows dy_t[j] of its
//   non-zeros, the input gradient as a gather of those rows; for chunks of more than 2 vectors
//   both in one walk (GroupDotsAndColumns), so that each row dy_t[j] is loaded once for both.
// A sum over the non-zeros of a column (forward) or row (input gradient) runs in group order, the
// values gradient sums each chunk's dot products in chunk order: results depend on the pattern's
// order and the chunk size, never on the threads.

// Chunks of 4 vectors for the forward (the gathered side of a chunk stays in L1), of 8 for the
// backward (longer dot products, fewer partial sums).
template <typename T>
using ForwardChunks = BatchChunks<T, 4>;
template <typename T>
using BackwardChunks = BatchChunks<T, 8>;

// The values in the order of `groups`: `values` itself when the blocks are in that order already,
// else gathered once into `temp`.
template <typename T>
absl::Status ValuesInGroupOrder(OpKernelContext* ctx, const BlockGroups& groups, const T* values,
                                Tensor* temp, const T** ordered) {
  if (groups.in_order) {
    *ordered = values;
    return absl::OkStatus();
  }
  TF_RETURN_IF_ERROR(AllocateTemp<T>(ctx, groups.size(), temp));
  T* gathered = MutableData<T>(temp);
  for (int64_t p = 0; p < groups.size(); ++p) gathered[p] = values[groups.order[p]];
  *ordered = gathered;
  return absl::OkStatus();
}

// out_t [width_out][stride] = the product of one chunk walked by input row: row k of in_t (kept
// in registers) scattered into the rows of its group. Zeroes out_t first.
// One kernel per chunk width (NV vectors), so ScatterAxpy is inlined rather than called through
// its table once per input row.
template <typename T, int NV>
void ScatterChunkOf(const T* in_t, int64_t keys, int64_t stride, const int32_t* ptr,
                    const int32_t* other, const T* weight, T* out_t) {
  for (int64_t k = 0; k < keys; ++k) {
    const int32_t p0 = ptr[k];
    ScatterAxpy<T, NV>(in_t + k * stride, out_t, stride, other + p0, weight + p0,
                       ptr[k + 1] - p0);
  }
}

template <typename T, int... NV>
constexpr auto ScatterChunkTable(std::integer_sequence<int, NV...>) {
  using Fn = void (*)(const T*, int64_t, int64_t, const int32_t*, const int32_t*, const T*, T*);
  return std::array<Fn, sizeof...(NV)>{&ScatterChunkOf<T, NV + 1>...};
}

template <typename T>
void ScatterChunk(const T* in_t, int64_t keys, int64_t stride, const BlockGroups& groups,
                  const T* weight, T* out_t, int64_t width_out) {
  static constexpr auto kTable = ScatterChunkTable<T>(std::make_integer_sequence<int, 8>());
  const int nv = static_cast<int>(stride / NativeLanes<T>());
  std::fill_n(out_t, width_out * stride, T(0));
  kTable[nv - 1](in_t, keys, stride, groups.ptr.get(), groups.other.get(), weight, out_t);
}

// y [m, n_out] = x [m, n_in] . W at block size 1; `groups` by input row when
// ElementForwardByRow(m, n_in, n_out), else by output column.
template <typename T>
absl::Status ElementForward(OpKernelContext* ctx, const T* x, const MatrixMap& x_map, int64_t m,
                            int64_t n_in, const BlockGroups& groups, const T* values, T* y,
                            int64_t n_out, const MatrixMap& y_map) {
  constexpr int64_t kChunk = ForwardChunks<T>::kChunk;
  const ForwardChunks<T> layout{m, n_in};
  const bool scatter = ElementForwardByRow(m, n_in, n_out);
  Tensor weight_temp;
  const T* weight = nullptr;
  TF_RETURN_IF_ERROR(ValuesInGroupOrder<T>(ctx, groups, values, &weight_temp, &weight));
  const int64_t cost = kChunk * (n_in + n_out) / 2 + kChunk * groups.size() / 8;
  ParallelUnits(ctx, layout.count(), cost, [&](int64_t begin, int64_t end) {
    T* x_t = ThreadScratch<T>(0, n_in * kChunk);
    T* y_t = scatter ? ThreadScratch<T>(1, n_out * kChunk) : nullptr;
    for (int64_t c = begin; c < end; ++c) {
      const int64_t rows = layout.rows(c);
      const int64_t stride = layout.padded(c);
      const int64_t row0 = c * kChunk;
      TransposeChunk<T>(x, x_map, row0, n_in, rows, stride, x_t);
      if (scatter) {
        ScatterChunk<T>(x_t, n_in, stride, groups, weight, y_t, n_out);
        UntransposeChunk<T>(y_t, n_out, stride, rows, y, y_map, row0);
      } else {
        SparseColumnsChunk<T>(x_t, n_in, stride, rows, groups.ptr.get(), groups.other.get(),
                              weight, nullptr, 0, n_out, y, y_map, row0);
      }
    }
  });
  return absl::OkStatus();
}

// Both gradients of a block-size-1 product from one pass over dy, a chunk at a time, `groups` by
// input row:
//   dx [m, n_in] = dy . W^T                     (when dx is not null)
//   dvalues [nnz] = x^T . dy at the non-zeros   (when dvalues is not null; else x may be null)
template <typename T>
absl::Status ElementBackward(OpKernelContext* ctx, const T* x, const MatrixMap& x_map, const T* dy,
                             const MatrixMap& dy_map, int64_t m, int64_t n_in, int64_t n_out,
                             const BlockGroups& groups, const T* values, T* dx, T* dvalues) {
  constexpr int L = NativeLanes<T>();
  constexpr int64_t kChunk = BackwardChunks<T>::kChunk;
  const BackwardChunks<T> layout{m, n_in};
  const int64_t chunks = layout.count();
  const int64_t nnz = groups.size();
  // Values gradient, in group order: chunk 0 into `total`, the others into `parts`, then summed in
  // chunk order and put in block order.
  Tensor parts, total_temp, weight_temp;
  T* total = nullptr;
  T* part = nullptr;
  if (dvalues != nullptr) {
    if (chunks > 1) TF_RETURN_IF_ERROR(AllocateTemp<T>(ctx, (chunks - 1) * nnz, &parts));
    if (!groups.in_order) TF_RETURN_IF_ERROR(AllocateTemp<T>(ctx, nnz, &total_temp));
    total = groups.in_order ? dvalues : MutableData<T>(&total_temp);
    part = chunks > 1 ? MutableData<T>(&parts) : nullptr;
  }
  const T* weight = nullptr;
  if (dx != nullptr) {
    TF_RETURN_IF_ERROR(ValuesInGroupOrder<T>(ctx, groups, values, &weight_temp, &weight));
  }
  const int64_t products = (dx != nullptr) + (dvalues != nullptr);
  const int64_t cost = kChunk * (n_in + n_out) / 2 + kChunk * nnz * products / 8;
  ParallelUnits(ctx, chunks, cost, [&](int64_t begin, int64_t end) {
    T* x_t = dvalues != nullptr ? ThreadScratch<T>(0, n_in * kChunk) : nullptr;
    T* dy_t = ThreadScratch<T>(1, n_out * kChunk);
    for (int64_t c = begin; c < end; ++c) {
      const int64_t rows = layout.rows(c);
      const int64_t stride = layout.padded(c);
      const int64_t row0 = c * kChunk;
      TransposeChunk<T>(dy, dy_map, row0, n_out, rows, stride, dy_t);
      T* dots = dvalues != nullptr ? (c == 0 ? total : part + (c - 1) * nnz) : nullptr;
      if (dvalues != nullptr) TransposeChunk<T>(x, x_map, row0, n_in, rows, stride, x_t);
      if (dvalues != nullptr && dx != nullptr && stride / L > 2) {
        GroupDotsAndColumns<T>(x_t, dy_t, stride, rows, groups.ptr.get(), n_in,
                               groups.other.get(), weight, dots, dx, x_map, row0);
        continue;
      }
      if (dvalues != nullptr) {
        GroupDotsDispatch<T>(static_cast<int>(stride / L), x_t, dy_t, n_out, stride,
                             groups.ptr.get(), n_in, groups.other.get(), dots);
      }
      if (dx != nullptr) {
        SparseColumnsChunk<T>(dy_t, n_out, stride, rows, groups.ptr.get(), groups.other.get(),
                              weight, nullptr, 0, n_in, dx, x_map, row0);
      }
    }
  });
  if (dvalues == nullptr) return absl::OkStatus();
  constexpr int64_t kSumUnit = 4096;
  if (chunks > 1) {
    ParallelUnits(ctx, (nnz + kSumUnit - 1) / kSumUnit, kSumUnit * chunks,
                  [&](int64_t begin, int64_t end) {
                    const int64_t p1 = std::min(nnz, end * kSumUnit);
                    for (int64_t c = 1; c < chunks; ++c) {
                      const T* from = part + (c - 1) * nnz;
                      for (int64_t p = begin * kSumUnit; p < p1; ++p) total[p] += from[p];
                    }
                  });
  }
  if (!groups.in_order) {
    for (int64_t p = 0; p < nnz; ++p) dvalues[groups.order[p]] = total[p];
  }
  return absl::OkStatus();
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

// The forward product of block size B: out [m, out_width] = in [m, in_width] . W.
template <typename T, int B>
absl::Status Product(OpKernelContext* ctx, const T* in, const MatrixMap& in_map, int64_t m,
                     int64_t in_width, const BlockGroups& groups, const T* w, T* out,
                     int64_t out_width, const MatrixMap& out_map) {
  if constexpr (B == 1) {
    return ElementForward<T>(ctx, in, in_map, m, in_width, groups, w, out, out_width, out_map);
  } else if constexpr (B == 4) {
    return Block4Matmul<T>(ctx, in, m, in_width, groups, w, out, out_map);
  } else {
    return BlockMatmul<T, B>(ctx, in, in_map, m, in_width, groups, w, out, out_map);
  }
}

template <typename T>
const KernelTable<T>& Table() {
  static const KernelTable<T> table = {
      DYNSPARSE_ISA_NAME,
      {&Product<T, 1>, &Product<T, 4>, &Product<T, 8>, &Product<T, 16>},
      {&ElementBackward<T>, &BlockBackward<T, 4>, &BlockBackward<T, 8>, &BlockBackward<T, 16>},
      &DenseGrad<T>,
      &dropout::Elements,
      &softmax::Rows,
      &softmax::GradientRows,
  };
  return table;
}

template const KernelTable<float>& Table<float>();
template const KernelTable<double>& Table<double>();

}  // namespace DYNSPARSE_ISA_NS
}  // namespace dynsparse

#endif  // DYNSPARSE_OPS_BSMM_PRODUCTS_H_
