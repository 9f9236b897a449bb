// CPU kernels of the block-sparse matmul ops and layers (registration: bsmm_ops.cc). They check the
// arguments, group the blocks (cached per kernel), allocate the outputs and call the products of
// the instruction-set variant chosen at load time (bsmm_dispatch.h, bsmm_products.h).
#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/str_join.h"

#include "bsmm_checks.h"
#include "bsmm_dispatch.h"
#include "bsmm_groups.h"
#include "gelu_elements.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/types.h"

namespace dynsparse {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::TensorShape;

absl::Status CheckRank(const char* op, const char* name, const Tensor& t, int rank) {
  if (t.dims() == rank) return absl::OkStatus();
  return RankError(op, name, rank, t.shape().DebugString());
}

absl::Status CheckSameBatch(const char* op, const Tensor& x, const Tensor& dy) {
  if (x.dim_size(0) == dy.dim_size(0)) return absl::OkStatus();
  return SameBatchError(op, x.shape().DebugString(), dy.shape().DebugString());
}

// values [nnz, bs, bs], rows [nnz], cols [nnz]; `values` may be null (ops without values).
absl::Status CheckBlockTensors(const char* op, const Tensor* values, const Tensor& rows,
                               const Tensor& cols, int64_t bs) {
  TF_RETURN_IF_ERROR(CheckRank(op, "rows", rows, 1));
  TF_RETURN_IF_ERROR(CheckRank(op, "cols", cols, 1));
  if (rows.dim_size(0) != cols.dim_size(0)) {
    return CoordinateLengthError(op, absl::StrCat(rows.dim_size(0)),
                                 absl::StrCat(cols.dim_size(0)));
  }
  if (values == nullptr) return absl::OkStatus();
  TF_RETURN_IF_ERROR(CheckRank(op, "values", *values, 3));
  if (values->dim_size(1) != bs || values->dim_size(2) != bs) {
    return ValuesShapeError(op, bs, values->shape().DebugString());
  }
  if (values->dim_size(0) != rows.dim_size(0)) {
    return ValuesCountError(op, absl::StrCat(values->dim_size(0)),
                            absl::StrCat(rows.dim_size(0)));
  }
  return absl::OkStatus();
}

template <typename T>
const KernelTable<T>* TableOrFail(OpKernelContext* ctx) {
  const KernelTable<T>* table = nullptr;
  const absl::Status status = ActiveTable<T>(&table);
  if (!status.ok()) ctx->CtxFailure(__FILE__, __LINE__, status);
  return table;
}

// The offsets of the heads layout [parts, batch, heads, tokens, head_size] of a [batch * tokens,
// parts * heads * head_size] matrix (CheckHeadsLayout), or a row-major map when `layout` is empty.
class HeadsMap {
 public:
  absl::Status Build(const char* op, const std::vector<int64_t>& layout, int64_t rows,
                     int64_t cols) {
    map_ = MatrixMap::RowMajor(cols);
    if (layout.empty()) return absl::OkStatus();
    const int64_t parts = layout[0], heads = layout[1], tokens = layout[2];
    TF_RETURN_IF_ERROR(CheckHeadsRows(op, rows, tokens));
    const int64_t head_size = cols / (parts * heads);
    const int64_t batch = rows / tokens;
    row_offsets_.resize(rows);
    for (int64_t r = 0; r < rows; ++r) {
      row_offsets_[r] = (r / tokens) * heads * tokens * head_size + (r % tokens) * head_size;
    }
    col_offsets_.resize(cols);
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t group = c / head_size;
      col_offsets_[c] = (group / heads) * batch * heads * tokens * head_size +
                        (group % heads) * tokens * head_size + c % head_size;
    }
    map_ = MatrixMap{cols, row_offsets_.data(), col_offsets_.data()};
    return absl::OkStatus();
  }
  const MatrixMap& map() const { return map_; }

