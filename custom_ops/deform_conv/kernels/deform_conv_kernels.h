// Device-independent interface of the modulated deformable convolution
// kernels. The CPU specialisation is in deform_conv_kernels.cc, the CUDA one
// in deform_conv_kernels.cu.cc (which wraps the raw-pointer kernels of
// deform_conv_kernels.cu.h, shared with the TensorFlow-free test library).
#ifndef TFDEBLUR_DEFORM_CONV_KERNELS_H_
#define TFDEBLUR_DEFORM_CONV_KERNELS_H_

#include "deform_conv/kernels/deform_conv_geometry.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tensorflow {
namespace tfdeblur {

using tfdeblur_dcn::DeformConvGeometry;

// y = DCNv2(x, offset, mask, kernel) (+ bias when geo.has_bias). The functors
// may allocate scratch memory through ctx.
template <typename Device, typename T>
struct ModulatedDeformConvForward {
  absl::Status operator()(OpKernelContext* ctx, const DeformConvGeometry& geo, const T* x,
                          const T* offset, const T* mask, const T* kernel, const T* bias,
                          T* y);
};

// Gradients of all inputs; dbias is only written when geo.has_bias.
template <typename Device, typename T>
struct ModulatedDeformConvBackward {
  absl::Status operator()(OpKernelContext* ctx, const DeformConvGeometry& geo, const T* x,
                          const T* offset, const T* mask, const T* kernel, const T* dy, T* dx,
                          T* doffset, T* dmask, T* dkernel, T* dbias);
};

}  // namespace tfdeblur
}  // namespace tensorflow

#endif  // TFDEBLUR_DEFORM_CONV_KERNELS_H_
