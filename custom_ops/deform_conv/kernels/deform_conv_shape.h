// Attributes and output size of the modulated deformable convolution, written
// once for the shape function (ops/deform_conv_ops.cc) and the kernels
// (kernels/deform_conv_kernels.cc). The output size is TensorFlow's own rule
// for windowed ops (GetWindowedOutputSizeVerbose, the one tf.nn.conv2d uses);
// tfdeblur/ops/deform_conv.py (_output_size_and_pad) is its one Python copy,
// and tests/ops/test_deform_conv.py compares the three.
#ifndef TFDEBLUR_DEFORM_CONV_SHAPE_H_
#define TFDEBLUR_DEFORM_CONV_SHAPE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "tensorflow/core/framework/kernel_shape_util.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/util/padding.h"

namespace tensorflow {
namespace tfdeblur {

// Prefix of every error message of the op and its gradient.
inline constexpr char kDeformConvOp[] = "ModulatedDeformConv2D: ";

struct DeformConvAttrs {
  std::vector<int32> strides, dilations, explicit_paddings;
  std::string padding;
  int64_t groups = 1, dgroups = 1;
};

// Reads and checks the attributes. `Ctx` is an InferenceContext (shape
// function) or an OpKernelConstruction (kernel): both have GetAttr.
template <typename Ctx>
absl::Status ReadDeformConvAttrs(Ctx* ctx, DeformConvAttrs* a) {
  TF_RETURN_IF_ERROR(ctx->GetAttr("strides", &a->strides));
  TF_RETURN_IF_ERROR(ctx->GetAttr("dilations", &a->dilations));
  TF_RETURN_IF_ERROR(ctx->GetAttr("padding", &a->padding));
  TF_RETURN_IF_ERROR(ctx->GetAttr("explicit_paddings", &a->explicit_paddings));
  TF_RETURN_IF_ERROR(ctx->GetAttr("groups", &a->groups));
  TF_RETURN_IF_ERROR(ctx->GetAttr("deformable_groups", &a->dgroups));
  if (a->strides.size() != 2 || a->strides[0] < 1 || a->strides[1] < 1) {
    return errors::InvalidArgument(kDeformConvOp, "strides must be 2 positive ints, got ",
                                   a->strides.size(), " values");
  }
  if (a->dilations.size() != 2 || a->dilations[0] < 1 || a->dilations[1] < 1) {
    return errors::InvalidArgument(kDeformConvOp, "dilations must be 2 positive ints, got ",
                                   a->dilations.size(), " values");
  }
  if (a->padding == "EXPLICIT") {
    if (a->explicit_paddings.size() != 4) {
      return errors::InvalidArgument(kDeformConvOp,
                                     "padding EXPLICIT needs explicit_paddings = [top, bottom, "
                                     "left, right], got ",
                                     a->explicit_paddings.size(), " values");
    }
    for (int32 p : a->explicit_paddings) {
      if (p < 0) {
        return errors::InvalidArgument(kDeformConvOp, "explicit_paddings must be >= 0, got ", p);
      }
    }
  } else if (!a->explicit_paddings.empty()) {
    return errors::InvalidArgument(kDeformConvOp,
                                   "explicit_paddings must be empty unless padding is EXPLICIT");
  }
  return absl::OkStatus();
}

// Output length and padding before (top / left) along `axis` (0 rows, 1
// columns) for an input of `size` pixels and a kernel of `k` taps. An empty
// input, or one too small for the dilated kernel, is an InvalidArgument
// naming `side` ("height" / "width").
inline absl::Status DeformConvOutputSize(const DeformConvAttrs& a, int axis, int64_t size,
                                         int64_t k, const char* side, int64_t* out,
                                         int64_t* pad_before) {
  if (size < 1) {
    return errors::InvalidArgument(kDeformConvOp, "x must have a non-empty ", side);
  }
  Padding mode = SAME;
  int64_t before = 0, after = 0;
  if (a.padding == "VALID") {
    mode = VALID;
  } else if (a.padding == "EXPLICIT") {
    mode = EXPLICIT;
    before = a.explicit_paddings[2 * axis];
    after = a.explicit_paddings[2 * axis + 1];
  }
  int64_t len = 0;
  // A negative size is an error there; an empty output (0) is one here.
  const absl::Status status = GetWindowedOutputSizeVerbose(
      size, k, a.dilations[axis], a.strides[axis], mode, &len, &before, &after);
  if (!status.ok() || len < 1) {
    return errors::InvalidArgument(kDeformConvOp, "x's ", side, " (", size,
                                   ") is too small for the kernel with this padding and "
                                   "dilation: the output ", side, " would be empty");
  }
  *out = len;
  *pad_before = before;
  return absl::OkStatus();
}

}  // namespace tfdeblur
}  // namespace tensorflow

#endif  // TFDEBLUR_DEFORM_CONV_SHAPE_H_
