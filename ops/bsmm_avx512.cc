// The block-sparse products compiled for AVX-512 F/BW/DQ/VL (Skylake-SP and later, Zen 4);
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
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")

#define DYNSPARSE_ISA_NS avx512
#define DYNSPARSE_ISA_NAME "avx512"
#define DYNSPARSE_VEC_BYTES 64
#define DYNSPARSE_VEC_REGS 32
#include "fused_dropout_elements.h"
#include "fused_softmax_elements.h"
#include "bsmm_products.h"

#pragma GCC pop_options
