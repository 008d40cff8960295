// Schema of the gated spatial recurrence (spatially variant RNN).
// Contract: docs/ops.md section 1 (Zhang et al. CVPR 2018, sec. 3).
//
//   h[t] = (1 - g[t]) * x[t] + g[t] * h[t-1],   h[-1] = 0
//
// along one of four scan directions, or all four at once ("all"): then the
// gate and the output have 4*C channels, direction k in channels
// [k*C, (k+1)*C), in the order left_to_right, right_to_left, top_to_bottom,
// bottom_to_top.

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace tfdeblur {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

namespace {

absl::Status RequireRank4(InferenceContext* c, int index, const char* name,
                          ShapeHandle* out) {
  ShapeHandle s = c->input(index);
  if (c->RankKnown(s) && c->Rank(s) != 4) {
    return errors::InvalidArgument("GatedRecurrence: ", name,
                                   " must be a rank-4 [N, H, W, C] tensor, got rank ",
                                   c->Rank(s), " (shape ", c->DebugString(s), ")");
  }
  return c->WithRank(s, 4, out);
}

absl::Status MergeDim(InferenceContext* c, DimensionHandle a, DimensionHandle b,
                      const char* what, DimensionHandle* out) {
  if (!c->Merge(a, b, out).ok()) {
    return errors::InvalidArgument("GatedRecurrence: ", what, " differ: ",
                                   c->DebugString(a), " vs ", c->DebugString(b));
  }
  return absl::OkStatus();
}

// x [N,H,W,C] and gate [N,H,W,factor*C] -> returns the output shape.
absl::Status RecurrenceShape(InferenceContext* c, int factor, ShapeHandle x, ShapeHandle g,
                             ShapeHandle* out) {
  DimensionHandle n, h, w, gc;
  TF_RETURN_IF_ERROR(MergeDim(c, c->Dim(x, 0), c->Dim(g, 0), "batch sizes of x and gate", &n));
  TF_RETURN_IF_ERROR(MergeDim(c, c->Dim(x, 1), c->Dim(g, 1), "heights of x and gate", &h));
  TF_RETURN_IF_ERROR(MergeDim(c, c->Dim(x, 2), c->Dim(g, 2), "widths of x and gate", &w));
  DimensionHandle xc_scaled;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(x, 3), factor, &xc_scaled));
  if (!c->Merge(xc_scaled, c->Dim(g, 3), &gc).ok()) {
    return errors::InvalidArgument(
        "GatedRecurrence: gate must have ", factor, " x (channels of x) = ",
        c->DebugString(xc_scaled), " channels, got ", c->DebugString(c->Dim(g, 3)));
  }
  *out = c->MakeShape({n, h, w, gc});
  return absl::OkStatus();
}

int DirectionFactor(InferenceContext* c) {
  std::string direction;
  if (!c->GetAttr("direction", &direction).ok()) return 1;
  return direction == "all" ? 4 : 1;
}

}  // namespace

REGISTER_OP("TfDeblur>GatedRecurrence")
    .Input("x: T")
    .Input("gate: T")
    .Output("y: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("direction: {'left_to_right', 'right_to_left', 'top_to_bottom', 'bottom_to_top', "
          "'all'}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, g, out;
      TF_RETURN_IF_ERROR(RequireRank4(c, 0, "x", &x));
      TF_RETURN_IF_ERROR(RequireRank4(c, 1, "gate", &g));
      TF_RETURN_IF_ERROR(RecurrenceShape(c, DirectionFactor(c), x, g, &out));
      c->set_output(0, out);
      return absl::OkStatus();
    })
    .Doc(R"doc(
Gated linear recurrence h[t] = (1 - g[t]) x[t] + g[t] h[t-1] along image rows or
columns (spatially variant RNN of Zhang et al. CVPR 2018). With direction "all"
the four directions run on the same x: gate and y have 4*C channels.
)doc");

REGISTER_OP("TfDeblur>GatedRecurrenceGrad")
    .Input("x: T")
    .Input("gate: T")
    .Input("y: T")
    .Input("dy: T")
    .Output("dx: T")
    .Output("dgate: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("direction: {'left_to_right', 'right_to_left', 'top_to_bottom', 'bottom_to_top', "
          "'all'}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, g, out, y, dy;
      TF_RETURN_IF_ERROR(RequireRank4(c, 0, "x", &x));
      TF_RETURN_IF_ERROR(RequireRank4(c, 1, "gate", &g));
      TF_RETURN_IF_ERROR(RecurrenceShape(c, DirectionFactor(c), x, g, &out));
      TF_RETURN_IF_ERROR(c->Merge(out, c->input(2), &y));
      TF_RETURN_IF_ERROR(c->Merge(out, c->input(3), &dy));
      c->set_output(0, x);
      c->set_output(1, g);
      return absl::OkStatus();
    })
    .Doc("Gradient of TfDeblur>GatedRecurrence with respect to x and gate.");

}  // namespace tfdeblur
}  // namespace tensorflow
