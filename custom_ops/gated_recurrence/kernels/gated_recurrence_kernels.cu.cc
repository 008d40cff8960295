// CUDA specialisation of the gated recurrence functors: thin wrappers that
// hand TensorFlow's stream to the raw kernels in gated_recurrence_kernels.cu.h.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "common/kernels/cuda_status.h"
#include "common/kernels/op_kernel_common.h"
#include "gated_recurrence/kernels/gated_recurrence_kernels.h"
#include "gated_recurrence/kernels/gated_recurrence_kernels.cu.h"

namespace tensorflow {
namespace tfdeblur {

template <typename T>
struct GatedRecurrenceForward<GPUDevice, T> {
  absl::Status operator()(const GPUDevice& d, const RecurrenceGeometry& g, const T* x,
                          const T* gate, T* y) {
    const cudaError_t err = tfdeblur_cuda::LaunchGatedRecurrenceForward<T>(
        g.n, g.h, g.w, g.c, static_cast<int>(g.slots()), g.directions.data(), x, gate, y,
        d.stream());
    return CudaLaunchStatus(err, kGatedRecurrenceOp, "forward");
  }
};

template <typename T>
struct GatedRecurrenceBackward<GPUDevice, T> {
  absl::Status operator()(const GPUDevice& d, const RecurrenceGeometry& g, const T* x,
                          const T* gate, const T* y, const T* dy, T* dx, T* dgate) {
    const cudaError_t err = tfdeblur_cuda::LaunchGatedRecurrenceBackward<T>(
        g.n, g.h, g.w, g.c, static_cast<int>(g.slots()), g.directions.data(), x, gate, y, dy,
        dx, dgate, d.stream());
    return CudaLaunchStatus(err, kGatedRecurrenceOp, "backward");
  }
};

#define INSTANTIATE(T)                                  \
  template struct GatedRecurrenceForward<GPUDevice, T>; \
  template struct GatedRecurrenceBackward<GPUDevice, T>;
TFDEBLUR_CALL_GPU_TYPES(INSTANTIATE)
#undef INSTANTIATE

}  // namespace tfdeblur
}  // namespace tensorflow

#endif  // GOOGLE_CUDA