  // The parts given as separate tensors [batch, heads, tokens, head_size] instead of one stacked
  // [parts, ...] tensor: column offsets measured from the first part's data, `base`.
  template <typename T>
  void OffsetParts(const std::vector<const Tensor*>& parts, const T* base) {
    const int64_t part_size = parts[0]->NumElements();
    const int64_t part_cols = static_cast<int64_t>(col_offsets_.size()) / parts.size();
    for (size_t s = 0; s < parts.size(); ++s) {
      const int64_t shift = Data<T>(*parts[s]) - base - static_cast<int64_t>(s) * part_size;
      for (int64_t c = s * part_cols; c < (s + 1) * part_cols; ++c) col_offsets_[c] += shift;
    }
  }

 private:
  std::vector<int64_t> row_offsets_;
  std::vector<int64_t> col_offsets_;
  MatrixMap map_;
};

// x [m, n_in], or [batch, heads, tokens, head_size] with input_heads_layout = [heads, tokens]:
// checks its rank and head size, and gives m, n_in and the map of its elements.
absl::Status InputMatrix(const char* op, const Tensor& x, const std::vector<int64_t>& layout,
                         int64_t bs, int64_t* m, int64_t* n_in, HeadsMap* map) {
  if (layout.empty()) {
    TF_RETURN_IF_ERROR(CheckRank(op, "x", x, 2));
    *m = x.dim_size(0);
    *n_in = x.dim_size(1);
    return map->Build(op, {}, *m, *n_in);
  }
  TF_RETURN_IF_ERROR(CheckRank(op, "x", x, 4));
  if (x.dim_size(1) != layout[0] || x.dim_size(2) != layout[1]) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": x ", x.shape().DebugString(), " is not [batch, heads, tokens, head_size] for "
        "input_heads_layout [", absl::StrJoin(layout, ", "), "]."));
  }
  TF_RETURN_IF_ERROR(CheckInputHeadSize(op, x.dim_size(3), bs));
  *m = x.dim_size(0) * layout[1];
  *n_in = layout[0] * x.dim_size(3);
  return map->Build(op, {1, layout[0], layout[1]}, *m, *n_in);
}

// The activation of BsmmLayer.
enum class Activation { kNone, kRelu, kGelu };

absl::Status ActivationAttr(OpKernelConstruction* c, Activation* activation) {
  std::string name;
  TF_RETURN_IF_ERROR(c->GetAttr("activation", &name));
  *activation = name == "RELU" ? Activation::kRelu
                : name == "GELU" ? Activation::kGelu
                                 : Activation::kNone;
  return absl::OkStatus();
}

// Runs elements(begin, end) over [0, count) in units that start at multiples of kGeluAlignment.
template <typename Elements>
void ParallelGelu(OpKernelContext* ctx, int64_t count, Elements elements) {
  constexpr int64_t kUnit = 64 * kGeluAlignment;
  ParallelUnits(ctx, (count + kUnit - 1) / kUnit, kUnit * 16, [&](int64_t begin, int64_t end) {
    elements(begin * kUnit, std::min(count, end * kUnit));
  });
}

// y = act(y + bias) row by row, as TensorFlow's AddV2 then Relu (max(v, 0) keeps a NaN and -0).
template <typename T>
void AddBiasActivate(T* y, const T* bias, int64_t m, int64_t n, bool relu) {
  for (int64_t r = 0; r < m; ++r) {
    T* row = y + r * n;
    for (int64_t j = 0; j < n; ++j) {
      const T v = row[j] + bias[j];
      row[j] = relu && v < T(0) ? T(0) : v;
    }
  }
}

// dz = dy * (y > 0), as TensorFlow's ReluGrad (a product, so -0 and NaN come out the same).
// y > 0 is tested on y's bits as a signed integer, (0, +inf]: a floating-point comparison may
// trap, so the compiler keeps it a branch per element (mispredicted half the time on a ReLU's
// output) instead of vectorizing the loop.
template <typename T>
void ReluGradient(const T* dy, const T* y, int64_t count, T* dz) {
  using Bits = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  static_assert(sizeof(Bits) == sizeof(T));
  const T infinity = std::numeric_limits<T>::infinity();
  Bits infinity_bits;
  std::memcpy(&infinity_bits, &infinity, sizeof(T));
  for (int64_t i = 0; i < count; ++i) {
    Bits bits;
    std::memcpy(&bits, y + i, sizeof(T));
    const Bits positive = static_cast<Bits>(bits > 0) & static_cast<Bits>(bits <= infinity_bits);
    dz[i] = dy[i] * static_cast<T>(positive);
  }
}

