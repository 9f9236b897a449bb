// Threading, tensor access and block grouping of the block-sparse matmul (Bsmm*) ops, shared by
// the op kernels and every instruction-set variant of the products (bsmm_products.h).
//
// A sparse W [n_in, n_out] is held as values [nnz, bs, bs], rows [nnz], cols [nnz]: block b
// covers W[rows[b]*bs : +bs, cols[b]*bs : +bs] = values[b].
//
// Determinism: every parallel work unit owns a fixed part of the output (an output block-column,
// an input block-row, a non-zero block, an output tile) and computes it in a fixed summation
// order, so results do not depend on the number of threads or on how units are sharded.
#ifndef DYNSPARSE_OPS_BSMM_GROUPS_H_
#define DYNSPARSE_OPS_BSMM_GROUPS_H_

#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bsmm_checks.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/threadpool.h"

namespace dynsparse {

using tensorflow::OpKernelContext;
using tensorflow::Tensor;

// Raw element pointers. Not flat<T>(): that CHECKs 64-byte alignment and would abort the process
// on an unaligned slice; the kernels only use unaligned loads. Dtypes are fixed by registration.
template <typename T>
inline const T* Data(const Tensor& t) {
  return reinterpret_cast<const T*>(t.tensor_data().data());
}
template <typename T>
inline T* MutableData(Tensor* t) {
  return reinterpret_cast<T*>(const_cast<char*>(t->tensor_data().data()));
}

// ---------------------------------------------------------------------------------------------
// Threading. A unit owns a fixed part of the output; shards only group consecutive units.

using ThreadPool = tensorflow::thread::ThreadPool;

// Below this much work (cost units ~ cycles) a hand-off to the pool costs more than it saves:
// the units run inline on the calling thread, in the same order.
inline constexpr int64_t kInlineCost = 20000;

inline void ParallelUnits(OpKernelContext* ctx, int64_t units, int64_t cost_per_unit,
                          const std::function<void(int64_t, int64_t)>& fn) {
  if (units <= 0) return;
  cost_per_unit = std::max<int64_t>(cost_per_unit, 1);
  if (units == 1 || units * cost_per_unit < kInlineCost) {
    fn(0, units);
    return;
  }
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(units, ThreadPool::SchedulingParams::Adaptive(cost_per_unit), fn);
}

// ---------------------------------------------------------------------------------------------
// Where the elements of a logical [rows, cols] matrix live: element (r, c) at Row(r) + Col(c).
// Row-major with leading dimension ld, or given by offset tables: the attention's heads layout
// [parts, batch, heads, tokens, head_size] of a [batch * tokens, parts * heads * head_size]
// matrix, whose columns are contiguous within a head (so within every 8-column tile and every
// block the kernels read or write at once).
struct MatrixMap {
  int64_t ld = 0;
  const int64_t* row_offsets = nullptr;
  const int64_t* col_offsets = nullptr;
  int64_t Row(int64_t r) const { return row_offsets != nullptr ? row_offsets[r] : r * ld; }
  int64_t Col(int64_t c) const { return col_offsets != nullptr ? col_offsets[c] : c; }
  static MatrixMap RowMajor(int64_t ld) { return MatrixMap{ld, nullptr, nullptr}; }
};

// ---------------------------------------------------------------------------------------------
// Block grouping.


// Blocks grouped by one coordinate (the key): the blocks of key k are order[ptr[k] .. ptr[k+1])
// in increasing block index, and other[p] is the other coordinate of block order[p].
struct BlockGroups {
  int64_t n_keys = 0;
  int64_t nnz = 0;
  std::unique_ptr<int32_t[]> ptr;
  std::unique_ptr<int32_t[]> order;
  std::unique_ptr<int32_t[]> other;
  // order[p] == p for every p: the blocks were already sorted by the key (RigL keeps its
  // patterns sorted by row), so per-block data needs no permutation.
  bool in_order = false;
  int64_t size() const { return nnz; }
  int64_t keys() const { return n_keys; }
};

// Whether the (row, col) pairs strictly increase (row-major order, no block twice): RigL keeps its
// patterns so. Coordinates already checked to be in range (non-negative).
inline bool StrictlyIncreasing(const int32_t* rows, const int32_t* cols, int64_t nnz) {
  int32_t increasing = 1;  // int and bitwise operators, so that the loop vectorises
  for (int64_t b = 1; b < nnz; ++b) {
    const int32_t before = rows[b - 1];
    const int32_t here = rows[b];
    increasing &= (here > before) | ((here == before) & (cols[b] > cols[b - 1]));
  }
  return increasing != 0;
}

// Checks both coordinate ranges and that no (row, col) block appears twice, and groups the
// blocks by rows (by_row) or by cols with a stable counting sort, O(nnz + n_keys). The sort runs
// over a number of block ranges that depends only on nnz, so the result does not depend on the
// threads. This runs before any write to an output. Blocks in strictly increasing (row, col)
// order (RigL's) need no search for duplicates, and their grouping by row is their own order:
// the same groups, without the sort (an op benchmark that changes the pattern every call spent
// most of the FC layer's time here).
inline absl::Status GroupBlocks(OpKernelContext* ctx, const char* op, const int32_t* rows,
                                const int32_t* cols, int64_t nnz, int64_t n_block_rows,
                                int64_t n_block_cols, int64_t n_in, int64_t n_out, int64_t bs,
                                bool by_row, BlockGroups* groups) {
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
  groups->n_keys = n_keys;
  groups->nnz = nnz;
  groups->ptr.reset(new int32_t[n_keys + 1]);
  groups->order.reset(new int32_t[std::max<int64_t>(nnz, 1)]);
  groups->other.reset(new int32_t[std::max<int64_t>(nnz, 1)]);
  int32_t* ptr = groups->ptr.get();
  int32_t* order = groups->order.get();
  int32_t* other_sorted = groups->other.get();
  const bool increasing = StrictlyIncreasing(rows, cols, nnz);
  if (increasing && by_row) {
    for (int64_t k = 0; k <= n_keys; ++k) {
      ptr[k] = static_cast<int32_t>(std::lower_bound(rows, rows + nnz, k) - rows);
    }
    std::iota(order, order + nnz, 0);
    std::copy_n(cols, nnz, other_sorted);
    groups->in_order = true;
    return absl::OkStatus();
  }

  // Counting sort over `parts` consecutive ranges of blocks: count, offsets, scatter.
  constexpr int64_t kPartBlocks = 1 << 15;
  const int64_t parts = std::clamp<int64_t>(nnz / kPartBlocks, 1, 16);
  std::vector<int32_t> next(parts * n_keys, 0);
  auto part_begin = [&](int64_t q) { return q * nnz / parts; };
  ParallelUnits(ctx, parts, kPartBlocks * 2, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      int32_t* count = next.data() + q * n_keys;
      for (int64_t b = part_begin(q); b < part_begin(q + 1); ++b) ++count[key[b]];
    }
  });
  int32_t running = 0;
  for (int64_t k = 0; k < n_keys; ++k) {
    ptr[k] = running;
    for (int64_t q = 0; q < parts; ++q) {
      const int32_t count = next[q * n_keys + k];
      next[q * n_keys + k] = running;
      running += count;
    }
  }
  ptr[n_keys] = running;
  ParallelUnits(ctx, parts, kPartBlocks * 4, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      int32_t* slot = next.data() + q * n_keys;
      for (int64_t b = part_begin(q); b < part_begin(q + 1); ++b) {
        order[slot[key[b]]++] = static_cast<int32_t>(b);
      }
    }
  });

  groups->in_order = true;
  for (int64_t p = 0; p < nnz && groups->in_order; ++p) groups->in_order = order[p] == p;
  if (increasing) {  // no duplicates: only the other coordinates
    for (int64_t p = 0; p < nnz; ++p) other_sorted[p] = other[order[p]];
    return absl::OkStatus();
  }

  // Other coordinates, and duplicates: within a key group, stamp each other-coordinate with the
  // key. first_duplicate[k] belongs to the unit of key k, so the report does not depend on
  // sharding.
  std::vector<int32_t> first_duplicate(n_keys, -1);
  ParallelUnits(ctx, n_keys, 4 + 8 * nnz / std::max<int64_t>(n_keys, 1),
                [&](int64_t begin, int64_t end) {
                  std::vector<int32_t> stamp(n_other, -1);
                  for (int64_t k = begin; k < end; ++k) {
                    for (int32_t p = ptr[k]; p < ptr[k + 1]; ++p) {
                      const int32_t o = other[order[p]];
                      other_sorted[p] = o;
                      if (stamp[o] == k && first_duplicate[k] < 0) first_duplicate[k] = p;
                      stamp[o] = static_cast<int32_t>(k);
                    }
                  }
                });
  for (int64_t k = 0; k < n_keys; ++k) {
    const int32_t p = first_duplicate[k];
    if (p < 0) continue;
    int32_t q = ptr[k];
    while (other_sorted[q] != other_sorted[p]) ++q;
    const int32_t b = order[p];
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": duplicate block (row ", rows[b], ", col ", cols[b], ") at positions ", order[q],
        " and ", b, " of rows/cols. Each block may appear once; merge or move one of them."));
  }
  return absl::OkStatus();
}

