// CUDA specialisation of the deformable convolution functors: allocate the
// float scratch through TensorFlow and hand its stream to the raw kernels in
// deform_conv_kernels.cu.h.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "common/kernels/cuda_status.h"
#include "common/kernels/op_kernel_common.h"
#include "deform_conv/kernels/deform_conv_kernels.h"
#include "deform_conv/kernels/deform_conv_kernels.cu.h"

namespace tensorflow {
namespace tfdeblur {

namespace {

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
    const cudaError_t err = tfdeblur_dcn::LaunchDeformConvForward<T>(
        g, x, offset, mask, kernel, bias, y, scratch.flat<float>().data(), chunk,
        ctx->eigen_device<GPUDevice>().stream());
    return CudaLaunchStatus(err, "ModulatedDeformConv2D: ", "forward");
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
    const cudaError_t err = tfdeblur_dcn::LaunchDeformConvBackward<T>(
        g, x, offset, mask, kernel, dy, dx, doffset, dmask, dkernel, dbias,
        scratch.flat<float>().data(), chunk, ctx->eigen_device<GPUDevice>().stream());
    return CudaLaunchStatus(err, "ModulatedDeformConv2D: ", "backward");
  }
};

#define INSTANTIATE(T)                                      \
  template struct ModulatedDeformConvForward<GPUDevice, T>; \
  template struct ModulatedDeformConvBackward<GPUDevice, T>;
TFDEBLUR_CALL_GPU_TYPES(INSTANTIATE)
#undef INSTANTIATE

}  // namespace tfdeblur
}  // namespace tensorflow

#endif  // GOOGLE_CUDA
