// OpKernels of the modulated deformable convolution (DCNv2) and its gradient:
// they validate the inputs against the attributes (deform_conv_shape.h, the
// rules the shape function uses too), allocate the outputs and dispatch to
// the CPU functor (deform_conv_cpu.cc) or the CUDA one
// (deform_conv_kernels.cu.cc).
#define EIGEN_USE_THREADS

#include <algorithm>
#include <cstdlib>
#include <string>

#include "common/kernels/op_kernel_common.h"
#include "deform_conv/kernels/deform_conv_cpu.h"
#include "deform_conv/kernels/deform_conv_kernels.h"
#include "deform_conv/kernels/deform_conv_shape.h"

namespace tensorflow {
namespace tfdeblur {

namespace {

constexpr const char* kOp = kDeformConvOp;

// Scratch limits of the functors (0 = their defaults). Testing knobs: small
// limits make small test shapes run through many tiles, ranges and chunks
// (the paths large images take).
struct DeformConvTuning {
  int64_t tile_elements = 0;  // TFDEBLUR_DCN_TILE_ELEMENTS
  int64_t scratch_bytes = 0;  // TFDEBLUR_DCN_SCRATCH_BYTES
  int64_t ranges = 0;         // TFDEBLUR_DCN_RANGES (at most 1024)
};

int64_t EnvInt(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long long parsed = std::strtoll(v, &end, 10);
  return (end != nullptr && *end == '\0' && parsed > 0) ? static_cast<int64_t>(parsed) : 0;
}

// Read when a kernel is constructed, not on every call: a kernel keeps the
// limits it was made with (TensorFlow reuses kernels across calls).
DeformConvTuning TuningFromEnv() {
  DeformConvTuning t;
  t.tile_elements = EnvInt("TFDEBLUR_DCN_TILE_ELEMENTS");
  t.scratch_bytes = EnvInt("TFDEBLUR_DCN_SCRATCH_BYTES");
  t.ranges = std::min<int64_t>(EnvInt("TFDEBLUR_DCN_RANGES"), 1024);
  return t;
}

absl::Status CheckRank(const Tensor& t, int rank, const char* name, const char* layout) {
  if (t.dims() != rank) {
    return errors::InvalidArgument(kOp, name, " must be a rank-", rank, " ", layout,
                                   " tensor, got shape ", t.shape().DebugString());
  }
  return absl::OkStatus();
}

// Checks the inputs against each other and the attributes; fills `g`.
absl::Status Validate(const DeformConvAttrs& a, const DeformConvTuning& tuning, const Tensor& x,
                      const Tensor& offset, const Tensor& mask, const Tensor& kernel,
                      const Tensor& bias, DeformConvGeometry* g) {
  TF_RETURN_IF_ERROR(CheckRank(x, 4, "x", "[N, H, W, Cin]"));
  TF_RETURN_IF_ERROR(CheckRank(offset, 4, "offset", "[N, Ho, Wo, 2*G*KH*KW]"));
  TF_RETURN_IF_ERROR(CheckRank(mask, 4, "mask", "[N, Ho, Wo, G*KH*KW]"));
  TF_RETURN_IF_ERROR(CheckRank(kernel, 4, "kernel", "[KH, KW, Cin/groups, Cout]"));
  TF_RETURN_IF_ERROR(CheckRank(bias, 1, "bias", "[Cout] or [0]"));
  g->n = x.dim_size(0);
  g->h = x.dim_size(1);
  g->w = x.dim_size(2);
  g->cin = x.dim_size(3);
  g->kh = static_cast<int>(kernel.dim_size(0));
  g->kw = static_cast<int>(kernel.dim_size(1));
  g->cout = kernel.dim_size(3);
  g->groups = static_cast<int>(a.groups);
  g->dgroups = static_cast<int>(a.dgroups);
  if (kernel.NumElements() == 0) {
    return errors::InvalidArgument(kOp, "kernel must not be empty, got shape ",
                                   kernel.shape().DebugString());
  }
  if (g->cin < 1) return errors::InvalidArgument(kOp, "x must have at least one channel");
  if (g->cin % a.groups != 0) {
    return errors::InvalidArgument(kOp, "groups (", a.groups,
                                   ") must divide the input channels of x (", g->cin, ")");
  }
  if (g->cin % a.dgroups != 0) {
    return errors::InvalidArgument(kOp, "deformable_groups (", a.dgroups,
                                   ") must divide the input channels of x (", g->cin, ")");
  }
  if (kernel.dim_size(2) != g->cin / a.groups) {
    return errors::InvalidArgument(kOp, "kernel must have shape [KH, KW, Cin/groups, Cout] "
                                   "with Cin/groups = ", g->cin / a.groups, ", got ",
                                   kernel.shape().DebugString());
  }
  if (g->cout % a.groups != 0) {
    return errors::InvalidArgument(kOp, "groups (", a.groups,
                                   ") must divide the output channels of kernel (", g->cout,
                                   ")");
  }
  if (bias.dim_size(0) != 0 && bias.dim_size(0) != g->cout) {
    return errors::InvalidArgument(kOp, "bias must have shape [", g->cout,
                                   "] (Cout) or [0] (no bias), got ",
                                   bias.shape().DebugString());
  }
  g->has_bias = bias.dim_size(0) != 0;
  g->tile_elements = tuning.tile_elements;
  g->scratch_bytes = tuning.scratch_bytes;
  g->ranges = tuning.ranges;
  g->sh = a.strides[0];
  g->sw = a.strides[1];
  g->dh = a.dilations[0];
  g->dw = a.dilations[1];
  int64_t pad_top = 0, pad_left = 0;
  TF_RETURN_IF_ERROR(DeformConvOutputSize(a, 0, g->h, g->kh, "height", &g->ho, &pad_top));
  TF_RETURN_IF_ERROR(DeformConvOutputSize(a, 1, g->w, g->kw, "width", &g->wo, &pad_left));
  g->pad_top = static_cast<int>(pad_top);
  g->pad_left = static_cast<int>(pad_left);
  const int64_t taps = g->dgroups * g->taps();
  const TensorShape want_offset({g->n, g->ho, g->wo, 2 * taps});
  const TensorShape want_mask({g->n, g->ho, g->wo, taps});
  if (offset.shape() != want_offset) {
    return errors::InvalidArgument(kOp, "offset must have shape ", want_offset.DebugString(),
                                   " ([N, Ho, Wo, 2 * deformable_groups * KH * KW]), got ",
                                   offset.shape().DebugString());
  }
  if (mask.shape() != want_mask) {
    return errors::InvalidArgument(kOp, "mask must have shape ", want_mask.DebugString(),
                                   " ([N, Ho, Wo, deformable_groups * KH * KW]), got ",
                                   mask.shape().DebugString());
  }
  return absl::OkStatus();
}

// What the forward and the gradient kernel share: the attributes and scratch
// limits, read once when TensorFlow constructs the kernel, and the checks of
// the five inputs they both take (x, offset, mask, kernel, bias).
class DeformConvKernelBase : public OpKernel {
 public:
  explicit DeformConvKernelBase(OpKernelConstruction* ctx)
      : OpKernel(ctx), tuning_(TuningFromEnv()) {
    OP_REQUIRES_OK(ctx, ReadDeformConvAttrs(ctx, &attrs_));
  }