// dbias[j] = the sum of dz[r, j] over the rows, added in the order of TensorFlow's Sum over axis 0
// (Eigen's reduction preserving the inner dimension, in the 256-bit packets of TensorFlow's AVX
// build): with 16 rows or more, a column inside a whole packet sums rows r % 4 == k into four
// accumulators, adds them 0 + 1 + 2 + 3 and then the rows after the last multiple of 4; the
// columns after the last whole packet, and every column of fewer than 16 rows, in row order. So
// the bias gradient has the same bits as the unfused layer's.
template <typename T>
void SumRows(const T* dz, int64_t m, int64_t n, T* dbias) {
  constexpr int64_t kPacket = 32 / sizeof(T);
  const int64_t packed = m >= 16 ? n - n % kPacket : 0;
  std::fill_n(dbias, n, T(0));
  if (packed > 0) {
    std::vector<T> partial(3 * packed, T(0));
    T* accumulators[4] = {dbias, partial.data(), partial.data() + packed,
                          partial.data() + 2 * packed};
    const int64_t unrolled = m / 4 * 4;
    for (int64_t r = 0; r < unrolled; ++r) {
      const T* row = dz + r * n;
      T* accumulator = accumulators[r % 4];
      for (int64_t j = 0; j < packed; ++j) accumulator[j] += row[j];
    }
    for (int64_t j = 0; j < packed; ++j) {
      dbias[j] = ((dbias[j] + accumulators[1][j]) + accumulators[2][j]) + accumulators[3][j];
    }
    for (int64_t r = unrolled; r < m; ++r) {
      const T* row = dz + r * n;
      for (int64_t j = 0; j < packed; ++j) dbias[j] += row[j];
    }
  }
  for (int64_t r = 0; r < m; ++r) {
    const T* row = dz + r * n;
    for (int64_t j = packed; j < n; ++j) dbias[j] += row[j];
  }
}

// y [m, n_out] = x [m, n_in] . W; as BsmmLayer (kLayer), y = act(x . W + bias).
template <typename T, bool kLayer>
class BsmmForwardOp : public OpKernel {
 public:
  explicit BsmmForwardOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("block_size", &bs_));
    OP_REQUIRES_OK(c, CheckBlockSize(kOp, bs_));
    if (kLayer) {
      OP_REQUIRES_OK(c, ActivationAttr(c, &activation_));
      return;
    }
    OP_REQUIRES_OK(c, c->GetAttr("n_out", &n_out_));
    OP_REQUIRES_OK(c, c->GetAttr("heads_layout", &heads_layout_));
    OP_REQUIRES_OK(c, CheckHeadsLayout(kOp, heads_layout_, bs_, n_out_));
    OP_REQUIRES_OK(c, c->GetAttr("input_heads_layout", &input_heads_layout_));
    OP_REQUIRES_OK(c, CheckInputHeadsLayout(kOp, input_heads_layout_, bs_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& values = ctx->input(1);
    const Tensor& rows = ctx->input(2);
    const Tensor& cols = ctx->input(3);
    const Tensor* bias = nullptr;
    int64_t n_out = n_out_;
    if (kLayer) {
      bias = &ctx->input(4);
      OP_REQUIRES_OK(ctx, CheckRank(kOp, "bias", *bias, 1));
      n_out = bias->dim_size(0);
    }
    int64_t m = 0, n_in = 0;
    HeadsMap x_map;
    OP_REQUIRES_OK(ctx, InputMatrix(kOp, x, input_heads_layout_, bs_, &m, &n_in, &x_map));
    OP_REQUIRES_OK(ctx, CheckBlockTensors(kOp, &values, rows, cols, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in (x.shape[1])", n_in, bs_));
    const char* n_out_name = kLayer ? "n_out (bias.shape[0])" : "n_out";
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, n_out_name, n_out, bs_));
    const KernelTable<T>* table = TableOrFail<T>(ctx);
    if (table == nullptr) return;
    const bool by_row = bs_ == 1 && ElementForwardByRow(m, n_in, n_out);
    std::shared_ptr<const BlockGroups> groups;
    OP_REQUIRES_OK(ctx, groups_.Get(ctx, kOp, rows, cols, n_in / bs_, n_out / bs_, n_in, n_out,
                                    bs_, by_row, &groups));
    HeadsMap y_map;
    OP_REQUIRES_OK(ctx, y_map.Build(kOp, heads_layout_, m, n_out));
    TensorShape y_shape({m, n_out});
    if (!heads_layout_.empty()) {
      const int64_t parts = heads_layout_[0], heads = heads_layout_[1];
      const int64_t tokens = heads_layout_[2];
      y_shape = TensorShape({parts, m / tokens, heads, tokens, n_out / (parts * heads)});
    }
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, y_shape, &y));
    // BsmmLayer's second output: with GELU the pre-activation z = x . W + bias (its gradient's
    // input), else empty.
    Tensor* z = nullptr;
    const bool gelu = kLayer && activation_ == Activation::kGelu;
    if (kLayer) {
      OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({gelu ? m : 0, n_out}), &z));
    }
    if (m == 0 || n_out == 0) return;
    T* product = MutableData<T>(gelu ? z : y);
    OP_REQUIRES_OK(ctx, table->product[BlockSizeIndex(bs_)](
                            ctx, Data<T>(x), x_map.map(), m, n_in, *groups, Data<T>(values),
                            product, n_out, y_map.map()));
    if (!kLayer) return;
    AddBiasActivate(product, Data<T>(*bias), m, n_out, activation_ == Activation::kRelu);
    if (gelu) {
      T* y_data = MutableData<T>(y);
      ParallelGelu(ctx, m * n_out, [&](int64_t begin, int64_t end) {
        GeluElements<T>(product, y_data, begin, end);
      });
    }
  }

 private:
  static constexpr const char* kOp = kLayer ? "BsmmLayer" : "BsmmForward";
  int64_t bs_;
  int64_t n_out_ = 0;
  Activation activation_ = Activation::kNone;
  std::vector<int64_t> heads_layout_;
  std::vector<int64_t> input_heads_layout_;
  GroupCache groups_;
};

