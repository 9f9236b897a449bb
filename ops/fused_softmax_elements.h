// The row loops of DynsparseScaledSoftmax and its gradient (fused_softmax.cc) for one
// instruction-set variant. Included only by a variant's translation unit (bsmm_avx2.cc,
// bsmm_avx512.cc) after every outside header and under its `#pragma GCC target`; the op calls them
// through the variant's KernelTable (bsmm_dispatch.h).
//
// Each row is read into whole vectors (the last one padded), so a row of any length takes the same
// vector steps in the same order whatever the threads; the padding lanes are -inf for the maximum
// and zero for the sums. exp is Cephes' expf (range reduction by ln 2 in two parts, a degree-6
// polynomial; within 2 ulp of the exact value over the softmax's range x <= 0).
#ifndef DYNSPARSE_OPS_FUSED_SOFTMAX_ELEMENTS_H_
#define DYNSPARSE_OPS_FUSED_SOFTMAX_ELEMENTS_H_

#ifndef DYNSPARSE_ISA_NS
#error "include fused_softmax_elements.h through a variant's translation unit (bsmm_avx2.cc, ...)"
#endif

namespace dynsparse {
namespace DYNSPARSE_ISA_NS {
namespace softmax {

typedef float F32s __attribute__((vector_size(DYNSPARSE_VEC_BYTES)));
typedef int32_t I32s __attribute__((vector_size(DYNSPARSE_VEC_BYTES)));
constexpr int kLanes = DYNSPARSE_VEC_BYTES / 4;

inline F32s Splat(float value) { return F32s{} + value; }

// exp(x) for x <= 0 (a scaled score minus its row's maximum). Below -87.34, where float's normal
// numbers end, it returns 0 where expf would return a subnormal number: nothing beside the 1 of the
// row's maximum in the row's sum.
inline F32s Exp(F32s x) {
  const F32s lowest = Splat(-87.33654f);
  const I32s underflow = x < lowest;
  x = x < lowest ? lowest : x;
  // n = round(x / ln 2), by the float rounding of the magic constant 1.5 * 2^23.
  const F32s magic = Splat(12582912.0f);
  F32s n = x * 1.44269504088896341f + magic;
  n -= magic;
  F32s r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const F32s r2 = r * r;
  F32s p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const I32s bits = (__builtin_convertvector(n, I32s) + 127) << 23;
  F32s scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const F32s e = p * scale;
  return underflow ? Splat(0.0f) : e;
}

#if DYNSPARSE_VEC_BYTES == 64
inline float MaxOf(F32s v) { return _mm512_reduce_max_ps(reinterpret_cast<__m512>(v)); }
inline float SumOf(F32s v) { return _mm512_reduce_add_ps(reinterpret_cast<__m512>(v)); }
// Vector v of a row of n elements (v * kLanes < n): whole, or the last one padded with `pad`.
inline F32s LoadPadded(const float* row, int64_t n, int64_t v, float pad) {
  const int64_t left = n - v * kLanes;
  const __mmask16 mask = left >= kLanes ? 0xffff : (1u << left) - 1;
  return reinterpret_cast<F32s>(
      _mm512_mask_loadu_ps(_mm512_set1_ps(pad), mask, row + v * kLanes));
}
inline void StorePart(float* row, int64_t n, int64_t v, F32s x) {
  const int64_t left = n - v * kLanes;
  const __mmask16 mask = left >= kLanes ? 0xffff : (1u << left) - 1;
  _mm512_mask_storeu_ps(row + v * kLanes, mask, reinterpret_cast<__m512>(x));
}
#else
// The eight lanes folded by `op` (halves, then quarters, then the last two), in a fixed order.
template <typename Op>
inline float Fold(F32s v, Op op) {
  __m128 r = op(_mm256_castps256_ps128(reinterpret_cast<__m256>(v)),
                _mm256_extractf128_ps(reinterpret_cast<__m256>(v), 1));
  r = op(r, _mm_movehl_ps(r, r));
  r = op(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}
inline float MaxOf(F32s v) { return Fold(v, [](__m128 a, __m128 b) { return _mm_max_ps(a, b); }); }
inline float SumOf(F32s v) { return Fold(v, [](__m128 a, __m128 b) { return _mm_add_ps(a, b); }); }
inline __m256i TailMask(int64_t left) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left < kLanes ? left : kLanes)),
                            lanes);
}
inline F32s LoadPadded(const float* row, int64_t n, int64_t v, float pad) {
  const int64_t left = n - v * kLanes;
  if (left >= kLanes) return reinterpret_cast<F32s>(_mm256_loadu_ps(row + v * kLanes));
  const __m256i mask = TailMask(left);
  return reinterpret_cast<F32s>(_mm256_blendv_ps(_mm256_set1_ps(pad),
                                                 _mm256_maskload_ps(row + v * kLanes, mask),
                                                 _mm256_castsi256_ps(mask)));
}
inline void StorePart(float* row, int64_t n, int64_t v, F32s x) {
  const int64_t left = n - v * kLanes;
  if (left >= kLanes) {
    _mm256_storeu_ps(row + v * kLanes, reinterpret_cast<__m256>(x));
  } else {
    _mm256_maskstore_ps(row + v * kLanes, TailMask(left), reinterpret_cast<__m256>(x));
  }
}
#endif

