// Shared pieces of the block-sparse matmul (Bsmm*) ops: argument checks, block orderings,
// SIMD helpers, a parallel transpose and the micro-kernels.
//
// A sparse W [n_in, n_out] is held as values [nnz, bs, bs], rows [nnz], cols [nnz]: block b
// covers W[rows[b]*bs : +bs, cols[b]*bs : +bs] = values[b].
//
// Determinism: every parallel work unit owns a fixed part of the output (an output block-column,
// an input block-row, a non-zero block, an output tile) and computes it with a fixed summation
// order, so results do not depend on the number of threads or on how units are sharded.
#ifndef DYNSPARSE_OPS_BSMM_COMMON_H_
#define DYNSPARSE_OPS_BSMM_COMMON_H_

#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/threadpool.h"

namespace dynsparse {

using tensorflow::OpKernelContext;
using tensorflow::Tensor;

// ---------------------------------------------------------------------------------------------
// Argument checks. Messages name the tensor, the offending value and the fix.

inline bool IsSupportedBlockSize(int64_t bs) { return bs == 1 || bs == 4 || bs == 8 || bs == 16; }

inline absl::Status CheckBlockSize(const char* op, int64_t bs) {
  if (IsSupportedBlockSize(bs)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": block_size must be one of 1, 4, 8, 16, got ", bs,
      ". Build the sparse layer with a supported block size."));
}

inline absl::Status CheckDivisible(const char* op, const std::string& what, int64_t dim,
                                   int64_t bs) {
  if (dim % bs == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": ", what, " = ", dim, " is not divisible by block_size ", bs, ". Pad ", what,
      " to a multiple of ", bs, " or use a block size that divides it."));
}

inline absl::Status CheckRank(const char* op, const char* name, const Tensor& t, int rank) {
  if (t.dims() == rank) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " must have rank ", rank,
                                                 ", got shape ", t.shape().DebugString(), "."));
}

// values [nnz, bs, bs], rows [nnz], cols [nnz]; `values` may be null (ops without values).
inline absl::Status CheckBlockTensors(const char* op, const Tensor* values, const Tensor& rows,
                                      const Tensor& cols, int64_t bs) {
  TF_RETURN_IF_ERROR(CheckRank(op, "rows", rows, 1));
  TF_RETURN_IF_ERROR(CheckRank(op, "cols", cols, 1));
  if (rows.dim_size(0) != cols.dim_size(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": rows and cols must have one entry per block, got rows of length ",
        rows.dim_size(0), " and cols of length ", cols.dim_size(0),
        ". Pass block coordinates of equal length."));
  }
  if (values != nullptr) {
    TF_RETURN_IF_ERROR(CheckRank(op, "values", *values, 3));
    if (values->dim_size(1) != bs || values->dim_size(2) != bs) {
      return absl::InvalidArgumentError(absl::StrCat(
          op, ": values must have shape [nnz, block_size, block_size] = [nnz, ", bs, ", ", bs,
          "], got ", values->shape().DebugString(),
          ". Pass block_size equal to the last two dimensions of values."));
    }
    if (values->dim_size(0) != rows.dim_size(0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          op, ": values has ", values->dim_size(0), " blocks but rows and cols have ",
          rows.dim_size(0), " entries. Pass one (row, col) pair per block of values."));
    }
  }
  return absl::OkStatus();
}

// Blocks grouped by one coordinate (the "key"): blocks of key k are order[ptr[k] .. ptr[k+1]),
// in increasing block index. Built with a counting sort, O(nnz + n_keys).
struct BlockGroups {
  std::vector<int32_t> ptr;
  std::vector<int32_t> order;
};

inline absl::Status CheckRange(const char* op, const char* name, const int32_t* idx, int64_t nnz,
                               int64_t limit, const char* dim_name, int64_t dim, int64_t bs) {
  for (int64_t b = 0; b < nnz; ++b) {
    if (idx[b] < 0 || idx[b] >= limit) {
      return absl::InvalidArgumentError(absl::StrCat(
          op, ": ", name, "[", b, "] = ", idx[b], " is out of range [0, ", limit, ") (", dim_name,
          " ", dim, " / block_size ", bs, " = ", limit, " blocks). ", name,
          " holds block coordinates, not element coordinates; fix the pattern."));
    }
  }
  return absl::OkStatus();
}

