// Registration and shape functions of the block-sparse matmul ops. Kernels: bsmm_kernels.cc.
//
//   BsmmForward     y  [M, n_out]         = x [M, n_in] . W
//   BsmmInputGrad   dx [M, n_in]          = dy [M, n_out] . W^T
//   BsmmValuesGrad  dvalues [nnz, bs, bs] = (x^T . dy) at the non-zero blocks only
//   BsmmBackward    both of the above in one op (dx optional): the gradient of BsmmForward
//   BsmmLayer       y  [M, n_out]         = act(x . W + bias), act NONE, RELU or GELU: a whole
//                   layer (with GELU also z = x . W + bias, for the gradient)
//   BsmmLayerBackward  its gradient: dz = dy * act'(y or z), then dbias = sum of dz's rows and
//                   dx, dvalues of dz as BsmmBackward, in one op
//   BsmmDenseGrad   |x^T . dy|, [n_in, n_out] (NONE) or pooled per block [n_in/bs, n_out/bs]
//   BsmmIsa         the instruction-set variant of the kernels in use, and the supported ones
//
// The shape functions repeat the static checks of the kernels (bsmm_checks.h) so that graph
// construction fails early with the same messages.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bsmm_checks.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace dynsparse {
namespace {

using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

absl::Status BlockSizeAttr(InferenceContext* c, const char* op, int64_t* bs) {
  TF_RETURN_IF_ERROR(c->GetAttr("block_size", bs));
  return CheckBlockSize(op, *bs);
}

absl::Status DivisibleIfKnown(InferenceContext* c, const char* op, const char* what,
                              DimensionHandle dim, int64_t bs) {
  if (!c->ValueKnown(dim)) return absl::OkStatus();
  return CheckDivisible(op, what, c->Value(dim), bs);
}

// rows and cols [nnz], and values [nnz, bs, bs] when values_index >= 0; returns nnz.
absl::Status BlockInputs(InferenceContext* c, const char* op, int values_index, int rows_index,
                         int64_t bs, DimensionHandle* nnz) {
  ShapeHandle rows, cols;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(rows_index), 1, &rows));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(rows_index + 1), 1, &cols));
  if (!c->Merge(rows, cols, &rows).ok()) {
    return CoordinateLengthError(op, c->DebugString(c->Dim(rows, 0)),
                                 c->DebugString(c->Dim(cols, 0)));
  }
  *nnz = c->Dim(rows, 0);
  if (values_index < 0) return absl::OkStatus();
  ShapeHandle values;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(values_index), 3, &values));
  for (int d : {1, 2}) {
    DimensionHandle dim = c->Dim(values, d);
    if (c->ValueKnown(dim) && c->Value(dim) != bs) {
      return ValuesShapeError(op, bs, c->DebugString(values));
    }
  }
  if (!c->Merge(c->Dim(values, 0), *nnz, nnz).ok()) {
    return ValuesCountError(op, c->DebugString(c->Dim(values, 0)),
                            c->DebugString(c->Dim(rows, 0)));
  }
  return absl::OkStatus();
}

absl::Status SameBatch(InferenceContext* c, const char* op, ShapeHandle x, ShapeHandle dy,
                       DimensionHandle* batch) {
  if (c->Merge(c->Dim(x, 0), c->Dim(dy, 0), batch).ok()) return absl::OkStatus();
  return SameBatchError(op, c->DebugString(x), c->DebugString(dy));
}

