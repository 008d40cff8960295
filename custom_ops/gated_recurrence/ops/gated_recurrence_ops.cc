// Schema of the gated spatial recurrence (spatially variant RNN).
// Contract: docs/ops.md section 1 (Zhang et al. CVPR 2018, sec. 3).
//
//   h[t] = (1 - g[t]) * x[t] + g[t] * h[t-1],   h[-1] = 0
//
// along one of four scan directions, or all four at once ("all"): then the
// gate and the output have 4*C channels, direction k in channels
// [k*C, (k+1)*C), in the order left_to_right, right_to_left, top_to_bottom,
// bottom_to_top.

#include "common/ops/shape_checks.h"
#include "gated_recurrence/kernels/gated_recurrence_kernels.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace tfdeblur {

namespace {

constexpr const char* kOp = kGatedRecurrenceOp;

int DirectionFactor(InferenceContext* c) {
  std::string direction;
  if (!c->GetAttr("direction", &direction).ok()) return 1;
  return direction == "all" ? 4 : 1;
}

// Inputs 0 and 1 (x [N,H,W,C] and gate [N,H,W,factor*C], factor 4 for "all")
// checked against each other; `out` is the output's (the gate's) shape.
absl::Status RecurrenceShape(InferenceContext* c, ShapeHandle* x, ShapeHandle* g,
                             ShapeHandle* out) {
  TF_RETURN_IF_ERROR(RequireRank(c, kOp, 0, 4, "x", "[N, H, W, C]", x));
  TF_RETURN_IF_ERROR(RequireRank(c, kOp, 1, 4, "gate", "[N, H, W, C]", g));
  const int factor = DirectionFactor(c);
  DimensionHandle n, h, w, gc;
  TF_RETURN_IF_ERROR(MergeOrFail(c, kOp, c->Dim(*g, 0), c->Dim(*x, 0),
                                 "gate batch size must match x", &n));
  TF_RETURN_IF_ERROR(MergeOrFail(c, kOp, c->Dim(*g, 1), c->Dim(*x, 1),
                                 "gate height must match x", &h));
  TF_RETURN_IF_ERROR(MergeOrFail(c, kOp, c->Dim(*g, 2), c->Dim(*x, 2),
                                 "gate width must match x", &w));
  DimensionHandle xc_scaled;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(*x, 3), factor, &xc_scaled));
  if (!c->Merge(xc_scaled, c->Dim(*g, 3), &gc).ok()) {
    return errors::InvalidArgument(kOp, "gate must have ", factor, " x (channels of x) = ",
                                   c->DebugString(xc_scaled), " channels, got ",
                                   c->DebugString(c->Dim(*g, 3)));
  }
  *out = c->MakeShape({n, h, w, gc});
  return absl::OkStatus();
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
      TF_RETURN_IF_ERROR(RecurrenceShape(c, &x, &g, &out));
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
      TF_RETURN_IF_ERROR(RecurrenceShape(c, &x, &g, &out));
      TF_RETURN_IF_ERROR(c->Merge(out, c->input(2), &y));
      TF_RETURN_IF_ERROR(c->Merge(out, c->input(3), &dy));
      c->set_output(0, x);
      c->set_output(1, g);
      return absl::OkStatus();
    })
    .Doc("Gradient of TfDeblur>GatedRecurrence with respect to x and gate.");

}  // namespace tfdeblur
}  // namespace tensorflow