// Checks both coordinate ranges and that no (row, col) block appears twice, then groups the
// blocks by `key`. Everything here runs before any parallel write.
inline absl::Status GroupBlocks(const char* op, const int32_t* rows, const int32_t* cols,
                                int64_t nnz, int64_t n_block_rows, int64_t n_block_cols,
                                int64_t n_in, int64_t n_out, int64_t bs, bool by_row,
                                BlockGroups* groups) {
  TF_RETURN_IF_ERROR(CheckRange(op, "rows", rows, nnz, n_block_rows, "n_in", n_in, bs));
  TF_RETURN_IF_ERROR(CheckRange(op, "cols", cols, nnz, n_block_cols, "n_out", n_out, bs));
  if (nnz > n_block_rows * n_block_cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": ", nnz, " blocks do not fit in a ", n_block_rows, " x ", n_block_cols,
        " block grid without duplicates. Use at most ", n_block_rows * n_block_cols, " blocks."));
  }
  const int32_t* key = by_row ? rows : cols;
  const int32_t* other = by_row ? cols : rows;
  const int64_t n_keys = by_row ? n_block_rows : n_block_cols;
  const int64_t n_other = by_row ? n_block_cols : n_block_rows;

  groups->ptr.assign(n_keys + 1, 0);
  groups->order.resize(nnz);
  for (int64_t b = 0; b < nnz; ++b) ++groups->ptr[key[b] + 1];
  for (int64_t k = 0; k < n_keys; ++k) groups->ptr[k + 1] += groups->ptr[k];
  std::vector<int32_t> next(groups->ptr.begin(), groups->ptr.end() - 1);
  for (int64_t b = 0; b < nnz; ++b) groups->order[next[key[b]]++] = static_cast<int32_t>(b);

  // Duplicates: within each key group, mark the other coordinate with the group's key.
  std::vector<int32_t> seen_key(n_other, -1);
  std::vector<int32_t> seen_block(n_other, -1);
  for (int64_t k = 0; k < n_keys; ++k) {
    for (int32_t p = groups->ptr[k]; p < groups->ptr[k + 1]; ++p) {
      const int32_t b = groups->order[p];
      const int32_t o = other[b];
      if (seen_key[o] == k) {
        return absl::InvalidArgumentError(absl::StrCat(
            op, ": duplicate block (row ", rows[b], ", col ", cols[b], ") at positions ",
            seen_block[o], " and ", b,
            " of rows/cols. Each block may appear once; merge or move one of them."));
      }
      seen_key[o] = static_cast<int32_t>(k);
      seen_block[o] = b;
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// SIMD helpers: GCC vector extensions, lowered to whatever the -m flags allow.

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kVecRegs = 32;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
constexpr int kVecRegs = 16;
#else
constexpr int kVecBytes = 16;
constexpr int kVecRegs = 16;
#endif

template <typename T, int N>
struct VecOf {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
template <typename T, int N>
using Vec = typename VecOf<T, N>::type;

template <typename V, typename T>
inline V Load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename T, typename V>
inline void Store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// Lanes used for a row of `width` elements: one native vector, or a narrower one.
template <typename T, int width>
constexpr int LanesFor() {
  constexpr int native = kVecBytes / static_cast<int>(sizeof(T));
  return width < native ? width : native;
}

// ---------------------------------------------------------------------------------------------
// Threading. One work unit owns a fixed part of the output; shards only group units.

using ThreadPool = tensorflow::thread::ThreadPool;

inline void ParallelUnits(OpKernelContext* ctx, int64_t units, int64_t cost_per_unit,
                          const std::function<void(int64_t, int64_t)>& fn) {
  if (units <= 0) return;
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(units,
                       ThreadPool::SchedulingParams::Adaptive(std::max<int64_t>(cost_per_unit, 1)),
                       fn);
}

// dst [cols, rows] = transpose(src [rows, cols]) with row stride ld_src.
template <typename T>
void ParallelTranspose(OpKernelContext* ctx, const T* src, int64_t rows, int64_t cols,
                       int64_t ld_src, T* dst) {
  constexpr int64_t kTile = 32;
  const int64_t col_tiles = (cols + kTile - 1) / kTile;
  ParallelUnits(ctx, col_tiles, rows * kTile * 2, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c0 = t * kTile;
      const int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
        const int64_t r1 = std::min(rows, r0 + kTile);
        for (int64_t c = c0; c < c1; ++c) {
          T* d = dst + c * rows;
          for (int64_t r = r0; r < r1; ++r) d[r] = src[r * ld_src + c];
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Micro-kernel 1 (block sizes 4, 8, 16): R rows of a block-row product.
//   out[r, 0:B] = sum over listed blocks b of in[r, idx[b]*B : +B] . w[b]   (w[b] is B x B)
// Forward: in = X, list = blocks of one output block-column, idx = rows, w = values.
// Input gradient: in = dY, list = blocks of one input block-row, idx = cols, w = values^T.

template <typename T, int B>
constexpr int RowTileRows() {
  constexpr int lanes = LanesFor<T, B>();
  constexpr int nv = B / lanes;
  constexpr int r = (kVecRegs - nv - 1) / nv;
  return r < 1 ? 1 : (r > 14 ? 14 : r);
}

template <typename T, int B, int R>
inline void BlockRowTile(const T* in, int64_t ld_in, const int32_t* list, int64_t n_list,
                         const int32_t* idx, const T* w, T* out, int64_t ld_out) {
  constexpr int L = LanesFor<T, B>();
  constexpr int NV = B / L;
  using V = Vec<T, L>;
  V acc[R][NV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  }
  for (int64_t p = 0; p < n_list; ++p) {
    const int32_t b = list[p];
    const T* wb = w + static_cast<int64_t>(b) * B * B;
    const T* x = in + static_cast<int64_t>(idx[b]) * B;
#pragma GCC unroll 16
    for (int i = 0; i < B; ++i) {
      V wi[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wi[v] = Load<V>(wb + i * B + v * L);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const T xs = x[r * ld_in + i];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] += xs * wi[v];
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) Store(out + r * ld_out + v * L, acc[r][v]);
  }
}

template <typename T, int B, int R>
struct BlockRowTail {
  static void Run(int rem, const T* in, int64_t ld_in, const int32_t* list, int64_t n_list,
                  const int32_t* idx, const T* w, T* out, int64_t ld_out) {
    if (rem == R) {
      BlockRowTile<T, B, R>(in, ld_in, list, n_list, idx, w, out, ld_out);
    } else {
      BlockRowTail<T, B, R - 1>::Run(rem, in, ld_in, list, n_list, idx, w, out, ld_out);
    }
  }
};
template <typename T, int B>
struct BlockRowTail<T, B, 0> {
  static void Run(int, const T*, int64_t, const int32_t*, int64_t, const int32_t*, const T*, T*,
                  int64_t) {}
};

// All M rows of one output block-column (or input block-row) of width B at `out`.
template <typename T, int B>
void BlockRowProduct(const T* in, int64_t ld_in, int64_t m_rows, const int32_t* list,
                     int64_t n_list, const int32_t* idx, const T* w, T* out, int64_t ld_out) {
  if (n_list == 0) {
    for (int64_t m = 0; m < m_rows; ++m) std::fill_n(out + m * ld_out, B, T(0));
    return;
  }
  constexpr int R = RowTileRows<T, B>();
  int64_t m = 0;
  for (; m + R <= m_rows; m += R) {
    BlockRowTile<T, B, R>(in + m * ld_in, ld_in, list, n_list, idx, w, out + m * ld_out, ld_out);
  }
  if (m < m_rows) {
    BlockRowTail<T, B, R - 1>::Run(static_cast<int>(m_rows - m), in + m * ld_in, ld_in, list,
                                   n_list, idx, w, out + m * ld_out, ld_out);
  }
}

// ---------------------------------------------------------------------------------------------
// Micro-kernel 2 (block size 1, transposed space): for one output column, over a batch chunk,
//   acc[0:C] = sum_p weight[p] * in_t[index[p], m0 : m0 + C]
// with in_t [K, M] the transposed input. The batch is contiguous, so this vectorises.

template <typename T, int NV>
inline void AxpyChunk(const T* in_t, const int64_t* offset, const T* weight, int64_t n,
                      T* acc_out) {
  constexpr int L = kVecBytes / static_cast<int>(sizeof(T));
  using V = Vec<T, L>;
  V acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = V{};
  for (int64_t p = 0; p < n; ++p) {
    const T* src = in_t + offset[p];
    const T wp = weight[p];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] += wp * Load<V>(src + v * L);
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) Store(acc_out + v * L, acc[v]);
}

template <typename T>
inline void AxpyScalar(const T* in_t, const int64_t* offset, const T* weight, int64_t n, int width,
                       T* acc_out) {
  for (int c = 0; c < width; ++c) acc_out[c] = T(0);
  for (int64_t p = 0; p < n; ++p) {
    const T* src = in_t + offset[p];
    const T wp = weight[p];
    for (int c = 0; c < width; ++c) acc_out[c] += wp * src[c];
  }
}

// Sparse columns in transposed space. Unit u covers output columns [u*G, u*G+G): for each,
//   out[m, j] = sum_p weight[p] * in_t[index(p), m]
// where the column's entries are ptr[j] .. ptr[j+1] of (offset = index * M, weight).
// out has row stride ld_out. Results go through a small per-unit buffer [G, chunk] and are
// written as rows of G contiguous elements.
template <typename T>
void SparseColumnsTransposed(const T* in_t, int64_t m_rows, const int32_t* ptr,
                             const int64_t* offset, const T* weight, int64_t col_begin,
                             int64_t col_end, T* out, int64_t ld_out) {
  constexpr int L = kVecBytes / static_cast<int>(sizeof(T));
  constexpr int kChunk = 8 * L;
  constexpr int G = 16;
  alignas(64) T buf[G][kChunk];
  for (int64_t j0 = col_begin; j0 < col_end; j0 += G) {
    const int g = static_cast<int>(std::min<int64_t>(G, col_end - j0));
    for (int64_t m0 = 0; m0 < m_rows;) {
      const int64_t left = m_rows - m0;
      int width;
      if (left >= 8 * L) {
        width = 8 * L;
      } else if (left >= 4 * L) {
        width = 4 * L;
      } else if (left >= 2 * L) {
        width = 2 * L;
      } else if (left >= L) {
        width = L;
      } else {
        width = static_cast<int>(left);
      }
      for (int jj = 0; jj < g; ++jj) {
        const int64_t j = j0 + jj;
        const int64_t begin = ptr[j];
        const int64_t n = ptr[j + 1] - begin;
        const T* src = in_t + m0;
        switch (width / L) {
          case 8:
            AxpyChunk<T, 8>(src, offset + begin, weight + begin, n, buf[jj]);
            break;
          case 4:
            AxpyChunk<T, 4>(src, offset + begin, weight + begin, n, buf[jj]);
            break;
          case 2:
            AxpyChunk<T, 2>(src, offset + begin, weight + begin, n, buf[jj]);
            break;
          case 1:
            AxpyChunk<T, 1>(src, offset + begin, weight + begin, n, buf[jj]);
            break;
          default:
            AxpyScalar<T>(src, offset + begin, weight + begin, n, width, buf[jj]);
        }
      }
      for (int c = 0; c < width; ++c) {
        T* dst = out + (m0 + c) * ld_out + j0;
        for (int jj = 0; jj < g; ++jj) dst[jj] = buf[jj][c];
      }
      m0 += width;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Micro-kernel 3: an IR x JW tile of a transposed-left product over the batch,
//   out[i, j] = sum_m x[m * ldx + i] * y[m * ldy + j]
// Values gradient: x = X[:, rows[b]*B:], y = dY[:, cols[b]*B:]. Dense gradient: output tiles.

template <typename T, int JW>
constexpr int OuterTileRows() {
  constexpr int lanes = LanesFor<T, JW>();
  constexpr int nv = JW / lanes;
  constexpr int r = (kVecRegs - nv - 1) / nv;
  return r < 1 ? 1 : (r > 16 ? 16 : r);
}

template <typename T, int IR, int JW>
inline void OuterTile(const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t m_rows, T* out,
                      int64_t ldo) {
  constexpr int L = LanesFor<T, JW>();
  constexpr int NV = JW / L;
  using V = Vec<T, L>;
  V acc[IR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < IR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V{};
  }
  for (int64_t m = 0; m < m_rows; ++m) {
    V yv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) yv[v] = Load<V>(y + m * ldy + v * L);
    const T* xm = x + m * ldx;
#pragma GCC unroll 16
    for (int i = 0; i < IR; ++i) {
      const T xs = xm[i];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += xs * yv[v];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < IR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) Store(out + i * ldo + v * L, acc[i][v]);
  }
}

template <typename T, int IR, int JW>
struct OuterTail {
  static void Run(int rem, const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t m_rows,
                  T* out, int64_t ldo) {
    if (rem == IR) {
      OuterTile<T, IR, JW>(x, ldx, y, ldy, m_rows, out, ldo);
    } else {
      OuterTail<T, IR - 1, JW>::Run(rem, x, ldx, y, ldy, m_rows, out, ldo);
    }
  }
};
template <typename T, int JW>
struct OuterTail<T, 0, JW> {
  static void Run(int, const T*, int64_t, const T*, int64_t, int64_t, T*, int64_t) {}
};

// out[i, j] for i < ni, j < JW.
template <typename T, int JW>
void OuterColumns(const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t m_rows, int64_t ni,
                  T* out, int64_t ldo) {
  constexpr int IR = OuterTileRows<T, JW>();
  int64_t i = 0;
  for (; i + IR <= ni; i += IR) OuterTile<T, IR, JW>(x + i, ldx, y, ldy, m_rows, out + i * ldo, ldo);
  if (i < ni) {
    OuterTail<T, IR - 1, JW>::Run(static_cast<int>(ni - i), x + i, ldx, y, ldy, m_rows,
                                  out + i * ldo, ldo);
  }
}

// out[i, j] for i < ni, j < nj (any nj), split into column strips of 16, 8, 4, 2, 1.
template <typename T>
void OuterBlock(const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t m_rows, int64_t ni,
                int64_t nj, T* out, int64_t ldo) {
  int64_t j = 0;
  for (; j + 16 <= nj; j += 16) OuterColumns<T, 16>(x, ldx, y + j, ldy, m_rows, ni, out + j, ldo);
  if (j + 8 <= nj) {
    OuterColumns<T, 8>(x, ldx, y + j, ldy, m_rows, ni, out + j, ldo);
    j += 8;
  }
  if (j + 4 <= nj) {
    OuterColumns<T, 4>(x, ldx, y + j, ldy, m_rows, ni, out + j, ldo);
    j += 4;
  }
  if (j + 2 <= nj) {
    OuterColumns<T, 2>(x, ldx, y + j, ldy, m_rows, ni, out + j, ldo);
    j += 2;
  }
  if (j < nj) OuterColumns<T, 1>(x, ldx, y + j, ldy, m_rows, ni, out + j, ldo);
}

// Dot product of two contiguous vectors with a fixed summation order.
template <typename T>
inline T Dot(const T* a, const T* b, int64_t n) {
  constexpr int L = kVecBytes / static_cast<int>(sizeof(T));
  using V = Vec<T, L>;
  V acc[4] = {V{}, V{}, V{}, V{}};
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[v] += Load<V>(a + i + v * L) * Load<V>(b + i + v * L);
  }
  for (; i + L <= n; i += L) acc[0] += Load<V>(a + i) * Load<V>(b + i);
  const V s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  T total = T(0);
  for (int l = 0; l < L; ++l) total += s[l];
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

}  // namespace dynsparse

#endif  // DYNSPARSE_OPS_BSMM_COMMON_H_