// x [rows, n_in], or with input_heads_layout = [heads, tokens] x [batch, heads, tokens,
// head_size]: its rows (batch * tokens) and width (heads * head_size).
absl::Status InputRowsAndWidth(InferenceContext* c, const char* op, int64_t bs,
                               DimensionHandle* rows, DimensionHandle* width) {
  std::vector<int64_t> layout;
  TF_RETURN_IF_ERROR(c->GetAttr("input_heads_layout", &layout));
  TF_RETURN_IF_ERROR(CheckInputHeadsLayout(op, layout, bs));
  ShapeHandle x;
  if (layout.empty()) {
    TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
    *rows = c->Dim(x, 0);
    *width = c->Dim(x, 1);
    return absl::OkStatus();
  }
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
  DimensionHandle heads, tokens;
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(x, 1), layout[0], &heads));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(x, 2), layout[1], &tokens));
  if (c->ValueKnown(c->Dim(x, 3))) {
    TF_RETURN_IF_ERROR(CheckInputHeadSize(op, c->Value(c->Dim(x, 3)), bs));
  }
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(x, 0), layout[1], rows));
  return c->Multiply(c->Dim(x, 3), layout[0], width);
}

}  // namespace

REGISTER_OP("BsmmForward")
    .Input("x: T")
    .Input("values: T")
    .Input("rows: int32")
    .Input("cols: int32")
    .Output("y: T")
    .Attr("T: {float, double}")
    .Attr("block_size: int")
    .Attr("n_out: int >= 0")
    .Attr("heads_layout: list(int) = []")
    .Attr("input_heads_layout: list(int) = []")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      constexpr char kOp[] = "BsmmForward";
      int64_t bs, n_out;
      std::vector<int64_t> heads;
      TF_RETURN_IF_ERROR(BlockSizeAttr(c, kOp, &bs));
      TF_RETURN_IF_ERROR(c->GetAttr("n_out", &n_out));
      TF_RETURN_IF_ERROR(c->GetAttr("heads_layout", &heads));
      DimensionHandle rows, n_in, nnz;
      TF_RETURN_IF_ERROR(InputRowsAndWidth(c, kOp, bs, &rows, &n_in));
      TF_RETURN_IF_ERROR(BlockInputs(c, kOp, 1, 2, bs, &nnz));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_in (x.shape[1])", n_in, bs));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_out", c->MakeDim(n_out), bs));
      TF_RETURN_IF_ERROR(CheckHeadsLayout(kOp, heads, bs, n_out));
      if (heads.empty()) {
        c->set_output(0, c->MakeShape({rows, n_out}));
        return absl::OkStatus();
      }
      const int64_t parts = heads[0], n_heads = heads[1], tokens = heads[2];
      DimensionHandle batch = c->UnknownDim();
      if (c->ValueKnown(rows)) {
        TF_RETURN_IF_ERROR(CheckHeadsRows(kOp, c->Value(rows), tokens));
        batch = c->MakeDim(c->Value(rows) / tokens);
      }
      c->set_output(0, c->MakeShape({parts, batch, n_heads, tokens, n_out / (parts * n_heads)}));
      return absl::OkStatus();
    })
    .Doc(
        "Block-sparse y = x . W, W given as values [nnz, bs, bs] at block (rows, cols). With "
        "heads_layout = [parts, heads, tokens], y is written as [parts, batch, heads, tokens, "
        "head_size] (x's rows are batch * tokens), the layout of an attention's Q, K, V; with "
        "input_heads_layout = [heads, tokens], x is read as [batch, heads, tokens, head_size], "
        "an attention's output before its heads are merged.");

REGISTER_OP("BsmmInputGrad")
    .Input("dy: T")
    .Input("values: T")
    .Input("rows: int32")
    .Input("cols: int32")
    .Output("dx: T")
    .Attr("T: {float, double}")
    .Attr("block_size: int")
    .Attr("n_in: int >= 0")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      constexpr char kOp[] = "BsmmInputGrad";
      int64_t bs, n_in;
      TF_RETURN_IF_ERROR(BlockSizeAttr(c, kOp, &bs));
      TF_RETURN_IF_ERROR(c->GetAttr("n_in", &n_in));
      ShapeHandle dy;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &dy));
      DimensionHandle nnz;
      TF_RETURN_IF_ERROR(BlockInputs(c, kOp, 1, 2, bs, &nnz));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_out (dy.shape[1])", c->Dim(dy, 1), bs));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_in", c->MakeDim(n_in), bs));
      c->set_output(0, c->MakeShape({c->Dim(dy, 0), n_in}));
      return absl::OkStatus();
    })
    .Doc("Block-sparse dx = dy . W^T.");

