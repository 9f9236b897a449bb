// Runtime CPU dispatch of the block-sparse products. Each instruction-set variant (bsmm_avx2.cc,
// bsmm_avx512.cc) compiles the same products (bsmm_products.h) for its vector width into its own
// namespace and exports a KernelTable; the op kernels call the table of the variant chosen when
// the library is loaded: the widest one the CPU supports, or the one named by the environment
// variable DYNSPARSE_ISA (avx2 | avx512), or later by the BsmmIsa op.
#ifndef DYNSPARSE_OPS_BSMM_DISPATCH_H_
#define DYNSPARSE_OPS_BSMM_DISPATCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bsmm_checks.h"
#include "bsmm_groups.h"

namespace dynsparse {

enum class Pooling { kNone, kSum, kAvg, kMax };

// Block size 1: the forward walks the non-zeros grouped by output column (gathering rows of the
// transposed input into registers), except for a small batch mapped to a narrower output, where it
// walks them by input row (scattering into the transposed output, which stays in L1, and reading
// the values in RigL's row order instead of gathering them by column on every call).
inline constexpr int64_t kElementScatterRows = 64;
inline bool ElementForwardByRow(int64_t m, int64_t n_in, int64_t n_out) {
  return n_out < n_in && m <= kElementScatterRows;
}

// DynsparseDropout's numbers (fused_dropout.cc): element i keeps x[i] * scale when its 24-bit
// number, from the hash of seed and counter + i / 2, is >= threshold.
struct DropoutParams {
  uint64_t seed;
  uint64_t counter;
  uint64_t threshold;
  float scale;
};

template <typename T>
struct KernelTable {
  // Forward: out [m, out_width] = in [m, in_width] . W, blocks grouped by output block-column
  // (block size 1: as ElementForwardByRow says); in and out addressed by their maps (row-major
  // at block size 4).
  using Product = absl::Status (*)(OpKernelContext* ctx, const T* in, const MatrixMap& in_map,
                                   int64_t m, int64_t in_width, const BlockGroups& groups,
                                   const T* values, T* out, int64_t out_width,
                                   const MatrixMap& out_map);
  // Both gradients, blocks grouped by input block-row: dx [m, n_in] = dy . W^T and dvalues
  // [nnz, bs, bs] = (x^T . dy) at the blocks, from one packing of dy; x and dx addressed by
  // x_map, dy by dy_map (row-major at block size 4). Either output may be null (x too, when
  // dvalues is).
  using Backward = absl::Status (*)(OpKernelContext* ctx, const T* x, const MatrixMap& x_map,
                                    const T* dy, const MatrixMap& dy_map, int64_t m,
                                    int64_t n_in, int64_t n_out, const BlockGroups& groups,
                                    const T* values, T* dx, T* dvalues);
  // |x^T . dy| [n_in, n_out], or pooled per block [n_in/bs, n_out/bs].
  using DenseGrad = void (*)(OpKernelContext* ctx, const T* x, int64_t m, int64_t n_in,
                             const T* dy, int64_t n_out, int64_t bs, Pooling pooling, T* grad);

  const char* isa;
  Product product[kNumBlockSizes];  // indexed by BlockSizeIndex
  Backward backward[kNumBlockSizes];
  DenseGrad dense_grad;
  // DynsparseDropout's elements [begin, end) (fused_dropout_elements.h); float whatever T is.
  void (*dropout)(const DropoutParams& p, const float* x, float* y, float* mask, int64_t begin,
                  int64_t end);
  // DynsparseScaledSoftmax and its gradient over rows [begin, end) of n elements
  // (fused_softmax_elements.h); float whatever T is.
  void (*softmax)(const float* x, float* y, int64_t n, float scale, int64_t begin, int64_t end);
  void (*softmax_grad)(const float* y, const float* dy, float* dx, int64_t n, float scale,
                       int64_t begin, int64_t end);
};

namespace avx2 {
template <typename T>
const KernelTable<T>& Table();
}  // namespace avx2
namespace avx512 {
template <typename T>
const KernelTable<T>& Table();
}  // namespace avx512

// The variants, narrowest first.
inline constexpr const char* kIsaNames[] = {"avx2", "avx512"};

// The variants this CPU can run (cpuid and OS support), narrowest first.
std::vector<std::string> SupportedIsas();

// The variant in use; fails (with the reason and the fix) when DYNSPARSE_ISA names an unknown or
// unsupported variant, or the CPU lacks AVX2 and FMA.
absl::Status ActiveIsa(std::string* name);

// Switches every op of this process to the variant `name` (one of SupportedIsas()).
absl::Status SelectIsa(const std::string& name);

template <typename T>
absl::Status ActiveTable(const KernelTable<T>** table);

}  // namespace dynsparse

#endif  // DYNSPARSE_OPS_BSMM_DISPATCH_H_
