// SIMD helpers, packing and micro-kernels of the block-sparse products. ISA-specific: included
// only by bsmm_products.h inside the namespace of one instruction-set variant, under a
// `#pragma GCC target` set by the variant's translation unit (bsmm_avx2.cc, bsmm_avx512.cc), with
// DYNSPARSE_VEC_BYTES (vector width) and DYNSPARSE_VEC_REGS (vector registers) defined.
// Everything it uses from outside (std, TensorFlow, bsmm_groups.h) is included before the
// pragma, so no inline function shared with another variant is compiled for this one's ISA.
#ifndef DYNSPARSE_OPS_BSMM_MICROKERNELS_H_
#define DYNSPARSE_OPS_BSMM_MICROKERNELS_H_

#if !defined(DYNSPARSE_VEC_BYTES) || !defined(DYNSPARSE_VEC_REGS)
#error "include bsmm_microkernels.h through a variant's translation unit (bsmm_avx2.cc, ...)"
#endif

// ---------------------------------------------------------------------------------------------
// SIMD helpers: GCC vector extensions, lowered to whatever the variant's target allows.

constexpr int kVecBytes = DYNSPARSE_VEC_BYTES;
constexpr int kVecRegs = DYNSPARSE_VEC_REGS;

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

template <typename T>
constexpr int NativeLanes() {
  return kVecBytes / static_cast<int>(sizeof(T));
}

// Lanes used for a row of `width` elements: one native vector, or a narrower one.
template <typename T, int width>
constexpr int LanesFor() {
  return width < NativeLanes<T>() ? width : NativeLanes<T>();
}

// Sum of the lanes of a vector, halving it in a fixed order.
template <typename T, int L>
struct LaneSummer {
  static T Run(const Vec<T, L>& v) {
    Vec<T, L / 2> lo, hi;
    std::memcpy(&lo, &v, sizeof(lo));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
    return LaneSummer<T, L / 2>::Run(lo + hi);
  }
};
template <typename T>
struct LaneSummer<T, 1> {
  static T Run(const Vec<T, 1>& v) { return v[0]; }
};
template <typename T, int L>
inline T LaneSum(const Vec<T, L>& v) {
  return LaneSummer<T, L>::Run(v);
}

// ---------------------------------------------------------------------------------------------
// Packing (copies of the input, never of the dense weight).

// Panels for block sizes > 1: dst[p] = src[:, p*B : (p+1)*B] as a contiguous [m, B] panel,
// so a block's slice of the batch is one stream instead of m strided pieces; src [m, width]
// addressed by `map`.
template <typename T, int B>
void PackPanels(OpKernelContext* ctx, const T* src, const MatrixMap& map, int64_t m,
                int64_t width, T* dst) {
  using V = Vec<T, B>;
  ParallelUnits(ctx, width / B, m * B / 4 + 16, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      T* d = dst + p * m * B;
      const T* s = src + map.Col(p * B);
      for (int64_t r = 0; r < m; ++r) Store(d + r * B, Load<V>(s + map.Row(r)));
    }
  });
}

// Batch chunks: the batch split into chunks of kChunk rows (kVectors vectors), each stored
// transposed as [width, padded rows] with the rows padded to whole vectors (zeros), so that a
// column's slice of a chunk is a few contiguous vectors. Block size 4 packs all chunks at once (8
// vectors); block size 1 transposes one chunk at a time into a thread's scratch (4 vectors, so
// that the side of the product it reads or updates at random stays in L1).
template <typename T, int kVectors = 8>
struct BatchChunks {
  static constexpr int kLanes = NativeLanes<T>();
  static constexpr int64_t kChunk = kVectors * kLanes;
  int64_t m;
  int64_t width;
  int64_t count() const { return (m + kChunk - 1) / kChunk; }
  int64_t rows(int64_t c) const { return std::min(kChunk, m - c * kChunk); }
  int64_t padded(int64_t c) const { return (rows(c) + kLanes - 1) / kLanes * kLanes; }
  int64_t offset(int64_t c) const { return c * kChunk * width; }
  int64_t size() const {
    return count() == 0 ? 0 : offset(count() - 1) + width * padded(count() - 1);
  }
};

// An 8 x 8 tile transposed: dst_row(c)[r] = src_row(r)[c], rows given by accessors (int -> pointer).
template <typename T, typename SrcRow, typename DstRow>
inline void Transpose8x8Rows(SrcRow src_row, DstRow dst_row) {
  if constexpr (std::is_same_v<T, float>) {
    __m256 r0 = _mm256_loadu_ps(src_row(0));
    __m256 r1 = _mm256_loadu_ps(src_row(1));
    __m256 r2 = _mm256_loadu_ps(src_row(2));
    __m256 r3 = _mm256_loadu_ps(src_row(3));
    __m256 r4 = _mm256_loadu_ps(src_row(4));
    __m256 r5 = _mm256_loadu_ps(src_row(5));
    __m256 r6 = _mm256_loadu_ps(src_row(6));
    __m256 r7 = _mm256_loadu_ps(src_row(7));
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1);
    const __m256 t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3);
    const __m256 t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 t4 = _mm256_unpacklo_ps(r4, r5);
    const __m256 t5 = _mm256_unpackhi_ps(r4, r5);
    const __m256 t6 = _mm256_unpacklo_ps(r6, r7);
    const __m256 t7 = _mm256_unpackhi_ps(r6, r7);
    r0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    r1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    r2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    r3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    r4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    r5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    r6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    r7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(dst_row(0), _mm256_permute2f128_ps(r0, r4, 0x20));
    _mm256_storeu_ps(dst_row(1), _mm256_permute2f128_ps(r1, r5, 0x20));
    _mm256_storeu_ps(dst_row(2), _mm256_permute2f128_ps(r2, r6, 0x20));
    _mm256_storeu_ps(dst_row(3), _mm256_permute2f128_ps(r3, r7, 0x20));
    _mm256_storeu_ps(dst_row(4), _mm256_permute2f128_ps(r0, r4, 0x31));
    _mm256_storeu_ps(dst_row(5), _mm256_permute2f128_ps(r1, r5, 0x31));
    _mm256_storeu_ps(dst_row(6), _mm256_permute2f128_ps(r2, r6, 0x31));
    _mm256_storeu_ps(dst_row(7), _mm256_permute2f128_ps(r3, r7, 0x31));
  } else {
    for (int r = 0; r < 8; ++r) {
      for (int c = 0; c < 8; ++c) dst_row(c)[r] = src_row(r)[c];
    }
  }
}