REGISTER_OP("BsmmValuesGrad")
    .Input("x: T")
    .Input("dy: T")
    .Input("rows: int32")
    .Input("cols: int32")
    .Output("dvalues: T")
    .Attr("T: {float, double}")
    .Attr("block_size: int")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      constexpr char kOp[] = "BsmmValuesGrad";
      int64_t bs;
      TF_RETURN_IF_ERROR(BlockSizeAttr(c, kOp, &bs));
      ShapeHandle x, dy;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &dy));
      DimensionHandle batch, nnz;
      TF_RETURN_IF_ERROR(SameBatch(c, kOp, x, dy, &batch));
      TF_RETURN_IF_ERROR(BlockInputs(c, kOp, -1, 2, bs, &nnz));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_in (x.shape[1])", c->Dim(x, 1), bs));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_out (dy.shape[1])", c->Dim(dy, 1), bs));
      c->set_output(0, c->MakeShape({nnz, bs, bs}));
      return absl::OkStatus();
    })
    .Doc("Gradient of the block values: (x^T . dy) at the non-zero blocks only.");

REGISTER_OP("BsmmBackward")
    .Input("x: T")
    .Input("dy: num_dy * T")
    .Input("values: T")
    .Input("rows: int32")
    .Input("cols: int32")
    .Output("dx: T")
    .Output("dvalues: T")
    .Attr("T: {float, double}")
    .Attr("num_dy: int >= 1")
    .Attr("block_size: int")
    .Attr("compute_dx: bool = true")
    .Attr("heads_layout: list(int) = []")
    .Attr("input_heads_layout: list(int) = []")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      constexpr char kOp[] = "BsmmBackward";
      int64_t bs, num_dy;
      bool compute_dx;
      std::vector<int64_t> heads;
      TF_RETURN_IF_ERROR(BlockSizeAttr(c, kOp, &bs));
      TF_RETURN_IF_ERROR(c->GetAttr("num_dy", &num_dy));
      TF_RETURN_IF_ERROR(c->GetAttr("compute_dx", &compute_dx));
      TF_RETURN_IF_ERROR(c->GetAttr("heads_layout", &heads));
      DimensionHandle batch, n_in, nnz, n_out = c->UnknownDim();
      TF_RETURN_IF_ERROR(InputRowsAndWidth(c, kOp, bs, &batch, &n_in));
      ShapeHandle dy;
      if (heads.empty()) {
        TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &dy));
        if (!c->Merge(batch, c->Dim(dy, 0), &batch).ok()) {
          return SameBatchError(kOp, c->DebugString(c->input(0)), c->DebugString(dy));
        }
        n_out = c->Dim(dy, 1);
      } else {
        // One stacked [parts, batch, heads, tokens, d], or one [batch, heads, tokens, d] per part.
        TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(1), 4, &dy));
        TF_RETURN_IF_ERROR(c->WithRankAtMost(dy, num_dy == 1 ? 5 : 4, &dy));
        DimensionHandle head_size = c->Dim(dy, -1);
        if (c->ValueKnown(head_size)) {
          n_out = c->MakeDim(heads[0] * heads[1] * c->Value(head_size));
        }
      }
      TF_RETURN_IF_ERROR(BlockInputs(c, kOp, 1 + num_dy, 2 + num_dy, bs, &nnz));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_in (x.shape[1])", n_in, bs));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_out (dy.shape[1])", n_out, bs));
      if (!heads.empty() && c->ValueKnown(n_out)) {
        TF_RETURN_IF_ERROR(CheckHeadsLayout(kOp, heads, bs, c->Value(n_out)));
      }
      c->set_output(0, compute_dx ? c->input(0) : c->MakeShape({c->MakeDim(0), n_in}));
      c->set_output(1, c->MakeShape({nnz, bs, bs}));
      return absl::OkStatus();
    })
    .Doc(
        "The gradient of BsmmForward in one op: dx = dy . W^T (x's shape; an empty [0, n_in] "
        "without compute_dx) and dvalues = (x^T . dy) at the non-zero blocks, reading dy once for "
        "both. dy is one tensor, or with heads_layout = [parts, heads, tokens] also one "
        "[batch, heads, tokens, head_size] tensor per part (an attention's dQ, dK, dV, not "
        "stacked). heads_layout and input_heads_layout as for BsmmForward: dy in the layout of its "
        "output, x and dx in the layout of its input.");

