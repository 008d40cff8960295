// A CUDA launch's error as a TensorFlow status, for the ops' .cu.cc files.
#ifndef TFDEBLUR_COMMON_CUDA_STATUS_H_
#define TFDEBLUR_COMMON_CUDA_STATUS_H_

#if GOOGLE_CUDA
#include <cuda_runtime.h>

#include "tensorflow/core/platform/errors.h"

namespace tensorflow {
namespace tfdeblur {

// `op` is the message prefix ("GatedRecurrence: "), `what` the pass ("forward").
inline absl::Status CudaLaunchStatus(cudaError_t err, const char* op, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return errors::Internal(op, what, " CUDA launch failed: ", cudaGetErrorString(err));
}

}  // namespace tfdeblur
}  // namespace tensorflow

#endif  // GOOGLE_CUDA
#endif  // TFDEBLUR_COMMON_CUDA_STATUS_H_
