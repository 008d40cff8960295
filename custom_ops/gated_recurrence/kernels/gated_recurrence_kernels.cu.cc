// CUDA specialisation of the gated recurrence functors: thin wrappers that
// hand TensorFlow's stream to the raw kernels in gated_recurrence_kernels.cu.h.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "gated_recurrence/kernels/gated_recurrence_kernels.h"
#include "gated_recurrence/kernels/gated_recurrence_kernels.cu.h"

#include "tensorflow/core/framework/register_types.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tensorflow {
namespace tfdeblur {

using GPUDevice = Eigen::GpuDevice;

namespace {
absl::Status ToStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return errors::Internal("GatedRecurrence: ", what, " CUDA launch failed: ",
                          cudaGetErrorString(err));
}
}  // namespace

template <typename T>
struct GatedRecurrenceForward<GPUDevice, T> {
  absl::Status operator()(const GPUDevice& d, const RecurrenceGeometry& g, const T* x,
                          const T* gate, T* y) {
    return ToStatus(tfdeblur_cuda::LaunchGatedRecurrenceForward<T>(
                        g.n, g.h, g.w, g.c, static_cast<int>(g.slots()), g.directions.data(),
                        x, gate, y, d.stream()),
                    "forward");
  }
};

template <typename T>
struct GatedRecurrenceBackward<GPUDevice, T> {
  absl::Status operator()(const GPUDevice& d, const RecurrenceGeometry& g, const T* x,
                          const T* gate, const T* y, const T* dy, T* dx, T* dgate) {
    return ToStatus(tfdeblur_cuda::LaunchGatedRecurrenceBackward<T>(
                        g.n, g.h, g.w, g.c, static_cast<int>(g.slots()), g.directions.data(),
                        x, gate, y, dy, dx, dgate, d.stream()),
                    "backward");
  }
};

template struct GatedRecurrenceForward<GPUDevice, float>;
template struct GatedRecurrenceForward<GPUDevice, Eigen::half>;
template struct GatedRecurrenceForward<GPUDevice, Eigen::bfloat16>;
template struct GatedRecurrenceBackward<GPUDevice, float>;
template struct GatedRecurrenceBackward<GPUDevice, Eigen::half>;
template struct GatedRecurrenceBackward<GPUDevice, Eigen::bfloat16>;

}  // namespace tfdeblur
}  // namespace tensorflow

#endif  // GOOGLE_CUDA
