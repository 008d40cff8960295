// Schema of the modulated deformable convolution (DCNv2), NHWC.
// Contract: docs/ops.md section 2 (Zhu et al. CVPR 2019; used by
// Yuan et al. CVPR 2020, sec. 3.2). Same meaning as torchvision's
// deform_conv2d with a mask:
//
//   y[n,i,j,o] = b[o] + sum_{g,ky,kx,c in g} w[ky,kx,c,o] * m[n,i,j,g*K+k]
//                       * bilinear(x[n,:,:,c], py, px)
//   py = i*sh - pad_top  + ky*dh + offset[n,i,j, 2*(g*K+k)]
//   px = j*sw - pad_left + kx*dw + offset[n,i,j, 2*(g*K+k)+1]
//
// x [N,H,W,Cin], offset [N,Ho,Wo,2*G*K], mask [N,Ho,Wo,G*K] (used as given),
// kernel [KH,KW,Cin/groups,Cout], bias [Cout] or [0] (no bias).

#include <vector>

#include "common/ops/shape_checks.h"
#include "deform_conv/kernels/deform_conv_shape.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace tfdeblur {

namespace {

constexpr const char* kOp = kDeformConvOp;

// Checks every input against x and the kernel; returns y's shape.
absl::Status ForwardShape(InferenceContext* c, ShapeHandle* y_shape) {
  DeformConvAttrs a;
  TF_RETURN_IF_ERROR(ReadDeformConvAttrs(c, &a));
  ShapeHandle x, offset, mask, kernel, bias;
  TF_RETURN_IF_ERROR(RequireRank(c, kOp, 0, 4, "x", "[N, H, W, Cin]", &x));
  TF_RETURN_IF_ERROR(RequireRank(c, kOp, 1, 4, "offset", "[N, Ho, Wo, 2*G*KH*KW]", &offset));
  TF_RETURN_IF_ERROR(RequireRank(c, kOp, 2, 4, "mask", "[N, Ho, Wo, G*KH*KW]", &mask));
  TF_RETURN_IF_ERROR(RequireRank(c, kOp, 3, 4, "kernel", "[KH, KW, Cin/groups, Cout]", &kernel));
  TF_RETURN_IF_ERROR(RequireRank(c, kOp, 4, 1, "bias", "[Cout] or [0]", &bias));

  DimensionHandle n = c->Dim(x, 0);
  DimensionHandle kh = c->Dim(kernel, 0), kw = c->Dim(kernel, 1);
  DimensionHandle cin = c->Dim(x, 3), cout = c->Dim(kernel, 3);
  if (c->ValueKnown(cin)) {
    const int64_t ci = c->Value(cin);
    if (ci % a.groups != 0) {
      return errors::InvalidArgument(kOp, "groups (", a.groups,
                                     ") must divide the input channels of x (", ci, ")");
    }
    if (ci % a.dgroups != 0) {
      return errors::InvalidArgument(kOp, "deformable_groups (", a.dgroups,
                                     ") must divide the input channels of x (", ci, ")");
    }
    DimensionHandle unused;
    TF_RETURN_IF_ERROR(MergeOrFail(c, kOp, c->Dim(kernel, 2), c->MakeDim(ci / a.groups),
                                   "kernel's dimension 2 must be Cin / groups", &unused));
  }
  if (c->ValueKnown(cout) && c->Value(cout) % a.groups != 0) {
    return errors::InvalidArgument(kOp, "groups (", a.groups,
                                   ") must divide the output channels of kernel (",
                                   c->Value(cout), ")");
  }
  if (c->ValueKnown(c->Dim(bias, 0)) && c->Value(c->Dim(bias, 0)) != 0) {
    DimensionHandle unused;
    TF_RETURN_IF_ERROR(MergeOrFail(c, kOp, c->Dim(bias, 0), cout,
                                   "bias must have Cout elements (or 0 for no bias)", &unused));
  }

  DimensionHandle ho = c->UnknownDim(), wo = c->UnknownDim();
  if (c->ValueKnown(kh) && c->ValueKnown(kw)) {
    const int64_t khv = c->Value(kh), kwv = c->Value(kw);
    if (khv < 1 || kwv < 1) return errors::InvalidArgument(kOp, "kernel must not be empty");
    const int64_t taps = a.dgroups * khv * kwv;
    DimensionHandle unused;
    TF_RETURN_IF_ERROR(MergeOrFail(c, kOp, c->Dim(offset, 3), c->MakeDim(2 * taps),
                                   "offset channels must be 2 * deformable_groups * KH * KW",
                                   &unused));
    TF_RETURN_IF_ERROR(MergeOrFail(c, kOp, c->Dim(mask, 3), c->MakeDim(taps),
                                   "mask channels must be deformable_groups * KH * KW",
                                   &unused));
    int64_t len, unused_pad;
    if (c->ValueKnown(c->Dim(x, 1))) {
      TF_RETURN_IF_ERROR(DeformConvOutputSize(a, 0, c->Value(c->Dim(x, 1)), khv, "height", &len,
                                              &unused_pad));
      ho = c->MakeDim(len);
    }
    if (c->ValueKnown(c->Dim(x, 2))) {
      TF_RETURN_IF_ERROR(DeformConvOutputSize(a, 1, c->Value(c->Dim(x, 2)), kwv, "width", &len,
                                              &unused_pad));
      wo = c->MakeDim(len);
    }
  }
  for (int i = 0; i < 2; ++i) {
    ShapeHandle t = i == 0 ? offset : mask;
    const std::string name = i == 0 ? "offset" : "mask";
    TF_RETURN_IF_ERROR(MergeOrFail(c, kOp, c->Dim(t, 0), n, name + " batch size must match x", &n));
    TF_RETURN_IF_ERROR(MergeOrFail(c, kOp, c->Dim(t, 1), ho,
                                   name + " height must be the output height", &ho));
    TF_RETURN_IF_ERROR(MergeOrFail(c, kOp, c->Dim(t, 2), wo,
                                   name + " width must be the output width", &wo));
  }
  *y_shape = c->MakeShape({n, ho, wo, cout});
  return absl::OkStatus();
}

}  // namespace