// What the three gradient ops take and give: BsmmInputGrad (dy, values, rows, cols) -> dx,
// BsmmValuesGrad (x, dy, rows, cols) -> dvalues, BsmmBackward (x, dy, values, rows, cols) ->
// (dx, dvalues). All run the variant's backward, blocks grouped by input block-row.
struct InputGradKind {
  static constexpr char kOp[] = "BsmmInputGrad";
  static constexpr bool kX = false, kValues = true, kDx = true, kDvalues = false, kLayer = false;
};
struct ValuesGradKind {
  static constexpr char kOp[] = "BsmmValuesGrad";
  static constexpr bool kX = true, kValues = false, kDx = false, kDvalues = true, kLayer = false;
};
struct BackwardKind {  // dy is a list: one tensor, or one [batch, heads, tokens, d] per part
  static constexpr char kOp[] = "BsmmBackward";
  static constexpr bool kX = true, kValues = true, kDx = true, kDvalues = true, kLayer = false;
};
// BsmmLayerBackward (x, dy, y, values, rows, cols) -> (dx, dvalues, dbias): the backward of
// dz = dy * act'(y), after dbias = the sum of dz's rows.
struct LayerBackwardKind {
  static constexpr char kOp[] = "BsmmLayerBackward";
  static constexpr bool kX = true, kValues = true, kDx = true, kDvalues = true, kLayer = true;
};