// dst[c * ld_dst + r] = src[r * ld_src + c] for an 8 x 8 tile.
template <typename T>
inline void Transpose8x8(const T* src, int64_t ld_src, T* dst, int64_t ld_dst) {
  Transpose8x8Rows<T>([&](int i) { return src + i * ld_src; },
                      [&](int i) { return dst + i * ld_dst; });
}

// Scratch memory of the calling thread, reused across calls (grown, never shrunk), 64-byte
// aligned so that no vector access straddles two cache lines: the per-chunk transposes of the
// products live there, so they stay in this core's cache between being written and being read.
template <typename T>
T* ThreadScratch(int slot, int64_t size) {
  constexpr int64_t kAlign = 64;
  struct Buffer {
    std::unique_ptr<char[]> memory;
    int64_t capacity = 0;  // bytes usable from the aligned start
  };
  thread_local Buffer buffers[3];
  Buffer& buffer = buffers[slot];
  const int64_t bytes = size * static_cast<int64_t>(sizeof(T));
  if (buffer.capacity < bytes) {
    buffer.memory.reset(new char[bytes + kAlign]);
    buffer.capacity = bytes;
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(buffer.memory.get());
  return reinterpret_cast<T*>((start + kAlign - 1) / kAlign * kAlign);
}

// Rows [row0, row0 + rows) of src (a [.., width] matrix, addressed by `map`) transposed into dst
// [width][padded], rows padded with zeros up to `padded`: one batch chunk of BatchChunks' layout.
// Row-major src: 16 rows at a time, so that src is read as 16 streams and every 64-byte line of
// dst is written whole.
template <typename T>
void TransposeChunk(const T* src, const MatrixMap& src_map, int64_t row0, int64_t width,
                    int64_t rows, int64_t padded, T* dst) {
  // Local copies of the map and of the chunk's row offsets: the vector stores may alias anything
  // not local, and the compiler would reload and recompute them around every store.
  const MatrixMap map = src_map;
  int64_t row_at[BatchChunks<T>::kChunk];
  for (int64_t r = 0; r < rows; ++r) row_at[r] = map.Row(row0 + r);
  const int64_t full_rows = rows / 8 * 8;
  const int64_t full_k = width / 8 * 8;
  auto tile = [&](int64_t r, int64_t k) {
    const T* base = src + map.Col(k);
    Transpose8x8Rows<T>([&](int i) { return base + row_at[r + i]; },
                        [&](int i) { return dst + (k + i) * padded + r; });
  };
  if (map.row_offsets != nullptr) {
    // The heads layout: a column tile's rows lie within a few [tokens, head_size] blocks, so
    // walking the rows of one column tile at a time reads each block's lines while in L1.
    for (int64_t k = 0; k < full_k; k += 8) {
      for (int64_t r = 0; r < full_rows; r += 8) tile(r, k);
    }
  } else {
    int64_t r = 0;
    for (; r + 16 <= full_rows; r += 16) {
      for (int64_t k = 0; k < full_k; k += 8) {
        tile(r, k);
        tile(r + 8, k);
      }
    }
    if (r < full_rows) {
      for (int64_t k = 0; k < full_k; k += 8) tile(r, k);
    }
  }
  // The edges outside the tiles, visited only where there are any (a walk over every column
  // with nothing to do cost ~1 % of the FC step).
  if (full_rows < padded) {
    for (int64_t k = 0; k < width; ++k) {
      const T* column = src + map.Col(k);
      for (int64_t i = full_rows; i < rows; ++i) dst[k * padded + i] = column[row_at[i]];
      for (int64_t i = rows; i < padded; ++i) dst[k * padded + i] = T(0);
    }
  }
  for (int64_t k = full_k; k < width; ++k) {
    const T* column = src + map.Col(k);
    for (int64_t i = 0; i < full_rows; ++i) dst[k * padded + i] = column[row_at[i]];
  }
}

// The inverse of TransposeChunk: rows [row0, row0 + rows) of dst (addressed by `map`) from src
// [width][stride].
template <typename T>
void UntransposeChunk(const T* src, int64_t width, int64_t stride, int64_t rows, T* dst,
                      const MatrixMap& dst_map, int64_t row0) {
  const MatrixMap map = dst_map;  // local copies, as in TransposeChunk
  int64_t row_at[BatchChunks<T>::kChunk];
  for (int64_t r = 0; r < rows; ++r) row_at[r] = map.Row(row0 + r);
  const int64_t full_rows = rows / 8 * 8;
  const int64_t full_k = width / 8 * 8;
  for (int64_t r = 0; r < full_rows; r += 8) {
    for (int64_t k = 0; k < full_k; k += 8) {
      T* base = dst + map.Col(k);
      Transpose8x8Rows<T>([&](int i) { return src + (k + i) * stride + r; },
                          [&](int i) { return base + row_at[r + i]; });
    }
  }
  // The edges outside the tiles, as in TransposeChunk.
  for (int64_t r = full_rows; r < rows; ++r) {
    T* row = dst + row_at[r];
    for (int64_t k = 0; k < width; ++k) row[map.Col(k)] = src[k * stride + r];
  }
  if (full_k < width) {
    for (int64_t r = 0; r < full_rows; ++r) {
      T* row = dst + row_at[r];
      for (int64_t k = full_k; k < width; ++k) row[map.Col(k)] = src[k * stride + r];
    }
  }
}

template <typename T>
void PackBatchChunks(OpKernelContext* ctx, const T* src, const BatchChunks<T>& layout, T* dst) {
  constexpr int64_t kColumns = 64;
  const int64_t col_tiles = (layout.width + kColumns - 1) / kColumns;
  const int64_t width = layout.width;
  ParallelUnits(ctx, layout.count() * col_tiles, kColumns * BatchChunks<T>::kChunk / 2,
                [&](int64_t begin, int64_t end) {
                  for (int64_t u = begin; u < end; ++u) {
                    const int64_t c = u / col_tiles;
                    const int64_t k0 = (u % col_tiles) * kColumns;
                    const int64_t k1 = std::min(width, k0 + kColumns);
                    const int64_t rows = layout.rows(c);
                    const int64_t padded = layout.padded(c);
                    const T* s = src + c * BatchChunks<T>::kChunk * width;
                    T* d = dst + layout.offset(c);
                    const int64_t full_rows = rows / 8 * 8;
                    const int64_t full_k = k0 + (k1 - k0) / 8 * 8;
                    for (int64_t r = 0; r < full_rows; r += 8) {
                      for (int64_t k = k0; k < full_k; k += 8) {
                        Transpose8x8<T>(s + r * width + k, width, d + k * padded + r, padded);
                      }
                    }
                    for (int64_t k = k0; k < k1; ++k) {
                      const int64_t r0 = k < full_k ? full_rows : 0;
                      for (int64_t r = r0; r < rows; ++r) d[k * padded + r] = s[r * width + k];
                      for (int64_t r = rows; r < padded; ++r) d[k * padded + r] = T(0);
                    }
                  }
                });
}

// ---------------------------------------------------------------------------------------------
// Micro-kernel 1 (block sizes 4, 8, 16): R batch rows of one output block of width B,
//   out[r, 0:B] = sum over the listed blocks b of in_panel(b)[r, 0:B] . w[b]   (w[b] is B x B)
// in_panel(b) = in + panels[p] * panel_stride, rows ld apart.
// Forward: in = x panels, list = blocks of one output block-column, w = values.
// Input gradient: in = dy panels, list = blocks of one input block-row, w = values^T.

template <typename T, int B>
constexpr int RowTileRows() {
  constexpr int nv = B / LanesFor<T, B>();
  constexpr int r = (kVecRegs - nv - 1) / nv;
  return r < 1 ? 1 : (r > 14 ? 14 : r);
}

// `out`: the output block's rows, row r at out + map.Row(r) (map's column offset already in out).
template <typename T, int B, int R>
inline void BlockRowTile(const T* in, int64_t panel_stride, int64_t ld, const int32_t* blocks,
                         const int32_t* panels, int64_t n, const T* w, T* out,
                         const MatrixMap& map, int64_t row0) {
  constexpr int L = LanesFor<T, B>();
  constexpr int NV = B / L;
  using V = Vec<T, L>;
  V acc[R][NV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = V{};
  }
  for (int64_t p = 0; p < n; ++p) {
    const T* wb = w + static_cast<int64_t>(blocks[p]) * B * B;
    const T* x = in + panels[p] * panel_stride;
#pragma GCC unroll 16
    for (int i = 0; i < B; ++i) {
      V wi[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wi[v] = Load<V>(wb + i * B + v * L);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const T xs = x[r * ld + i];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] += xs * wi[v];
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    T* row = out + map.Row(row0 + r);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) Store(row + v * L, acc[r][v]);
  }
}

template <typename T, int B, int R>
struct BlockRowTail {
  static void Run(int rem, const T* in, int64_t panel_stride, int64_t ld, const int32_t* blocks,
                  const int32_t* panels, int64_t n, const T* w, T* out, const MatrixMap& map,
                  int64_t row0) {
    if (rem == R) {
      BlockRowTile<T, B, R>(in, panel_stride, ld, blocks, panels, n, w, out, map, row0);
    } else {
      BlockRowTail<T, B, R - 1>::Run(rem, in, panel_stride, ld, blocks, panels, n, w, out, map,
                                     row0);
    }
  }
};
template <typename T, int B>
struct BlockRowTail<T, B, 0> {
  static void Run(int, const T*, int64_t, int64_t, const int32_t*, const int32_t*, int64_t,
                  const T*, T*, const MatrixMap&, int64_t) {}
};

// Batch rows [m0, m1) of one output block of width B: row m at out + map.Row(m), its input row
// at in + (m - m0) * ld (+ the block's panel offset).
template <typename T, int B>
void BlockRowProduct(const T* in, int64_t panel_stride, int64_t ld, int64_t m0, int64_t m1,
                     const int32_t* blocks, const int32_t* panels, int64_t n, const T* w, T* out,
                     const MatrixMap& map) {
  if (n == 0) {
    for (int64_t m = m0; m < m1; ++m) std::fill_n(out + map.Row(m), B, T(0));
    return;
  }
  constexpr int R = RowTileRows<T, B>();
  // Tiles of 16 rows where registers allow and 16 divides the rows but R does not: the FC's
  // batch of 16 in one tile instead of 14 and a tail of 2 that walks every block again. (R = 14
  // stays the rule: the attention's runs are 28 tokens.)
  constexpr int R16 = (kVecRegs - B / LanesFor<T, B>() - 1) / (B / LanesFor<T, B>()) >= 16
                          ? 16
                          : R;
  if constexpr (R16 != R) {
    if ((m1 - m0) % R16 == 0 && (m1 - m0) % R != 0) {
      for (int64_t m = m0; m < m1; m += R16) {
        BlockRowTile<T, B, R16>(in + (m - m0) * ld, panel_stride, ld, blocks, panels, n, w, out,
                                map, m);
      }
      return;
    }
  }
  int64_t m = m0;
  for (; m + R <= m1; m += R) {
    BlockRowTile<T, B, R>(in + (m - m0) * ld, panel_stride, ld, blocks, panels, n, w, out, map,
                          m);
  }
  if (m < m1) {
    BlockRowTail<T, B, R - 1>::Run(static_cast<int>(m1 - m), in + (m - m0) * ld, panel_stride,
                                   ld, blocks, panels, n, w, out, map, m);
  }
}

// The rows of a sparse column are random, so the hardware prefetcher cannot guess them: fetch the
// row `ahead` entries further into L1 while this one is being used. always_inline: GCC deems a
// function that only prefetches free of effects and deletes calls to it.
constexpr int64_t kPrefetchAhead = 8;

// Rows that all fit in L1 gain nothing from the prefetch, and computing its address costs: the
// FC's values gradient (25,088 dots over a dy of 320 rows of 64 bytes) took twice as long with it.
// Kernels that gather rows take the choice as a template flag (kernel tables of both).
constexpr int64_t kL1Bytes = 32 * 1024;
template <typename T>
inline bool WorthPrefetching(int64_t rows, int64_t stride) {
  return rows * stride * static_cast<int64_t>(sizeof(T)) > kL1Bytes;
}

template <typename T, int kWidth>
__attribute__((always_inline)) inline void PrefetchRows(const T* chunk, int64_t stride,
                                                        const int32_t* other, int64_t p,
                                                        int64_t n) {
  if (p >= n) return;
  const char* row = reinterpret_cast<const char*>(chunk + other[p] * stride);
  for (int64_t byte = 0; byte < kWidth * static_cast<int64_t>(sizeof(T)); byte += 64) {
    __builtin_prefetch(row + byte);
  }
}

// ---------------------------------------------------------------------------------------------
// Micro-kernel 2 (block size 1, in batch chunks): one output column over one chunk,
//   out[0 : NV*L] = sum_p weight(p) * chunk[other[p] * stride + 0 : NV*L]
// weight(p) = values[order[p]], or values[p] when order is null (blocks already in key order).
// With few vectors per column, NA interleaved accumulator sets hide the FMA latency; they are
// added in a fixed order at the end.

template <typename T, int NV, bool kPrefetch = true>
inline void SparseAxpy(const T* chunk, int64_t stride, const int32_t* other, const T* values,
                       const int32_t* order, int64_t n, T* out) {
  constexpr int L = NativeLanes<T>();
  constexpr int NA = NV >= 8 ? 1 : (NV >= 4 ? 2 : 4);
  using V = Vec<T, L>;
  V acc[NA][NV];
#pragma GCC unroll 4
  for (int a = 0; a < NA; ++a) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[a][v] = V{};
  }
  int64_t p = 0;
  for (; p + NA <= n; p += NA) {
#pragma GCC unroll 4
    for (int a = 0; a < NA; ++a) {
      if constexpr (kPrefetch) {
        PrefetchRows<T, NV * L>(chunk, stride, other, p + a + kPrefetchAhead, n);
      }
      const T* src = chunk + other[p + a] * stride;
      const T wp = order != nullptr ? values[order[p + a]] : values[p + a];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[a][v] += wp * Load<V>(src + v * L);
    }
  }
  for (; p < n; ++p) {
    const T* src = chunk + other[p] * stride;
    const T wp = order != nullptr ? values[order[p]] : values[p];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[0][v] += wp * Load<V>(src + v * L);
  }
#pragma GCC unroll 4
  for (int a = 1; a < NA; ++a) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[0][v] += acc[a][v];
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) Store(out + v * L, acc[0][v]);
}