// The groups of the last pattern a kernel saw. RigL changes a layer's pattern only on update
// steps, so most calls find the same rows and cols. The cache holds a reference to the rows and
// cols tensors it grouped: while a reference is held, TensorFlow never writes a buffer in place
// (an assign to a variable whose buffer is shared allocates a new one; every update op copies a
// shared buffer first, ours too), so a call with the same buffers has the same pattern and hits
// without reading them. Other buffers are compared element by element, then grouped again if they
// differ. Compute may run concurrently on one kernel, so the state is behind a mutex; a hit
// returns the same groups a miss would build, so results do not depend on the cache.
class GroupCache {
 public:
  absl::Status Get(OpKernelContext* ctx, const char* op, const Tensor& rows, const Tensor& cols,
                   int64_t n_block_rows, int64_t n_block_cols, int64_t n_in, int64_t n_out,
                   int64_t bs, bool by_row, std::shared_ptr<const BlockGroups>* groups) {
    const Key key{n_block_rows, n_block_cols, n_in, n_out, bs, by_row};
    const int64_t nnz = rows.NumElements();
    const int32_t* rows_data = Data<int32_t>(rows);
    const int32_t* cols_data = Data<int32_t>(cols);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (groups_ != nullptr && key == key_ && rows_.NumElements() == nnz &&
          cols_.NumElements() == nnz) {
        const int32_t* held_rows = Data<int32_t>(rows_);
        const int32_t* held_cols = Data<int32_t>(cols_);
        const bool same_buffers = held_rows == rows_data && held_cols == cols_data;
        if (same_buffers || (std::equal(rows_data, rows_data + nnz, held_rows) &&
                             std::equal(cols_data, cols_data + nnz, held_cols))) {
          rows_ = rows;  // hold the caller's buffers, so that the next call with them hits
          cols_ = cols;
          *groups = groups_;
          return absl::OkStatus();
        }
      }
    }
    auto built = std::make_shared<BlockGroups>();
    TF_RETURN_IF_ERROR(GroupBlocks(ctx, op, rows_data, cols_data, nnz, n_block_rows,
                                   n_block_cols, n_in, n_out, bs, by_row, built.get()));
    std::lock_guard<std::mutex> lock(mu_);
    key_ = key;
    rows_ = rows;
    cols_ = cols;
    groups_ = built;
    *groups = std::move(built);
    return absl::OkStatus();
  }

 private:
  struct Key {
    int64_t n_block_rows = -1, n_block_cols = -1, n_in = -1, n_out = -1, bs = -1;
    bool by_row = false;
    bool operator==(const Key& other) const {
      return n_block_rows == other.n_block_rows && n_block_cols == other.n_block_cols &&
             n_in == other.n_in && n_out == other.n_out && bs == other.bs &&
             by_row == other.by_row;
    }
  };
  std::mutex mu_;
  Key key_;
  Tensor rows_;  // references to the grouped pattern's buffers (never written while held)
  Tensor cols_;
  std::shared_ptr<const BlockGroups> groups_;
};

}  // namespace dynsparse

#endif  // DYNSPARSE_OPS_BSMM_GROUPS_H_