template <typename T, typename Kind>
class BsmmGradientOp : public OpKernel {
 public:
  explicit BsmmGradientOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("block_size", &bs_));
    OP_REQUIRES_OK(c, CheckBlockSize(kOp, bs_));
    if (!Kind::kX) OP_REQUIRES_OK(c, c->GetAttr("n_in", &n_in_attr_));
    if (Kind::kLayer) {
      OP_REQUIRES_OK(c, c->GetAttr("compute_dx", &compute_dx_));
      OP_REQUIRES_OK(c, ActivationAttr(c, &activation_));
    } else if (Kind::kDx && Kind::kDvalues) {
      OP_REQUIRES_OK(c, c->GetAttr("compute_dx", &compute_dx_));
      OP_REQUIRES_OK(c, c->GetAttr("heads_layout", &heads_layout_));
      OP_REQUIRES_OK(c, c->GetAttr("input_heads_layout", &input_heads_layout_));
      OP_REQUIRES_OK(c, CheckInputHeadsLayout(kOp, input_heads_layout_, bs_));
    }
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor* x = nullptr;
    const Tensor* values = nullptr;
    const Tensor* rows_input = nullptr;
    const Tensor* cols_input = nullptr;
    if (Kind::kX) OP_REQUIRES_OK(ctx, ctx->input("x", &x));
    if (Kind::kValues) OP_REQUIRES_OK(ctx, ctx->input("values", &values));
    OP_REQUIRES_OK(ctx, ctx->input("rows", &rows_input));
    OP_REQUIRES_OK(ctx, ctx->input("cols", &cols_input));
    const Tensor& rows = *rows_input;
    const Tensor& cols = *cols_input;
    std::vector<const Tensor*> dys;
    if constexpr (std::is_same_v<Kind, BackwardKind>) {
      tensorflow::OpInputList list;
      OP_REQUIRES_OK(ctx, ctx->input_list("dy", &list));
      for (int i = 0; i < list.size(); ++i) dys.push_back(&list[i]);
    } else {
      const Tensor* dy = nullptr;
      OP_REQUIRES_OK(ctx, ctx->input("dy", &dy));
      dys.push_back(dy);
    }
    const Tensor& dy = *dys[0];
    int64_t m = 0, n_out = 0;
    OP_REQUIRES_OK(ctx, DyMatrix(dys, &m, &n_out));
    int64_t n_in = n_in_attr_;
    HeadsMap x_map;
    if (x != nullptr) {
      int64_t x_rows = 0;
      OP_REQUIRES_OK(ctx,
                     InputMatrix(kOp, *x, input_heads_layout_, bs_, &x_rows, &n_in, &x_map));
      OP_REQUIRES(ctx, x_rows == m,
                  SameBatchError(kOp, x->shape().DebugString(), dy.shape().DebugString()));
    } else {
      OP_REQUIRES_OK(ctx, x_map.Build(kOp, {}, m, n_in));
    }
    OP_REQUIRES_OK(ctx, CheckBlockTensors(kOp, values, rows, cols, bs_));
    if (x != nullptr) OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in (x.shape[1])", n_in, bs_));
    if (x == nullptr) OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in", n_in, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_out (dy.shape[1])", n_out, bs_));
    const KernelTable<T>* table = TableOrFail<T>(ctx);
    if (table == nullptr) return;
    const int64_t nnz = rows.dim_size(0);
    std::shared_ptr<const BlockGroups> groups;
    OP_REQUIRES_OK(ctx, groups_.Get(ctx, kOp, rows, cols, n_in / bs_, n_out / bs_, n_in, n_out,
                                    bs_, /*by_row=*/true, &groups));
    T* dx = nullptr;
    T* dvalues = nullptr;
    int output = 0;
    if (Kind::kDx) {
      Tensor* out = nullptr;
      TensorShape dx_shape({compute_dx_ ? m : 0, n_in});
      if (compute_dx_ && x != nullptr) dx_shape = x->shape();
      OP_REQUIRES_OK(ctx, ctx->allocate_output(output++, dx_shape, &out));
      if (compute_dx_) dx = MutableData<T>(out);
    }
    if (Kind::kDvalues) {
      Tensor* out = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(output++, TensorShape({nnz, bs_, bs_}), &out));
      dvalues = MutableData<T>(out);
    }
    const T* dy_data = Data<T>(dy);
    Tensor dz;
    if (Kind::kLayer) {
      const Tensor* y = nullptr;
      OP_REQUIRES_OK(ctx, ctx->input("y", &y));
      OP_REQUIRES(ctx, y->shape() == dy.shape(),
                  absl::InvalidArgumentError(absl::StrCat(
                      kOp, ": dy ", dy.shape().DebugString(), " and y ", y->shape().DebugString(),
                      " must have the same shape (BsmmLayer's output and its gradient).")));
      if (activation_ != Activation::kNone) {
        OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DataTypeToEnum<T>::value,
                                               dy.shape(), &dz));
        T* dz_data = MutableData<T>(&dz);
        if (activation_ == Activation::kRelu) {
          ReluGradient(dy_data, Data<T>(*y), m * n_out, dz_data);
        } else {
          const T* z_data = Data<T>(*y);
          ParallelGelu(ctx, m * n_out, [&](int64_t begin, int64_t end) {
            GeluGradientElements<T>(dy_data, z_data, dz_data, begin, end);
          });
        }
        dy_data = dz_data;
      }
      Tensor* dbias = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(output++, TensorShape({n_out}), &dbias));
      SumRows(dy_data, m, n_out, MutableData<T>(dbias));
    }
    if (m == 0 || nnz == 0 || n_in == 0) {
      if (dx != nullptr) std::fill_n(dx, m * n_in, T(0));
      if (dvalues != nullptr) std::fill_n(dvalues, nnz * bs_ * bs_, T(0));
      return;
    }
    HeadsMap dy_map;
    OP_REQUIRES_OK(ctx, dy_map.Build(kOp, heads_layout_, m, n_out));
    if (dys.size() > 1) dy_map.OffsetParts(dys, Data<T>(dy));
    OP_REQUIRES_OK(ctx, table->backward[BlockSizeIndex(bs_)](
                            ctx, x != nullptr ? Data<T>(*x) : nullptr, x_map.map(), dy_data,
                            dy_map.map(), m, n_in, n_out, *groups,
                            values != nullptr ? Data<T>(*values) : nullptr, dx, dvalues));
  }

 private:
  // dy [m, n_out]; with heads_layout [parts, heads, tokens] one [parts, batch, heads, tokens,
  // head_size] tensor or `parts` tensors [batch, heads, tokens, head_size] (an attention's dQ, dK,
  // dV as they come, not stacked): checks their shapes and gives m and n_out.
  absl::Status DyMatrix(const std::vector<const Tensor*>& dys, int64_t* m, int64_t* n_out) const {
    const Tensor& dy = *dys[0];
    if (heads_layout_.empty()) {
      if (dys.size() != 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            kOp, ": dy must be one tensor [batch, n_out] without heads_layout, got ", dys.size(),
            "."));
      }
      TF_RETURN_IF_ERROR(CheckRank(kOp, "dy", dy, 2));
      *m = dy.dim_size(0);
      *n_out = dy.dim_size(1);
      return absl::OkStatus();
    }
    const int64_t parts = heads_layout_[0], heads = heads_layout_[1];
    const int64_t tokens = heads_layout_[2];
    const bool stacked = dys.size() == 1 && dy.dims() == 5;
    const int part_axis = stacked ? 1 : 0;  // the batch axis of each tensor
    bool fits = (stacked || static_cast<int64_t>(dys.size()) == parts);
    for (const Tensor* part : dys) {
      fits = fits && part->dims() == (stacked ? 5 : 4) &&
             part->shape() == dy.shape() && (!stacked || part->dim_size(0) == parts) &&
             part->dim_size(part_axis + 1) == heads && part->dim_size(part_axis + 2) == tokens;
    }
    if (!fits) {
      return absl::InvalidArgumentError(absl::StrCat(
          kOp, ": dy (", dys.size(), " tensor(s), the first ", dy.shape().DebugString(),
          ") is not [parts, batch, heads, tokens, head_size], nor `parts` tensors [batch, heads, "
          "tokens, head_size], for heads_layout [", absl::StrJoin(heads_layout_, ", "),
          "]. Pass BsmmForward's output layout."));
    }
    *m = dy.dim_size(part_axis) * tokens;
    *n_out = parts * heads * dy.dim_size(part_axis + 3);
    return CheckHeadsLayout(kOp, heads_layout_, bs_, *n_out);
  }

  static constexpr const char* kOp = Kind::kOp;
  int64_t bs_;
  int64_t n_in_attr_ = 0;
  bool compute_dx_ = Kind::kDx;
  Activation activation_ = Activation::kNone;
  std::vector<int64_t> heads_layout_;
  std::vector<int64_t> input_heads_layout_;
  GroupCache groups_;
};