// Micro-kernel 2b (block size 1, scatter): one row of a chunk (NV vectors, kept in registers)
// added into several rows of another, out[other[p] * stride : +NV*L] += w[p] * row, in p order.
template <typename T, int NV>
inline void ScatterAxpy(const T* row, T* out, int64_t stride, const int32_t* other, const T* w,
                        int64_t n) {
  constexpr int L = NativeLanes<T>();
  using V = Vec<T, L>;
  V r[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) r[v] = Load<V>(row + v * L);
  for (int64_t p = 0; p < n; ++p) {
    T* dst = out + other[p] * stride;
    const T wp = w[p];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) Store(dst + v * L, Load<V>(dst + v * L) + wp * r[v]);
  }
}


// buf [g columns][rows] (g <= 16) into columns j0 .. j0 + g of the rows row_at[0 .. rows) of
// out (addressed by `map`): 8 x 8 tile transposes, the edges one by one.
template <typename T>
inline void StoreColumns(const T (*buf)[BatchChunks<T>::kChunk], int g, int64_t rows,
                         const int64_t* row_at, T* out, const MatrixMap& map, int64_t j0) {
  const int64_t full_rows = rows / 8 * 8;
  const int full_g = g / 8 * 8;
  for (int64_t r = 0; r < full_rows; r += 8) {
    const int64_t* row_offsets = row_at + r;
    for (int jj = 0; jj < full_g; jj += 8) {
      T* base = out + map.Col(j0 + jj);
      Transpose8x8Rows<T>([&](int i) { return &buf[jj + i][r]; },
                          [&](int i) { return base + row_offsets[i]; });
    }
  }
  // The edges outside the tiles, as in TransposeChunk.
  for (int64_t r = full_rows; r < rows; ++r) {
    T* row = out + row_at[r];
    for (int jj = 0; jj < g; ++jj) row[map.Col(j0 + jj)] = buf[jj][r];
  }
  if (full_g < g) {
    for (int64_t r = 0; r < full_rows; ++r) {
      T* row = out + row_at[r];
      for (int jj = full_g; jj < g; ++jj) row[map.Col(j0 + jj)] = buf[jj][r];
    }
  }
}

