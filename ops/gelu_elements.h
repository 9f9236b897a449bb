// The exact GELU of BsmmLayer (activation GELU) and its gradient, element by element, with the
// bits of TensorFlow's tf.nn.gelu(approximate=False) and of its gradient by autodiff in a
// tf.function, after Grappler's rewrites (which reorder the gradient's constant products):
//
//   forward   a = 0.5 * z,  u = c * (-z),  e = erfc(u),  y = a * e        (c = 1/sqrt(2))
//   gradient  dz = e * (0.5 * dy) - (exp(-(u * u)) * kc) * (a * dy)     (kc = c * -2/sqrt(pi))
//
// (Grappler's constant folding moves c into the product with k; eager execution, without
// Grappler, rounds the gradient otherwise: ((a dy) k) e^-u² c; the halving is exact either way),
// each step rounded as TensorFlow's ops round it: erfc and exp are Eigen's (TensorFlow's
// scalar_erfc_op, scalar_exp_op) in 8-float AVX packets without FMA, as in TensorFlow's wheel
// (build.py compiles gelu_elements.cc so whatever ops.cxxflags says), in packets from the
// first element and the scalar functions for the last size % packet elements, as Eigen's
// executor does. Ranges must start at a multiple of kGeluAlignment elements.
#ifndef DYNSPARSE_OPS_GELU_ELEMENTS_H_
#define DYNSPARSE_OPS_GELU_ELEMENTS_H_

#include <cstdint>

namespace dynsparse {

inline constexpr int64_t kGeluAlignment = 64;

// y[i] = gelu(z[i]) for i in [begin, end).
template <typename T>
void GeluElements(const T* z, T* y, int64_t begin, int64_t end);

// dz[i] = dy[i] * gelu'(z[i]) for i in [begin, end), as TensorFlow's gradient computes it.
template <typename T>
void GeluGradientElements(const T* dy, const T* z, T* dz, int64_t begin, int64_t end);

}  // namespace dynsparse

#endif  // DYNSPARSE_OPS_GELU_ELEMENTS_H_