template <typename T>
class BsmmDenseGradOp : public OpKernel {
 public:
  explicit BsmmDenseGradOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("block_size", &bs_));
    OP_REQUIRES_OK(c, CheckBlockSize(kOp, bs_));
    std::string pooling;
    OP_REQUIRES_OK(c, c->GetAttr("pooling", &pooling));
    static const std::pair<const char*, Pooling> kPoolings[] = {
        {"NONE", Pooling::kNone}, {"SUM", Pooling::kSum}, {"AVG", Pooling::kAvg},
        {"MAX", Pooling::kMax}};
    const auto* found = std::find_if(std::begin(kPoolings), std::end(kPoolings),
                                     [&](const auto& entry) { return pooling == entry.first; });
    OP_REQUIRES(c, found != std::end(kPoolings),
                absl::InvalidArgumentError(absl::StrCat(
                    kOp, ": pooling must be one of NONE, SUM, AVG, MAX, got '", pooling, "'.")));
    pooling_ = found->second;
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& dy = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "x", x, 2));
    OP_REQUIRES_OK(ctx, CheckRank(kOp, "dy", dy, 2));
    OP_REQUIRES_OK(ctx, CheckSameBatch(kOp, x, dy));
    const int64_t m = x.dim_size(0);
    const int64_t n_in = x.dim_size(1);
    const int64_t n_out = dy.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_in (x.shape[1])", n_in, bs_));
    OP_REQUIRES_OK(ctx, CheckDivisible(kOp, "n_out (dy.shape[1])", n_out, bs_));
    const KernelTable<T>* table = TableOrFail<T>(ctx);
    if (table == nullptr) return;
    const bool pooled = pooling_ != Pooling::kNone;
    const int64_t out_rows = pooled ? n_in / bs_ : n_in;
    const int64_t out_cols = pooled ? n_out / bs_ : n_out;
    Tensor* grad = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({out_rows, out_cols}), &grad));
    if (n_in == 0 || n_out == 0) return;
    table->dense_grad(ctx, Data<T>(x), m, n_in, Data<T>(dy), n_out, bs_, pooling_,
                      MutableData<T>(grad));
  }

 private:
  static constexpr char kOp[] = "BsmmDenseGrad";
  int64_t bs_;
  Pooling pooling_;
};