// Output columns [col_begin, col_end) of the rows [row0, row0 + rows) of out (addressed by
// `map`): column j is the sum over its group's entries p of weight(p) * in[:, other[p]] (weight(p)
// as in SparseAxpy), with the chunk of `in` transposed as [width][stride] of NV vectors.
// SparseAxpy is called directly (inlined) rather than through its table, and the map and the
// chunk's row offsets are local copies: the output stores (through memcpy) may alias anything the
// compiler cannot see is local, and it reloaded and recomputed them around every store.
template <typename T, int NV, bool kPrefetch>
void SparseColumnsChunkOf(const T* chunk, int64_t stride, int64_t rows, const int32_t* ptr,
                          const int32_t* other, const T* values, const int32_t* order,
                          int64_t col_begin, int64_t col_end, T* out, const MatrixMap& out_map,
                          int64_t row0) {
  constexpr int G = 16;
  constexpr int64_t kMaxRows = BatchChunks<T>::kChunk;
  alignas(64) T buf[G][kMaxRows];
  const MatrixMap map = out_map;
  int64_t row_at[kMaxRows];
  for (int64_t r = 0; r < rows; ++r) row_at[r] = map.Row(row0 + r);
  for (int64_t j0 = col_begin; j0 < col_end; j0 += G) {
    const int g = static_cast<int>(std::min<int64_t>(G, col_end - j0));
    for (int jj = 0; jj < g; ++jj) {
      const int64_t begin = ptr[j0 + jj];
      SparseAxpy<T, NV, kPrefetch>(chunk, stride, other + begin,
                                   order != nullptr ? values : values + begin,
                                   order != nullptr ? order + begin : nullptr,
                                   ptr[j0 + jj + 1] - begin, buf[jj]);
    }
    StoreColumns<T>(buf, g, rows, row_at, out, map, j0);
  }
}