namespace {

// x [M, n_in] and bias [n_out]; gives the rows, n_in and n_out.
absl::Status LayerInputs(InferenceContext* c, const char* op, int bias_index, int64_t bs,
                         DimensionHandle* rows, DimensionHandle* n_in, DimensionHandle* n_out) {
  ShapeHandle x, bias;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(bias_index), 1, &bias));
  *rows = c->Dim(x, 0);
  *n_in = c->Dim(x, 1);
  TF_RETURN_IF_ERROR(c->Merge(*n_out, c->Dim(bias, 0), n_out));
  TF_RETURN_IF_ERROR(DivisibleIfKnown(c, op, "n_in (x.shape[1])", *n_in, bs));
  return DivisibleIfKnown(c, op, "n_out (bias.shape[0])", *n_out, bs);
}

}  // namespace

REGISTER_OP("BsmmLayer")
    .Input("x: T")
    .Input("values: T")
    .Input("rows: int32")
    .Input("cols: int32")
    .Input("bias: T")
    .Output("y: T")
    .Output("z: T")
    .Attr("T: {float, double}")
    .Attr("block_size: int")
    .Attr("activation: {'NONE', 'RELU', 'GELU'} = 'NONE'")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      constexpr char kOp[] = "BsmmLayer";
      int64_t bs;
      TF_RETURN_IF_ERROR(BlockSizeAttr(c, kOp, &bs));
      DimensionHandle rows, n_in, nnz, n_out = c->UnknownDim();
      TF_RETURN_IF_ERROR(LayerInputs(c, kOp, 4, bs, &rows, &n_in, &n_out));
      TF_RETURN_IF_ERROR(BlockInputs(c, kOp, 1, 2, bs, &nnz));
      c->set_output(0, c->MakeShape({rows, n_out}));
      std::string activation;
      TF_RETURN_IF_ERROR(c->GetAttr("activation", &activation));
      c->set_output(1, c->MakeShape({activation == "GELU" ? rows : c->MakeDim(0), n_out}));
      return absl::OkStatus();
    })
    .Doc(
        "A whole sparse layer, y = act(x . W + bias) with act NONE, RELU or GELU (exact, "
        "tf.nn.gelu's bits): BsmmForward, the bias and the activation in one op (n_out from "
        "bias's length). z is the pre-activation x . W + bias with GELU (its gradient's input), "
        "else an empty [0, n_out].");