// The variant in use and the variants this CPU supports; `select` switches to another one.
class BsmmIsaOp : public OpKernel {
 public:
  explicit BsmmIsaOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("select", &select_));
  }

  void Compute(OpKernelContext* ctx) override {
    if (!select_.empty()) OP_REQUIRES_OK(ctx, SelectIsa(select_));
    std::string active;
    OP_REQUIRES_OK(ctx, ActiveIsa(&active));
    const std::vector<std::string> supported = SupportedIsas();
    Tensor* active_out = nullptr;
    Tensor* supported_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &active_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            1, TensorShape({static_cast<int64_t>(supported.size())}),
                            &supported_out));
    active_out->scalar<tensorflow::tstring>()() = active;
    auto names = supported_out->vec<tensorflow::tstring>();
    for (size_t i = 0; i < supported.size(); ++i) names(i) = supported[i];
  }

 private:
  std::string select_;
};

#define DYNSPARSE_REGISTER_KERNELS(T)                                                            \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmForward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),                 \
      (BsmmForwardOp<T, false>));                                                                \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmLayer").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),                   \
      (BsmmForwardOp<T, true>));                                                                 \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmLayerBackward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),           \
      (BsmmGradientOp<T, LayerBackwardKind>));                                                   \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmInputGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),               \
      (BsmmGradientOp<T, InputGradKind>));                                                       \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmValuesGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),              \
      (BsmmGradientOp<T, ValuesGradKind>));                                                      \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmBackward").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),                \
      (BsmmGradientOp<T, BackwardKind>));                                                        \
  REGISTER_KERNEL_BUILDER(                                                                       \
      Name("BsmmDenseGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<T>("T"),               \
      BsmmDenseGradOp<T>);

DYNSPARSE_REGISTER_KERNELS(float)
DYNSPARSE_REGISTER_KERNELS(double)

#undef DYNSPARSE_REGISTER_KERNELS

REGISTER_KERNEL_BUILDER(Name("BsmmIsa").Device(tensorflow::DEVICE_CPU), BsmmIsaOp);

}  // namespace
}  // namespace dynsparse