template <typename T, bool kPrefetch, int... NV>
constexpr auto SparseColumnsChunkTable(std::integer_sequence<int, NV...>) {
  using Fn = void (*)(const T*, int64_t, int64_t, const int32_t*, const int32_t*, const T*,
                      const int32_t*, int64_t, int64_t, T*, const MatrixMap&, int64_t);
  return std::array<Fn, sizeof...(NV)>{&SparseColumnsChunkOf<T, NV + 1, kPrefetch>...};
}

// SparseColumnsChunkOf for the chunk's stride / lanes vectors (1 .. 8), prefetching unless the
// chunk's `width` rows fit in L1.
template <typename T>
void SparseColumnsChunk(const T* chunk, int64_t width, int64_t stride, int64_t rows,
                        const int32_t* ptr, const int32_t* other, const T* values,
                        const int32_t* order, int64_t col_begin, int64_t col_end, T* out,
                        const MatrixMap& map, int64_t row0) {
  static constexpr auto kPrefetching =
      SparseColumnsChunkTable<T, true>(std::make_integer_sequence<int, 8>());
  static constexpr auto kNotPrefetching =
      SparseColumnsChunkTable<T, false>(std::make_integer_sequence<int, 8>());
  const int nv = static_cast<int>(stride / NativeLanes<T>());
  const auto& table = WorthPrefetching<T>(width, stride) ? kPrefetching : kNotPrefetching;
  table[nv - 1](chunk, stride, rows, ptr, other, values, order, col_begin, col_end, out, map,
                row0);
}

// Block size 4 in batch chunks: the forward (and input-gradient) micro-kernel of the panels
// would use 4-wide vectors; here the batch is the vector dimension instead. For one output block
// of 4 columns and SV vectors of batch rows,
//   acc[j] = sum over the group's blocks b, i < 4 of w[b][i][j] * in_t[other * 4 + i, rows]
// (4 x SV accumulators, each block row loaded once for 4 columns).
template <typename T, int SV>
inline void Block4Chunk(const T* chunk, int64_t stride, const int32_t* blocks,
                        const int32_t* panels, int64_t n, const T* w, T* out) {
  constexpr int L = NativeLanes<T>();
  using V = Vec<T, L>;
  V acc[4][SV];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 2
    for (int v = 0; v < SV; ++v) acc[j][v] = V{};
  }
  for (int64_t p = 0; p < n; ++p) {
    const T* wb = w + static_cast<int64_t>(blocks[p]) * 16;
    const T* x = chunk + static_cast<int64_t>(panels[p]) * 4 * stride;
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      V xv[SV];
#pragma GCC unroll 2
      for (int v = 0; v < SV; ++v) xv[v] = Load<V>(x + i * stride + v * L);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const T wij = wb[i * 4 + j];
#pragma GCC unroll 2
        for (int v = 0; v < SV; ++v) acc[j][v] += wij * xv[v];
      }
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 2
    for (int v = 0; v < SV; ++v) Store(out + j * SV * L + v * L, acc[j][v]);
  }
}

// Output block-columns [unit_begin, unit_end) of out [m, ld_out] for block size 4, from the input
// packed as BatchChunks; groups/w as for BlockRowProduct. Chunks outermost, as in SparseColumns.
template <typename T>
void Block4Columns(const T* packed, const BatchChunks<T>& layout, const int32_t* ptr,
                   const int32_t* order, const int32_t* other, const T* w, int64_t unit_begin,
                   int64_t unit_end, T* out, int64_t ld_out) {
  constexpr int L = NativeLanes<T>();
  alignas(64) T buf[4 * 2 * L];
  for (int64_t c = 0; c < layout.count(); ++c) {
    const T* chunk = packed + layout.offset(c);
    const int64_t stride = layout.padded(c);
    const int64_t rows = layout.rows(c);
    const int64_t m0 = c * BatchChunks<T>::kChunk;
    for (int64_t u = unit_begin; u < unit_end; ++u) {
      const int32_t p0 = ptr[u];
      const int64_t n = ptr[u + 1] - p0;
      for (int64_t s0 = 0; s0 < rows; s0 += 2 * L) {
        const int sv = stride - s0 >= 2 * L ? 2 : 1;
        if (sv == 2) {
          Block4Chunk<T, 2>(chunk + s0, stride, order + p0, other + p0, n, w, buf);
        } else {
          Block4Chunk<T, 1>(chunk + s0, stride, order + p0, other + p0, n, w, buf);
        }
        const int64_t width = std::min<int64_t>(sv * L, rows - s0);
        for (int64_t t = 0; t < width; ++t) {
          T* dst = out + (m0 + s0 + t) * ld_out + u * 4;
          for (int j = 0; j < 4; ++j) dst[j] = buf[j * sv * L + t];
        }
      }
    }
  }
}

// Horizontal sums of L vectors at once: lane j of the result is the sum of the lanes of s[j].
// Each level adds the two halves of every lane group of two vectors into one (2 shuffles + 1
// add per pair), so L sums cost L - 1 pair steps instead of L separate reductions. The order of
// the additions is fixed.
template <typename T>
struct LaneIndex;
template <>
struct LaneIndex<float> {
  using type = int32_t;
};
template <>
struct LaneIndex<double> {
  using type = int64_t;
};

