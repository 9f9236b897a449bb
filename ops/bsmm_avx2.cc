// The block-sparse products compiled for AVX2 + FMA (x86-64 from 2013 on: Haswell, Zen);
// chosen at load time by bsmm_dispatch.cc. Every outside header comes before the target pragma,
// so the inline functions this variant shares with the rest of the library keep the library's
// base flags.
#include <immintrin.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "bsmm_dispatch.h"
#include "bsmm_groups.h"
#include "tensorflow/core/framework/types.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define DYNSPARSE_ISA_NS avx2
#define DYNSPARSE_ISA_NAME "avx2"
#define DYNSPARSE_VEC_BYTES 32
#define DYNSPARSE_VEC_REGS 16
#include "fused_dropout_elements.h"
#include "fused_softmax_elements.h"
#include "bsmm_products.h"

#pragma GCC pop_options