#define TFDEBLUR_DCN_ATTRS                                          \
  Attr("T: {half, bfloat16, float, double}")                        \
      .Attr("strides: list(int) = [1, 1]")                          \
      .Attr("dilations: list(int) = [1, 1]")                        \
      .Attr("padding: {'SAME', 'VALID', 'EXPLICIT'} = 'SAME'")      \
      .Attr("explicit_paddings: list(int) = []")                    \
      .Attr("groups: int >= 1 = 1")                                 \
      .Attr("deformable_groups: int >= 1 = 1")

REGISTER_OP("TfDeblur>ModulatedDeformConv2D")
    .Input("x: T")
    .Input("offset: T")
    .Input("mask: T")
    .Input("kernel: T")
    .Input("bias: T")
    .Output("y: T")
    .TFDEBLUR_DCN_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y;
      TF_RETURN_IF_ERROR(ForwardShape(c, &y));
      c->set_output(0, y);
      return absl::OkStatus();
    })
    .Doc(R"doc(
Modulated deformable 2-D convolution (DCNv2) in NHWC. padding SAME follows
TensorFlow's rule (output ceil(H / stride), odd padding pixel at the bottom);
EXPLICIT takes explicit_paddings = [top, bottom, left, right]. A bias of shape
[0] means no bias.
)doc");

REGISTER_OP("TfDeblur>ModulatedDeformConv2DGrad")
    .Input("x: T")
    .Input("offset: T")
    .Input("mask: T")
    .Input("kernel: T")
    .Input("bias: T")
    .Input("dy: T")
    .Output("dx: T")
    .Output("doffset: T")
    .Output("dmask: T")
    .Output("dkernel: T")
    .Output("dbias: T")
    .TFDEBLUR_DCN_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle y, dy;
      TF_RETURN_IF_ERROR(ForwardShape(c, &y));
      if (!c->Merge(y, c->input(5), &dy).ok()) {
        return errors::InvalidArgument(kOp, "dy must have the output's shape ",
                                       c->DebugString(y), ", got ",
                                       c->DebugString(c->input(5)));
      }
      for (int i = 0; i < 5; ++i) c->set_output(i, c->input(i));
      return absl::OkStatus();
    })
    .Doc("Gradient of TfDeblur>ModulatedDeformConv2D with respect to all five inputs "
         "(dbias is empty when bias is).");

#undef TFDEBLUR_DCN_ATTRS

}  // namespace tfdeblur
}  // namespace tensorflow