template <typename T, int L, int G>
inline Vec<T, L> FoldPair(const Vec<T, L>& x, const Vec<T, L>& y) {
  using I = Vec<typename LaneIndex<T>::type, L>;
  I lo, hi;
#pragma GCC unroll 16
  for (int i = 0; i < L; ++i) {
    const int j = i % (L / 2);
    const int base = (j / (G / 2)) * G + j % (G / 2) + (i < L / 2 ? 0 : L);
    lo[i] = base;
    hi[i] = base + G / 2;
  }
  return __builtin_shuffle(x, y, lo) + __builtin_shuffle(x, y, hi);
}

// s[0 .. N) hold lane groups of size G; folds them into s[0 .. N/2) with groups of G/2.
template <typename T, int L, int G, int N>
struct FoldLevels {
  static void Run(Vec<T, L>* s) {
#pragma GCC unroll 16
    for (int j = 0; j < N / 2; ++j) s[j] = FoldPair<T, L, G>(s[2 * j], s[2 * j + 1]);
    FoldLevels<T, L, G / 2, N / 2>::Run(s);
  }
};
template <typename T, int L, int N>
struct FoldLevels<T, L, 1, N> {
  static void Run(Vec<T, L>*) {}
};

template <typename T, int L>
inline Vec<T, L> TransposedSums(Vec<T, L>* s) {
  FoldLevels<T, L, L, L>::Run(s);
  return s[0];
}

// The sums of the first `count` (< L) of a batch of L dot-product vectors into out[0 .. count):
// the missing products are zeros, and their sums are dropped.
template <typename T>
inline void StoreLastSums(Vec<T, NativeLanes<T>()>* s, int count, T* out) {
  constexpr int L = NativeLanes<T>();
  if (count == 0) return;
  for (int j = count; j < L; ++j) s[j] = Vec<T, L>{};
  const Vec<T, L> sums = TransposedSums<T, L>(s);
  std::memcpy(out, &sums, count * sizeof(T));
}

// The dot products of every entry of a grouping, out[p] = <key_rows[k], other_rows[other[p]]>
// for the entries p of each key k (rows of NV vectors, `stride` apart). They are reduced L at a
// time with TransposedSums, across key boundaries, so that groups of a few entries (a sparse
// layer narrower than the vector) do not each pay a whole reduction.
template <typename T, int NV>
inline Vec<T, NativeLanes<T>()> EntryDot(const T* key_rows, const T* other_rows, int64_t stride,
                                         int64_t k, int32_t other) {
  constexpr int L = NativeLanes<T>();
  using V = Vec<T, L>;
  const T* x = key_rows + k * stride;
  const T* y = other_rows + other * stride;
  V dot = Load<V>(x) * Load<V>(y);
#pragma GCC unroll 8
  for (int v = 1; v < NV; ++v) dot += Load<V>(x + v * L) * Load<V>(y + v * L);
  return dot;
}

// Long rows (NV > 2 vectors): key k's row is kept in registers while its entries are walked.
template <typename T, int NV, bool kPrefetch>
void GroupDotsByKey(const T* key_rows, const T* other_rows, int64_t stride, const int32_t* ptr,
                    int64_t keys, const int32_t* other, T* out) {
  constexpr int L = NativeLanes<T>();
  using V = Vec<T, L>;
  const int64_t n = ptr[keys];
  V s[L];
  int count = 0;
  for (int64_t k = 0; k < keys; ++k) {
    V xr[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) xr[v] = Load<V>(key_rows + k * stride + v * L);
    for (int64_t p = ptr[k]; p < ptr[k + 1]; ++p) {
      if constexpr (kPrefetch) {
        PrefetchRows<T, NV * L>(other_rows, stride, other, p + kPrefetchAhead, n);
      }
      const T* y = other_rows + other[p] * stride;
      V dot = xr[0] * Load<V>(y);
#pragma GCC unroll 8
      for (int v = 1; v < NV; ++v) dot += xr[v] * Load<V>(y + v * L);
      s[count] = dot;
      if (++count == L) {
        Store(out + p + 1 - L, TransposedSums<T, L>(s));
        count = 0;
      }
    }
  }
  StoreLastSums<T>(s, count, out + n - count);
}

// Short rows (NV <= 2 vectors, e.g. the FC's batch of 16): L entries at a time in flat order, each
// with its key found by walking `ptr` (entries of a key are consecutive), so that the L products
// stay in registers through their reduction instead of being spilled one by one (FC values
// gradient ~30 % faster); the key's row is reloaded per entry, which costs more than it saves for
// longer rows. The same products and the same reduction as GroupDotsByKey.
template <typename T, int NV, bool kPrefetch>
void GroupDotsFlat(const T* key_rows, const T* other_rows, int64_t stride, const int32_t* ptr,
                   int64_t keys, const int32_t* other, T* out) {
  constexpr int L = NativeLanes<T>();
  using V = Vec<T, L>;
  const int64_t n = ptr[keys];
  int64_t k = 0;
  int64_t p0 = 0;
  for (; p0 + L <= n; p0 += L) {
    V s[L];
#pragma GCC unroll 16
    for (int i = 0; i < L; ++i) {
      const int64_t p = p0 + i;
      while (ptr[k + 1] <= p) ++k;
      if constexpr (kPrefetch) {
        PrefetchRows<T, NV * L>(other_rows, stride, other, p + kPrefetchAhead, n);
      }
      s[i] = EntryDot<T, NV>(key_rows, other_rows, stride, k, other[p]);
    }
    Store(out + p0, TransposedSums<T, L>(s));
  }
  if (p0 < n) {
    // The missing products are zeros, and their sums are dropped.
    V s[L];
    for (int i = 0; i < L; ++i) {
      const int64_t p = p0 + i;
      if (p < n) {
        while (ptr[k + 1] <= p) ++k;
        s[i] = EntryDot<T, NV>(key_rows, other_rows, stride, k, other[p]);
      } else {
        s[i] = V{};
      }
    }
    const V sums = TransposedSums<T, L>(s);
    std::memcpy(out + p0, &sums, (n - p0) * sizeof(T));
  }
}