 protected:
  absl::Status ValidateInputs(OpKernelContext* ctx, DeformConvGeometry* g) const {
    return Validate(attrs_, tuning_, ctx->input(0), ctx->input(1), ctx->input(2),
                    ctx->input(3), ctx->input(4), g);
  }

 private:
  DeformConvAttrs attrs_;
  const DeformConvTuning tuning_;
};

}  // namespace

template <typename Device, typename T>
class ModulatedDeformConv2DOp : public DeformConvKernelBase {
 public:
  using DeformConvKernelBase::DeformConvKernelBase;

  void Compute(OpKernelContext* ctx) override {
    DeformConvGeometry g;
    OP_REQUIRES_OK(ctx, ValidateInputs(ctx, &g));
    const Tensor& bias = ctx->input(4);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(0, TensorShape({g.n, g.ho, g.wo, g.cout}), &y));
    if (y->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, ModulatedDeformConvForward<Device, T>()(
                            ctx, g, ctx->input(0).flat<T>().data(),
                            ctx->input(1).flat<T>().data(), ctx->input(2).flat<T>().data(),
                            ctx->input(3).flat<T>().data(),
                            g.has_bias ? bias.flat<T>().data() : nullptr, y->flat<T>().data()));
  }
};

template <typename Device, typename T>
class ModulatedDeformConv2DGradOp : public DeformConvKernelBase {
 public:
  using DeformConvKernelBase::DeformConvKernelBase;

  void Compute(OpKernelContext* ctx) override {
    DeformConvGeometry g;
    OP_REQUIRES_OK(ctx, ValidateInputs(ctx, &g));
    const Tensor& dy = ctx->input(5);
    const TensorShape y_shape({g.n, g.ho, g.wo, g.cout});
    OP_REQUIRES(ctx, dy.shape() == y_shape,
                errors::InvalidArgument(kOp, "dy must have the output's shape ",
                                        y_shape.DebugString(), ", got ",
                                        dy.shape().DebugString()));
    // The gradient of input i has input i's shape (dbias is [0] without a bias).
    Tensor* grads[5];
    for (int i = 0; i < 5; ++i) {
      OP_REQUIRES_OK(ctx, ctx->allocate_output(i, ctx->input(i).shape(), &grads[i]));
    }
    // Called also for batch 0: the functor then writes zero dkernel and dbias.
    OP_REQUIRES_OK(ctx, ModulatedDeformConvBackward<Device, T>()(
                            ctx, g, ctx->input(0).flat<T>().data(),
                            ctx->input(1).flat<T>().data(), ctx->input(2).flat<T>().data(),
                            ctx->input(3).flat<T>().data(), dy.flat<T>().data(),
                            grads[0]->flat<T>().data(), grads[1]->flat<T>().data(),
                            grads[2]->flat<T>().data(), grads[3]->flat<T>().data(),
                            g.has_bias ? grads[4]->flat<T>().data() : nullptr));
  }
};

#define REGISTER_CPU(T)                                                                  \
  TFDEBLUR_REGISTER_CPU_OP_AND_GRAD("TfDeblur>ModulatedDeformConv2D", T,                   \
                                    ModulatedDeformConv2DOp, ModulatedDeformConv2DGradOp);
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

#if GOOGLE_CUDA
#define REGISTER_GPU(T)                                                                  \
  TFDEBLUR_REGISTER_GPU_OP_AND_GRAD("TfDeblur>ModulatedDeformConv2D", T,                   \
                                    ModulatedDeformConv2DOp, ModulatedDeformConv2DGradOp,  \
                                    ModulatedDeformConvForward, ModulatedDeformConvBackward);
TFDEBLUR_CALL_GPU_TYPES(REGISTER_GPU)
#undef REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace tfdeblur
}  // namespace tensorflow