REGISTER_OP("BsmmLayerBackward")
    .Input("x: T")
    .Input("dy: T")
    .Input("y: T")
    .Input("values: T")
    .Input("rows: int32")
    .Input("cols: int32")
    .Output("dx: T")
    .Output("dvalues: T")
    .Output("dbias: T")
    .Attr("T: {float, double}")
    .Attr("block_size: int")
    .Attr("activation: {'NONE', 'RELU', 'GELU'} = 'NONE'")
    .Attr("compute_dx: bool = true")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      constexpr char kOp[] = "BsmmLayerBackward";
      int64_t bs;
      bool compute_dx;
      TF_RETURN_IF_ERROR(BlockSizeAttr(c, kOp, &bs));
      TF_RETURN_IF_ERROR(c->GetAttr("compute_dx", &compute_dx));
      ShapeHandle x, dy, y;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &dy));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &y));
      if (!c->Merge(dy, y, &dy).ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            kOp, ": dy ", c->DebugString(c->input(1)), " and y ", c->DebugString(c->input(2)),
            " must have the same shape (BsmmLayer's output and its gradient)."));
      }
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(SameBatch(c, kOp, x, dy, &batch));
      DimensionHandle nnz, n_in = c->Dim(x, 1), n_out = c->Dim(dy, 1);
      TF_RETURN_IF_ERROR(BlockInputs(c, kOp, 3, 4, bs, &nnz));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_in (x.shape[1])", n_in, bs));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_out (dy.shape[1])", n_out, bs));
      c->set_output(0, compute_dx ? x : c->MakeShape({c->MakeDim(0), n_in}));
      c->set_output(1, c->MakeShape({nnz, bs, bs}));
      c->set_output(2, c->Vector(n_out));
      return absl::OkStatus();
    })
    .Doc(
        "The gradient of BsmmLayer in one op: dz = dy * act'(y) (y BsmmLayer's output y, or its "
        "z with GELU), "
        "dbias = the sum of dz's rows, and dx = dz . W^T (an empty [0, n_in] without compute_dx) "
        "and dvalues = (x^T . dz) at the non-zero blocks as BsmmBackward.");

REGISTER_OP("BsmmDenseGrad")
    .Input("x: T")
    .Input("dy: T")
    .Output("grad: T")
    .Attr("T: {float, double}")
    .Attr("block_size: int")
    .Attr("pooling: {'NONE', 'SUM', 'AVG', 'MAX'} = 'NONE'")
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      constexpr char kOp[] = "BsmmDenseGrad";
      int64_t bs;
      TF_RETURN_IF_ERROR(BlockSizeAttr(c, kOp, &bs));
      std::string pooling;
      TF_RETURN_IF_ERROR(c->GetAttr("pooling", &pooling));
      ShapeHandle x, dy;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &dy));
      DimensionHandle batch;
      TF_RETURN_IF_ERROR(SameBatch(c, kOp, x, dy, &batch));
      DimensionHandle n_in = c->Dim(x, 1);
      DimensionHandle n_out = c->Dim(dy, 1);
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_in (x.shape[1])", n_in, bs));
      TF_RETURN_IF_ERROR(DivisibleIfKnown(c, kOp, "n_out (dy.shape[1])", n_out, bs));
      if (pooling != "NONE") {
        TF_RETURN_IF_ERROR(c->Divide(n_in, bs, /*evenly_divisible=*/true, &n_in));
        TF_RETURN_IF_ERROR(c->Divide(n_out, bs, /*evenly_divisible=*/true, &n_out));
      }
      c->set_output(0, c->MakeShape({n_in, n_out}));
      return absl::OkStatus();
    })
    .Doc(
        "|x^T . dy| for RigL regrowth: [n_in, n_out] with pooling NONE, otherwise SUM, AVG or "
        "MAX over each block, [n_in/bs, n_out/bs].");

REGISTER_OP("BsmmIsa")
    .Output("active: string")
    .Output("supported: string")
    .Attr("select: string = ''")
    .SetIsStateful()
    .SetShapeFn([](InferenceContext* c) -> absl::Status {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Vector(InferenceContext::kUnknownDim));
      return absl::OkStatus();
    })
    .Doc(
        "The instruction-set variant of the Bsmm kernels in use (avx2 or avx512, chosen at load "
        "time: the widest the CPU supports, or DYNSPARSE_ISA) and the variants the CPU supports. "
        "A non-empty `select` switches every Bsmm kernel of the process to that variant first.");

}  // namespace dynsparse