template <typename T, int NV, bool kPrefetch>
void GroupDots(const T* key_rows, const T* other_rows, int64_t stride, const int32_t* ptr,
               int64_t keys, const int32_t* other, T* out) {
  if constexpr (NV <= 2) {
    GroupDotsFlat<T, NV, kPrefetch>(key_rows, other_rows, stride, ptr, keys, other, out);
  } else {
    GroupDotsByKey<T, NV, kPrefetch>(key_rows, other_rows, stride, ptr, keys, other, out);
  }
}

// GroupDots<T, nv> for nv = 1 .. 8, indexed by nv - 1.
template <typename T, bool kPrefetch, int... NV>
constexpr auto GroupDotsTable(std::integer_sequence<int, NV...>) {
  using Fn = void (*)(const T*, const T*, int64_t, const int32_t*, int64_t, const int32_t*, T*);
  return std::array<Fn, sizeof...(NV)>{&GroupDots<T, NV + 1, kPrefetch>...};
}
// GroupDots for rows of nv vectors, prefetching unless the `others` rows fit in L1.
template <typename T>
inline void GroupDotsDispatch(int nv, const T* key_rows, const T* other_rows, int64_t others,
                              int64_t stride, const int32_t* ptr, int64_t keys,
                              const int32_t* other, T* out) {
  static constexpr auto kPrefetching =
      GroupDotsTable<T, true>(std::make_integer_sequence<int, 8>());
  static constexpr auto kNotPrefetching =
      GroupDotsTable<T, false>(std::make_integer_sequence<int, 8>());
  const auto& table = WorthPrefetching<T>(others, stride) ? kPrefetching : kNotPrefetching;
  table[nv - 1](key_rows, other_rows, stride, ptr, keys, other, out);
}

// Both block-size-1 gradients of one chunk in one walk over the grouping by input row (rows of
// NV > 2 vectors): for each key k (an input row) and each of its entries p,
//   dots[p]  = <x_t[k], dy_t[other[p]]>                      as GroupDotsByKey computes it,
//   dx[:, k] = sum_p weight[p] * dy_t[other[p]]              as SparseAxpy (NA accumulator sets),
// dx written into its rows (addressed by `dx_map`) as SparseColumnsChunkOf writes them. Each row
// of dy_t is loaded once for both products: as two walks, each was bound by loading those rows
// from L2 (the QKV layer's dy_t chunk is 1536 rows of 512 bytes). The same operations in the same
// order as the two walks, so the same bits.
template <typename T, int NV>
void GroupDotsAndColumnsOf(const T* x_t, const T* dy_t, int64_t stride, int64_t rows,
                           const int32_t* ptr, int64_t keys, const int32_t* other,
                           const T* weight, T* dots, T* dx, const MatrixMap& dx_map,
                           int64_t row0) {
  constexpr int L = NativeLanes<T>();
  constexpr int NA = NV >= 8 ? 1 : (NV >= 4 ? 2 : 4);  // as SparseAxpy
  constexpr int G = 16;
  constexpr int64_t kMaxRows = BatchChunks<T>::kChunk;
  using V = Vec<T, L>;
  alignas(64) T buf[G][kMaxRows];
  const MatrixMap map = dx_map;  // local copies, as in SparseColumnsChunkOf
  int64_t row_at[kMaxRows];
  for (int64_t r = 0; r < rows; ++r) row_at[r] = map.Row(row0 + r);
  const int64_t n = ptr[keys];
  V s[L];
  int count = 0;
  for (int64_t k0 = 0; k0 < keys; k0 += G) {
    const int g = static_cast<int>(std::min<int64_t>(G, keys - k0));
    for (int kk = 0; kk < g; ++kk) {
      const int64_t k = k0 + kk;
      V xr[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) xr[v] = Load<V>(x_t + k * stride + v * L);
      V acc[NA][NV];
#pragma GCC unroll 4
      for (int a = 0; a < NA; ++a) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[a][v] = V{};
      }
      auto entry = [&](int64_t p, int a) __attribute__((always_inline)) {
        PrefetchRows<T, NV * L>(dy_t, stride, other, p + kPrefetchAhead, n);
        const T* y = dy_t + other[p] * stride;
        V yv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) yv[v] = Load<V>(y + v * L);
        V dot = xr[0] * yv[0];
#pragma GCC unroll 8
        for (int v = 1; v < NV; ++v) dot += xr[v] * yv[v];
        const T wp = weight[p];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[a][v] += wp * yv[v];
        s[count] = dot;
        if (++count == L) {
          Store(dots + p + 1 - L, TransposedSums<T, L>(s));
          count = 0;
        }
      };
      const int64_t begin = ptr[k];
      const int64_t entries = ptr[k + 1] - begin;
      int64_t q = 0;
      for (; q + NA <= entries; q += NA) {
#pragma GCC unroll 4
        for (int a = 0; a < NA; ++a) entry(begin + q + a, a);
      }
      for (; q < entries; ++q) entry(begin + q, 0);
#pragma GCC unroll 4
      for (int a = 1; a < NA; ++a) {
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[0][v] += acc[a][v];
      }
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) Store(buf[kk] + v * L, acc[0][v]);
    }
    StoreColumns<T>(buf, g, rows, row_at, dx, map, k0);
  }
  StoreLastSums<T>(s, count, dots + n - count);
}

template <typename T, int... NV>
constexpr auto GroupDotsAndColumnsTable(std::integer_sequence<int, NV...>) {
  using Fn = void (*)(const T*, const T*, int64_t, int64_t, const int32_t*, int64_t,
                      const int32_t*, const T*, T*, T*, const MatrixMap&, int64_t);
  return std::array<Fn, sizeof...(NV)>{&GroupDotsAndColumnsOf<T, NV + 3>...};
}

