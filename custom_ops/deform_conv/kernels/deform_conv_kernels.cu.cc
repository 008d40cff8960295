// CUDA specialisation of the deformable convolution functors: allocate the
// float scratch through TensorFlow and hand its stream to the raw kernels in
// deform_conv_kernels.cu.h.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "deform_conv/kernels/deform_conv_kernels.h"
#include "deform_conv/kernels/deform_conv_kernels.cu.h"

#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tensorflow {
namespace tfdeblur {

using GPUDevice = Eigen::GpuDevice;

namespace {

absl::Status ToStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return errors::Internal("ModulatedDeformConv2D: ", what, " CUDA launch failed: ",
                          cudaGetErrorString(err));
}

absl::Status AllocateScratch(OpKernelContext* ctx, int64_t bytes, Tensor* t) {
  const int64_t floats = std::max<int64_t>(1, (bytes + 3) / 4);
  return ctx->allocate_temp(DT_FLOAT, TensorShape({floats}), t);
}

}  // namespace

template <typename T>
struct ModulatedDeformConvForward<GPUDevice, T> {
  absl::Status operator()(OpKernelContext* ctx, const DeformConvGeometry& g, const T* x,
                          const T* offset, const T* mask, const T* kernel, const T* bias,
                          T* y) {
    const int64_t chunk = tfdeblur_dcn::ChunkPixels(g, g.scratch_bytes);
    Tensor scratch;
    TF_RETURN_IF_ERROR(
        AllocateScratch(ctx, tfdeblur_dcn::ForwardScratchBytes(g, chunk), &scratch));
    return ToStatus(tfdeblur_dcn::LaunchDeformConvForward<T>(
                        g, x, offset, mask, kernel, bias, y, scratch.flat<float>().data(),
                        chunk, ctx->eigen_device<GPUDevice>().stream()),
                    "forward");
  }
};

template <typename T>
struct ModulatedDeformConvBackward<GPUDevice, T> {
  absl::Status operator()(OpKernelContext* ctx, const DeformConvGeometry& g, const T* x,
                          const T* offset, const T* mask, const T* kernel, const T* dy, T* dx,
                          T* doffset, T* dmask, T* dkernel, T* dbias) {
    const int64_t chunk = tfdeblur_dcn::ChunkPixels(g, g.scratch_bytes);
    Tensor scratch;
    TF_RETURN_IF_ERROR(
        AllocateScratch(ctx, tfdeblur_dcn::BackwardScratchBytes(g, chunk), &scratch));
    return ToStatus(tfdeblur_dcn::LaunchDeformConvBackward<T>(
                        g, x, offset, mask, kernel, dy, dx, doffset, dmask, dkernel, dbias,
                        scratch.flat<float>().data(), chunk,
                        ctx->eigen_device<GPUDevice>().stream()),
                    "backward");
  }
};

template struct ModulatedDeformConvForward<GPUDevice, float>;
template struct ModulatedDeformConvForward<GPUDevice, Eigen::half>;
template struct ModulatedDeformConvForward<GPUDevice, Eigen::bfloat16>;
template struct ModulatedDeformConvBackward<GPUDevice, float>;
template struct ModulatedDeformConvBackward<GPUDevice, Eigen::half>;
template struct ModulatedDeformConvBackward<GPUDevice, Eigen::bfloat16>;

}  // namespace tfdeblur
}  // namespace tensorflow

#endif  // GOOGLE_CUDA
