// TensorFlow-free entry points to the gated recurrence CUDA kernels, for
// checking them against the CPU path with CuPy or PyTorch on a GPU host
// (tests/gpu/test_cuda_kernels.py). dtype: 0 float32, 1 float16.
#include <cuda_fp16.h>

#include "gated_recurrence/kernels/gated_recurrence_kernels.cu.h"

extern "C" {

int tfdeblur_gated_recurrence_forward(int dtype, int64_t n, int64_t h, int64_t w, int64_t c,
                                      int slots, const int* directions, const void* x,
                                      const void* g, void* y, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == 0)
    return tfdeblur_cuda::LaunchGatedRecurrenceForward<float>(
        n, h, w, c, slots, directions, static_cast<const float*>(x),
        static_cast<const float*>(g), static_cast<float*>(y), s);
  if (dtype == 1)
    return tfdeblur_cuda::LaunchGatedRecurrenceForward<__half>(
        n, h, w, c, slots, directions, static_cast<const __half*>(x),
        static_cast<const __half*>(g), static_cast<__half*>(y), s);
  return -1;
}

int tfdeblur_gated_recurrence_backward(int dtype, int64_t n, int64_t h, int64_t w, int64_t c,
                                       int slots, const int* directions, const void* x,
                                       const void* g, const void* y, const void* dy, void* dx,
                                       void* dg, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == 0)
    return tfdeblur_cuda::LaunchGatedRecurrenceBackward<float>(
        n, h, w, c, slots, directions, static_cast<const float*>(x),
        static_cast<const float*>(g), static_cast<const float*>(y),
        static_cast<const float*>(dy), static_cast<float*>(dx), static_cast<float*>(dg), s);
  if (dtype == 1)
    return tfdeblur_cuda::LaunchGatedRecurrenceBackward<__half>(
        n, h, w, c, slots, directions, static_cast<const __half*>(x),
        static_cast<const __half*>(g), static_cast<const __half*>(y),
        static_cast<const __half*>(dy), static_cast<__half*>(dx), static_cast<__half*>(dg), s);
  return -1;
}

}  // extern "C"