// GroupDotsAndColumnsOf for the chunk's stride / lanes vectors (3 .. 8).
template <typename T>
void GroupDotsAndColumns(const T* x_t, const T* dy_t, int64_t stride, int64_t rows,
                         const int32_t* ptr, int64_t keys, const int32_t* other, const T* weight,
                         T* dots, T* dx, const MatrixMap& dx_map, int64_t row0) {
  static constexpr auto kTable =
      GroupDotsAndColumnsTable<T>(std::make_integer_sequence<int, 6>());
  const int nv = static_cast<int>(stride / NativeLanes<T>());
  kTable[nv - 3](x_t, dy_t, stride, rows, ptr, keys, other, weight, dots, dx, dx_map, row0);
}

// ---------------------------------------------------------------------------------------------
// Micro-kernel 3: an IR x JW tile of a transposed-left product over the batch,
//   out[i, j] = sum_m x[m * ldx + i] * y[m * ldy + j]
// Values gradient: x and y are the block's panels of x and dy. Dense gradient: output tiles.

template <typename T, int JW>
constexpr int OuterTileRows() {
  constexpr int nv = JW / LanesFor<T, JW>();
  constexpr int r = (kVecRegs - nv - 1) / nv;
  return r < 1 ? 1 : (r > 16 ? 16 : r);
}

// kAccumulate: the sums continue from out's values (one running sum per element, so a product
// over the batch in several row ranges has the bits of one over all of it), else from zero.
template <typename T, int IR, int JW, bool kAccumulate = false>
inline void OuterTile(const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t m_rows, T* out,
                      int64_t ldo) {
  constexpr int L = LanesFor<T, JW>();
  constexpr int NV = JW / L;
  using V = Vec<T, L>;
  V acc[IR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < IR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = kAccumulate ? Load<V>(out + i * ldo + v * L) : V{};
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

template <typename T, int IR, int JW, bool kAccumulate = false>
struct OuterTail {
  static void Run(int rem, const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t m_rows,
                  T* out, int64_t ldo) {
    if (rem == IR) {
      OuterTile<T, IR, JW, kAccumulate>(x, ldx, y, ldy, m_rows, out, ldo);
    } else {
      OuterTail<T, IR - 1, JW, kAccumulate>::Run(rem, x, ldx, y, ldy, m_rows, out, ldo);
    }
  }
};
template <typename T, int JW, bool kAccumulate>
struct OuterTail<T, 0, JW, kAccumulate> {
  static void Run(int, const T*, int64_t, const T*, int64_t, int64_t, T*, int64_t) {}
};

// out[i, j] for i < ni, j < JW (added to out's values with kAccumulate, see OuterTile).
template <typename T, int JW, bool kAccumulate = false>
void OuterColumns(const T* x, int64_t ldx, const T* y, int64_t ldy, int64_t m_rows, int64_t ni,
                  T* out, int64_t ldo) {
  constexpr int IR = OuterTileRows<T, JW>();
  int64_t i = 0;
  for (; i + IR <= ni; i += IR) {
    OuterTile<T, IR, JW, kAccumulate>(x + i, ldx, y, ldy, m_rows, out + i * ldo, ldo);
  }
  if (i < ni) {
    OuterTail<T, IR - 1, JW, kAccumulate>::Run(static_cast<int>(ni - i), x + i, ldx, y, ldy,
                                               m_rows, out + i * ldo, ldo);
  }
}

// Two B x B blocks of a values gradient that share their rows of x (blocks of one input
// block-row): out0 = x^T . y0 and out1 = x^T . y1 over m_rows, as OuterColumns<T, B> computes
// each (the same running sum per element, from out's values with kAccumulate), with each
// broadcast of x used twice and twice the independent sums. At B = 8 one block's 8 sums of
// 8 lanes are too few to hide the FMA latency. Only where 2 * B + 3 vectors fit in registers.
template <typename T, int B>
constexpr bool kPairedOuterBlocks = 2 * B * (B / LanesFor<T, B>()) + 3 <= kVecRegs && B <= 8;

template <typename T, int B, bool kAccumulate = false>
inline void OuterBlockPair(const T* x, int64_t ldx, const T* y0, const T* y1, int64_t ldy,
                           int64_t m_rows, T* out0, T* out1) {
  constexpr int L = LanesFor<T, B>();
  constexpr int NV = B / L;
  using V = Vec<T, L>;
  V acc0[B][NV];
  V acc1[B][NV];
#pragma GCC unroll 16
  for (int i = 0; i < B; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      acc0[i][v] = kAccumulate ? Load<V>(out0 + i * B + v * L) : V{};
      acc1[i][v] = kAccumulate ? Load<V>(out1 + i * B + v * L) : V{};
    }
  }
  for (int64_t m = 0; m < m_rows; ++m) {
    V y0v[NV];
    V y1v[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      y0v[v] = Load<V>(y0 + m * ldy + v * L);
      y1v[v] = Load<V>(y1 + m * ldy + v * L);
    }
    const T* xm = x + m * ldx;
#pragma GCC unroll 16
    for (int i = 0; i < B; ++i) {
      const T xs = xm[i];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        acc0[i][v] += xs * y0v[v];
        acc1[i][v] += xs * y1v[v];
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < B; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      Store(out0 + i * B + v * L, acc0[i][v]);
      Store(out1 + i * B + v * L, acc1[i][v]);
    }
  }
}

// The values gradient of the blocks entries[0 .. n) of one input block-row (x: that row's panel,
// rows ldx = B apart; y(p): block p's panel of dy; out(p): its B x B output), in pairs where
// kPairedOuterBlocks, else one by one.
template <typename T, int B, bool kAccumulate = false, typename YOf, typename OutOf>
inline void OuterBlocksOfRow(const T* x, int64_t m_rows, int64_t n, YOf y_of, OutOf out_of) {
  int64_t p = 0;
  if constexpr (kPairedOuterBlocks<T, B>) {
    for (; p + 2 <= n; p += 2) {
      OuterBlockPair<T, B, kAccumulate>(x, B, y_of(p), y_of(p + 1), B, m_rows, out_of(p),
                                        out_of(p + 1));
    }
  }
  for (; p < n; ++p) OuterColumns<T, B, kAccumulate>(x, B, y_of(p), B, m_rows, B, out_of(p), B);
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


#endif  // DYNSPARSE_OPS_BSMM_MICROKERNELS_H_
