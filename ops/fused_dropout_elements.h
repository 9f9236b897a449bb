// The element loop of DynsparseDropout (fused_dropout.cc) for one instruction-set variant.
// Included only by a variant's translation unit (bsmm_avx2.cc, bsmm_avx512.cc) after every
// outside header and under its `#pragma GCC target`; DYNSPARSE_ISA_NS names the variant's
// namespace. The op calls it through the variant's KernelTable (bsmm_dispatch.h).
//
// Element i of the range takes half i % 2 of Hash(counter + i / 2) (fused_dropout.cc). The vector
// loop computes one vector of hashes in 64-bit lanes (vpmullq under AVX-512DQ; under AVX2 the
// compiler builds each 64-bit product from 32-bit ones), which yields the numbers of twice as many
// consecutive elements: the two halves of a hash are its two 32-bit words shifted right by 8, in
// element order. Every step is integer or one float multiply, so the result is bitwise that of
// the scalar formula.
#ifndef DYNSPARSE_OPS_FUSED_DROPOUT_ELEMENTS_H_
#define DYNSPARSE_OPS_FUSED_DROPOUT_ELEMENTS_H_

#ifndef DYNSPARSE_ISA_NS
#error "include fused_dropout_elements.h through a variant's translation unit (bsmm_avx2.cc, ...)"
#endif

namespace dynsparse {
namespace DYNSPARSE_ISA_NS {
namespace dropout {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
constexpr int kHashes = DYNSPARSE_VEC_BYTES / 8;  // hashes per vector step
constexpr int kElements = 2 * kHashes;            // elements per vector step

typedef uint64_t U64s __attribute__((vector_size(DYNSPARSE_VEC_BYTES)));
typedef uint32_t U32s __attribute__((vector_size(DYNSPARSE_VEC_BYTES)));
typedef int32_t I32s __attribute__((vector_size(DYNSPARSE_VEC_BYTES)));
typedef float F32s __attribute__((vector_size(DYNSPARSE_VEC_BYTES)));

template <typename V, typename T>
inline V Broadcast(T value) {
  V v;
  for (int k = 0; k < static_cast<int>(sizeof(V) / sizeof(T)); ++k) v[k] = value;
  return v;
}

// SplitMix64's finaliser.
template <typename U>
inline U Mix(U z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline void ScalarElement(const DropoutParams& p, const float* x, float* y, float* mask,
                          int64_t i) {
  const uint64_t h = Mix(p.seed + (p.counter + static_cast<uint64_t>(i >> 1)) * kGolden);
  const uint64_t bits = (i & 1) ? (h >> 40) : ((h >> 8) & 0xffffff);
  const float m = bits >= p.threshold ? p.scale : 0.0f;
  mask[i] = m;
  y[i] = x[i] * m;
}

// y[i] = x[i] * mask[i] for i in [begin, end), mask[i] = scale where element i's 24-bit number is
// >= threshold, else 0. The variant's KernelTable::dropout.
inline void Elements(const DropoutParams& p, const float* x, float* y, float* mask, int64_t begin,
                     int64_t end) {
  int64_t i = begin;
  if (i < end && (i & 1)) ScalarElement(p, x, y, mask, i++);
  if (i + kElements <= end) {
    U64s lane;
    for (int k = 0; k < kHashes; ++k) lane[k] = k;
    // seed + (counter + i/2 + lane) * kGolden, advanced by kHashes * kGolden per step (mod 2^64).
    U64s input = p.seed + (p.counter + static_cast<uint64_t>(i >> 1) + lane) * kGolden;
    const uint64_t step = static_cast<uint64_t>(kHashes) * kGolden;
    // Numbers and threshold are below 2^25: a signed 32-bit compare is exact.
    const I32s threshold = Broadcast<I32s>(static_cast<int32_t>(p.threshold));
    const I32s scale = reinterpret_cast<I32s>(Broadcast<F32s>(p.scale));
    for (; i + kElements <= end; i += kElements) {
      const U32s bits = reinterpret_cast<U32s>(Mix(input)) >> 8;
      input += step;
      const F32s m = reinterpret_cast<F32s>((reinterpret_cast<I32s>(bits) >= threshold) & scale);
      F32s xv;
      std::memcpy(&xv, x + i, sizeof(xv));
      const F32s yv = xv * m;
      std::memcpy(mask + i, &m, sizeof(m));
      std::memcpy(y + i, &yv, sizeof(yv));
    }
  }
  for (; i < end; ++i) ScalarElement(p, x, y, mask, i);
}

}  // namespace dropout

}  // namespace DYNSPARSE_ISA_NS
}  // namespace dynsparse

#endif  // DYNSPARSE_OPS_FUSED_DROPOUT_ELEMENTS_H_
