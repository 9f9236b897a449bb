// GeluElements and GeluGradientElements (gelu_elements.h). This file alone is compiled without FMA,
// AVX-512 or contraction (workflow/dynsparse/build.py: -mavx2 -mno-fma), so that Eigen's packet
// erfc and exp below, in 8-float AVX packets, round every step as TensorFlow's Erfc and Exp kernels
// do (its wheel: AVX, no FMA), and the fused layer has the unfused layer's bits. AVX2 changes only
// the integer vector steps of exp (exact either way), natively instead of in two SSE halves: equal
// to TensorFlow's Erfc and Exp for every float32 input (docs/performance.md §000000).
#include "gelu_elements.h"

#include "unsupported/Eigen/SpecialFunctions"

#if defined(__FMA__) || defined(__AVX512F__) || !defined(__AVX2__)
#error "gelu_elements.cc must be compiled with -mavx2 -mno-fma -mno-avx512f (build.SOURCE_FLAGS)"
#endif

namespace dynsparse {
namespace {

using Eigen::internal::padd;
using Eigen::internal::ploadu;
using Eigen::internal::pmul;
using Eigen::internal::pnegate;
using Eigen::internal::pset1;
using Eigen::internal::pstoreu;

template <typename T>
struct GeluConstants {
  // The constants of tf.nn.gelu and of Erfc's gradient, rounded to T as TensorFlow rounds them.
  const T half = static_cast<T>(0.5);
  // tf.nn.gelu casts the Python float 1/sqrt(2) to T through a float32 tensor: in double too,
  // c is float32's 0.70710677.
  const T c = static_cast<T>(static_cast<float>(0.7071067811865476));
  const T k = static_cast<T>(-1.1283791670955126);  // -2 / sqrt(pi)
  // Grappler folds c into the gradient's product with k (constant folding and the arithmetic
  // optimizer each do), in T.
  const T kc = k * c;
};

}  // namespace

template <typename T>
void GeluElements(const T* z, T* y, int64_t begin, int64_t end) {
  using Packet = typename Eigen::internal::packet_traits<T>::type;
  constexpr int64_t kSize = Eigen::internal::unpacket_traits<Packet>::size;
  const Eigen::internal::scalar_erfc_op<T> erfc;
  const GeluConstants<T> k;
  int64_t i = begin;
  const Packet half = pset1<Packet>(k.half), c = pset1<Packet>(k.c);
  for (; i + kSize <= end; i += kSize) {
    const Packet zp = ploadu<Packet>(z + i);
    const Packet a = pmul(half, zp);
    const Packet e = erfc.packetOp(pmul(pnegate(zp), c));
    pstoreu(y + i, pmul(a, e));
  }
  for (; i < end; ++i) y[i] = (k.half * z[i]) * erfc((-z[i]) * k.c);
}

template <typename T>
void GeluGradientElements(const T* dy, const T* z, T* dz, int64_t begin, int64_t end) {
  using Packet = typename Eigen::internal::packet_traits<T>::type;
  constexpr int64_t kSize = Eigen::internal::unpacket_traits<Packet>::size;
  const Eigen::internal::scalar_erfc_op<T> erfc;
  const Eigen::internal::scalar_exp_op<T> exp;
  const GeluConstants<T> k;
  const Packet half = pset1<Packet>(k.half), c = pset1<Packet>(k.c), kc = pset1<Packet>(k.kc);
  int64_t i = begin;
  for (; i + kSize <= end; i += kSize) {
    const Packet zp = ploadu<Packet>(z + i);
    const Packet g = ploadu<Packet>(dy + i);
    const Packet a = pmul(half, zp);
    const Packet u = pmul(pnegate(zp), c);
    const Packet e = erfc.packetOp(u);
    const Packet from_a = pmul(e, pmul(half, g));
    const Packet from_e = pmul(pmul(exp.packetOp(pnegate(pmul(u, u))), kc), pmul(a, g));
    pstoreu(dz + i, padd(pnegate(from_e), from_a));
  }
  for (; i < end; ++i) {
    const T a = k.half * z[i];
    const T u = k.c * (-z[i]);
    const T from_a = erfc(u) * (k.half * dy[i]);
    const T from_e = (exp(-(u * u)) * k.kc) * (a * dy[i]);
    dz[i] = -from_e + from_a;
  }
}

template void GeluElements<float>(const float*, float*, int64_t, int64_t);
template void GeluElements<double>(const double*, double*, int64_t, int64_t);
template void GeluGradientElements<float>(const float*, const float*, float*, int64_t, int64_t);
template void GeluGradientElements<double>(const double*, const double*, double*, int64_t,
                                           int64_t);

}  // namespace dynsparse
