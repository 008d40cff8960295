// CPU specialisation of the deformable convolution functors (defined, and
// instantiated for float and double, in deform_conv_cpu.cc).
#ifndef TFDEBLUR_DEFORM_CONV_CPU_H_
#define TFDEBLUR_DEFORM_CONV_CPU_H_

#include "deform_conv/kernels/deform_conv_kernels.h"

namespace tensorflow {
namespace tfdeblur {

template <typename T>
struct ModulatedDeformConvForward<Eigen::ThreadPoolDevice, T> {
  absl::Status operator()(OpKernelContext* ctx, const DeformConvGeometry& g, const T* x,
                          const T* offset, const T* mask, const T* kernel, const T* bias,
                          T* y);
};

template <typename T>
struct ModulatedDeformConvBackward<Eigen::ThreadPoolDevice, T> {
  absl::Status operator()(OpKernelContext* ctx, const DeformConvGeometry& g, const T* x,
                          const T* offset, const T* mask, const T* kernel, const T* dy, T* dx,
                          T* doffset, T* dmask, T* dkernel, T* dbias);
};

extern template struct ModulatedDeformConvForward<Eigen::ThreadPoolDevice, float>;
extern template struct ModulatedDeformConvForward<Eigen::ThreadPoolDevice, double>;
extern template struct ModulatedDeformConvBackward<Eigen::ThreadPoolDevice, float>;
extern template struct ModulatedDeformConvBackward<Eigen::ThreadPoolDevice, double>;

}  // namespace tfdeblur
}  // namespace tensorflow

#endif  // TFDEBLUR_DEFORM_CONV_CPU_H_