// Rows [r, r + G) of y = softmax(scale * x), rows of n elements in NV vectors (scale > 0), held
// in registers between their passes. The G rows are independent chains of reductions and exps,
// which G at a time overlap.
template <int G, int NV>
inline void RowGroup(const float* x, float* y, int64_t n, float scale, int64_t r) {
  const float lowest = -std::numeric_limits<float>::infinity();
  F32s row[G][NV], top[G], total[G];
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g) {
    top[g] = Splat(lowest);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      row[g][v] = LoadPadded(x + (r + g) * n, n, v, lowest);
      top[g] = row[g][v] > top[g] ? row[g][v] : top[g];
    }
  }
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g) {
    const F32s shift = Splat(scale * MaxOf(top[g]));
    total[g] = Splat(0.0f);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      row[g][v] = Exp(row[g][v] * scale - shift);
      total[g] += row[g][v];
    }
  }
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g) {
    const F32s inverse = Splat(1.0f / SumOf(total[g]));
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) StorePart(y + (r + g) * n, n, v, row[g][v] * inverse);
  }
}

// Rows longer than kRegisterVectors vectors: the same steps, three passes over memory.
inline void LongRow(const float* x, float* y, int64_t n, float scale, int64_t r) {
  const float lowest = -std::numeric_limits<float>::infinity();
  const int64_t vectors = (n + kLanes - 1) / kLanes;
  const float* xr = x + r * n;
  float* yr = y + r * n;
  F32s top = Splat(lowest);
  for (int64_t v = 0; v < vectors; ++v) {
    const F32s xv = LoadPadded(xr, n, v, lowest);
    top = xv > top ? xv : top;
  }
  const F32s shift = Splat(scale * MaxOf(top));
  F32s total = Splat(0.0f);
  for (int64_t v = 0; v < vectors; ++v) {
    const F32s e = Exp(LoadPadded(xr, n, v, lowest) * scale - shift);
    total += e;
    StorePart(yr, n, v, e);
  }
  const F32s inverse = Splat(1.0f / SumOf(total));
  for (int64_t v = 0; v < vectors; ++v) StorePart(yr, n, v, LoadPadded(yr, n, v, 0.0f) * inverse);
}

constexpr int kRegisterVectors = 4;

template <int NV>
inline void ShortRows(const float* x, float* y, int64_t n, float scale, int64_t begin,
                      int64_t end) {
  constexpr int kGroup = NV <= 2 ? 4 : 2;
  int64_t r = begin;
  for (; r + kGroup <= end; r += kGroup) RowGroup<kGroup, NV>(x, y, n, scale, r);
  for (; r < end; ++r) RowGroup<1, NV>(x, y, n, scale, r);
}

// y[r] = softmax(scale * x[r]) for rows [begin, end) of n elements (scale > 0).
inline void Rows(const float* x, float* y, int64_t n, float scale, int64_t begin, int64_t end) {
  switch ((n + kLanes - 1) / kLanes) {
    case 1:
      return ShortRows<1>(x, y, n, scale, begin, end);
    case 2:
      return ShortRows<2>(x, y, n, scale, begin, end);
    case 3:
      return ShortRows<3>(x, y, n, scale, begin, end);
    case kRegisterVectors:
      return ShortRows<kRegisterVectors>(x, y, n, scale, begin, end);
    default:
      for (int64_t r = begin; r < end; ++r) LongRow(x, y, n, scale, r);
  }
}

// dx[r] = scale * y[r] * (dy[r] - <dy[r], y[r]>) for rows [begin, end): softmax's gradient
// through the scaling of its input.
inline void GradientRows(const float* y, const float* dy, float* dx, int64_t n, float scale,
                         int64_t begin, int64_t end) {
  const int64_t vectors = (n + kLanes - 1) / kLanes;
  for (int64_t r = begin; r < end; ++r) {
    const float* yr = y + r * n;
    const float* gr = dy + r * n;
    F32s dot = Splat(0.0f);
    for (int64_t v = 0; v < vectors; ++v) {
      dot += LoadPadded(yr, n, v, 0.0f) * LoadPadded(gr, n, v, 0.0f);
    }
    const F32s shift = Splat(SumOf(dot));
    for (int64_t v = 0; v < vectors; ++v) {
      const F32s g = LoadPadded(gr, n, v, 0.0f) - shift;
      StorePart(dx + r * n, n, v, LoadPadded(yr, n, v, 0.0f) * g * scale);
    }
  }
}

}  // namespace softmax
}  // namespace DYNSPARSE_ISA_NS
}  // namespace dynsparse

#endif  // DYNSPARSE_OPS_FUSED_SOFTMAX_ELEMENTS_H_
