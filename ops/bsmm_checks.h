// Argument checks of the block-sparse matmul (Bsmm*) ops, shared by the kernels and the shape
// functions so that graph construction and execution fail with the same messages. Messages name
// the tensor, the offending value and the fix.
#ifndef DYNSPARSE_OPS_BSMM_CHECKS_H_
#define DYNSPARSE_OPS_BSMM_CHECKS_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dynsparse {

// The supported block sizes; kernel tables are indexed by BlockSizeIndex.
inline constexpr int64_t kBlockSizes[] = {1, 4, 8, 16};
inline constexpr int kNumBlockSizes = 4;

inline int BlockSizeIndex(int64_t bs) {
  for (int i = 0; i < kNumBlockSizes; ++i) {
    if (kBlockSizes[i] == bs) return i;
  }
  return -1;
}

inline absl::Status CheckBlockSize(const char* op, int64_t bs) {
  if (BlockSizeIndex(bs) >= 0) return absl::OkStatus();
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

inline absl::Status RankError(const char* op, const char* name, int rank,
                              const std::string& shape) {
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": ", name, " must have rank ", rank, ", got shape ", shape, "."));
}

inline absl::Status CoordinateLengthError(const char* op, const std::string& rows,
                                          const std::string& cols) {
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": rows and cols must have one entry per block, got rows of length ", rows,
      " and cols of length ", cols, ". Pass block coordinates of equal length."));
}

inline absl::Status ValuesShapeError(const char* op, int64_t bs, const std::string& shape) {
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": values must have shape [nnz, block_size, block_size] = [nnz, ", bs, ", ", bs,
      "], got ", shape, ". Pass block_size equal to the last two dimensions of values."));
}

inline absl::Status ValuesCountError(const char* op, const std::string& values_blocks,
                                     const std::string& coordinates) {
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": values has ", values_blocks, " blocks but rows and cols have ", coordinates,
      " entries. Pass one (row, col) pair per block of values."));
}

inline absl::Status SameBatchError(const char* op, const std::string& x, const std::string& dy) {
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": x and dy must have the same number of rows (batch), got x ", x, " and dy ", dy,
      "."));
}

// The attention's heads layout, attr heads_layout = [parts, heads, tokens]: the op's
// [batch * tokens, parts * heads * head_size] matrix (BsmmForward's output, BsmmBackward's dy) is
// stored as [parts, batch, heads, tokens, head_size], the layout the attention's batched products
// read. `width` is the matrix's column count (n_out).
inline absl::Status CheckHeadsLayout(const char* op, const std::vector<int64_t>& layout,
                                     int64_t bs, int64_t width) {
  if (layout.empty()) return absl::OkStatus();
  if (layout.size() != 3 || *std::min_element(layout.begin(), layout.end()) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": heads_layout must be [parts, heads, tokens] with positive entries, got ",
        layout.size(), " entries. Pass [] for the row-major layout."));
  }
  const int64_t groups = layout[0] * layout[1];
  if (width % groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": n_out = ", width, " does not split into parts x heads = ", groups,
        " heads of equal size. Use a width that is a multiple of parts * heads."));
  }
  const int64_t head_size = width / groups;
  if (bs == 4 || head_size % 8 != 0 || head_size % bs != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": the heads layout needs a head size (", head_size,
        ") that is a multiple of 8 and of the block size (", bs,
        "), and block size 1, 8 or 16. Use the row-major layout (heads_layout = []) here."));
  }
  return absl::OkStatus();
}

// The heads layout of an input, attr input_heads_layout = [heads, tokens]: x [batch * tokens,
// heads * head_size] (BsmmForward's, BsmmBackward's x and dx) stored as [batch, heads, tokens,
// head_size], the layout of an attention's output before its heads are merged.
inline absl::Status CheckInputHeadsLayout(const char* op, const std::vector<int64_t>& layout,
                                          int64_t bs) {
  if (layout.empty()) return absl::OkStatus();
  if (layout.size() != 2 || *std::min_element(layout.begin(), layout.end()) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": input_heads_layout must be [heads, tokens] with positive entries, got ",
        layout.size(), " entries. Pass [] for a row-major x."));
  }
  if (bs == 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": the heads layout needs block size 1, 8 or 16, got 4. Use a row-major x "
        "(input_heads_layout = []) here."));
  }
  return absl::OkStatus();
}

inline absl::Status CheckInputHeadSize(const char* op, int64_t head_size, int64_t bs) {
  if (head_size % 8 == 0 && head_size % bs == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": the heads layout of x needs a head size (x.shape[3] = ", head_size,
      ") that is a multiple of 8 and of the block size (", bs,
      "). Use a row-major x (input_heads_layout = []) here."));
}

inline absl::Status CheckHeadsRows(const char* op, int64_t rows, int64_t tokens) {
  if (rows % tokens == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": ", rows, " rows are not whole sequences of ", tokens,
      " tokens (heads_layout). Pass batch * tokens rows."));
}

// Block coordinates idx[0 .. nnz) within [0, limit).
inline absl::Status CheckRange(const char* op, const char* name, const int32_t* idx, int64_t nnz,
                               int64_t limit, const char* dim_name, int64_t dim, int64_t bs) {
  // A vectorisable min/max first; the search for the culprit only runs on failure.
  int32_t lo = 0;
  int32_t hi = 0;
  for (int64_t b = 0; b < nnz; ++b) {
    lo = std::min(lo, idx[b]);
    hi = std::max(hi, idx[b]);
  }
  if (lo >= 0 && (nnz == 0 || hi < limit)) return absl::OkStatus();
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

}  // namespace dynsparse

#endif  // DYNSPARSE_OPS_BSMM_CHECKS_H_
