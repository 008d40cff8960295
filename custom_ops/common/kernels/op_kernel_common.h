// What every tfdeblur OpKernel file shares: TensorFlow's kernel headers, the
// device aliases, and the registration of an op together with its gradient
// op ("<name>Grad"), which always take the same devices and types.
#ifndef TFDEBLUR_COMMON_OP_KERNEL_COMMON_H_
#define TFDEBLUR_COMMON_OP_KERNEL_COMMON_H_

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tensorflow {
namespace tfdeblur {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;

}  // namespace tfdeblur
}  // namespace tensorflow

// M(T) for each type both ops have GPU kernels for: the registrations in the
// kernels' .cc and the functors' instantiations in the .cu.cc take this list.
#define TFDEBLUR_CALL_GPU_TYPES(M) M(float) M(Eigen::half) M(Eigen::bfloat16)

// Kernels Op<CPUDevice, T> of NAME and GradOp<CPUDevice, T> of NAME "Grad".
#define TFDEBLUR_REGISTER_CPU_OP_AND_GRAD(NAME, T, Op, GradOp)                                \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE_CPU).TypeConstraint<T>("T"),               \
                          Op<CPUDevice, T>);                                                  \
  REGISTER_KERNEL_BUILDER(Name(NAME "Grad").Device(DEVICE_CPU).TypeConstraint<T>("T"),        \
                          GradOp<CPUDevice, T>)

// The same on the GPU, whose functors Forward<GPUDevice, T> and
// Backward<GPUDevice, T> are instantiated in the op's .cu.cc.
#define TFDEBLUR_REGISTER_GPU_OP_AND_GRAD(NAME, T, Op, GradOp, Forward, Backward)             \
  extern template struct Forward<GPUDevice, T>;                                               \
  extern template struct Backward<GPUDevice, T>;                                              \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE_GPU).TypeConstraint<T>("T"),               \
                          Op<GPUDevice, T>);                                                  \
  REGISTER_KERNEL_BUILDER(Name(NAME "Grad").Device(DEVICE_GPU).TypeConstraint<T>("T"),        \
                          GradOp<GPUDevice, T>)

#endif  // TFDEBLUR_COMMON_OP_KERNEL_COMMON_H_
