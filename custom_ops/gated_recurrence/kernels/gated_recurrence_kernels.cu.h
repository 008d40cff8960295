// Raw-pointer CUDA kernels of the gated spatial recurrence.
//
// Shared by the TensorFlow op (gated_recurrence_kernels.cu.cc) and by the
// TensorFlow-free test library (cuda_standalone/), so nothing here includes
// TensorFlow. One thread per (line, channel): consecutive threads handle
// consecutive channels (and, for vertical scans, consecutive pixels), so every
// step of the serial scan is a coalesced access. Arithmetic is in float for
// half/bfloat16/float and in double for double.
#ifndef TFDEBLUR_GATED_RECURRENCE_KERNELS_CU_H_
#define TFDEBLUR_GATED_RECURRENCE_KERNELS_CU_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace tfdeblur_cuda {

template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

// direction: 0 left_to_right, 1 right_to_left, 2 top_to_bottom, 3 bottom_to_top.
struct ScanArgs {
  int64_t n, h, w, c;
  int slots;      // gate / y channels = slots * c
  int slot;       // which slot this launch handles
  int direction;  // scan direction of that slot
};

// Element offsets of step s on line `line` for channel ch; returns false when
// the thread is out of range. Lines are rows (horizontal) or columns (vertical).
struct LineIndex {
  int64_t base_x, base_g, stride_x, stride_g, steps;
};

__device__ __forceinline__ bool MakeLine(const ScanArgs& a, int64_t tid, LineIndex* li) {
  const bool horizontal = a.direction < 2;
  const int64_t lines = horizontal ? a.n * a.h : a.n * a.w;
  if (tid >= lines * a.c) return false;
  const int64_t ch = tid % a.c, line = tid / a.c;
  const int64_t G = a.slots * a.c;
  int64_t pixel0;
  if (horizontal) {
    pixel0 = line * a.w;  // (n*h + r) * w
    li->stride_x = a.c;
    li->stride_g = G;
    li->steps = a.w;
  } else {
    const int64_t n = line / a.w, col = line % a.w;
    pixel0 = n * a.h * a.w + col;
    li->stride_x = a.w * a.c;
    li->stride_g = a.w * G;
    li->steps = a.h;
  }
  li->base_x = pixel0 * a.c + ch;
  li->base_g = pixel0 * G + a.slot * a.c + ch;
  return true;
}

template <typename T>
__global__ void GatedRecurrenceForwardKernel(ScanArgs a, const T* __restrict__ x,
                                             const T* __restrict__ g, T* __restrict__ y) {
  using Acc = typename AccType<T>::type;
  LineIndex li;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (!MakeLine(a, tid, &li)) return;
  const bool rev = a.direction == 1 || a.direction == 3;
  Acc h = Acc(0);
  for (int64_t s = 0; s < li.steps; ++s) {
    const int64_t t = rev ? li.steps - 1 - s : s;
    const Acc xv = static_cast<Acc>(x[li.base_x + t * li.stride_x]);
    const Acc gv = static_cast<Acc>(g[li.base_g + t * li.stride_g]);
    // h[0] = (1 - g[0]) x[0]: no g[0] * h[-1] term, so an infinite first gate
    // gives +-inf as on the CPU, not 0 * inf = NaN (docs/ops_nonfinite.md).
    h = s == 0 ? (Acc(1) - gv) * xv : (Acc(1) - gv) * xv + gv * h;
    y[li.base_g + t * li.stride_g] = static_cast<T>(h);
  }
}

// accumulate: add to dx (a previous launch for another direction wrote it).
template <typename T>
__global__ void GatedRecurrenceBackwardKernel(ScanArgs a, bool accumulate,
                                              const T* __restrict__ x, const T* __restrict__ g,
                                              const T* __restrict__ y, const T* __restrict__ dy,
                                              T* __restrict__ dx, T* __restrict__ dg) {
  using Acc = typename AccType<T>::type;
  LineIndex li;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (!MakeLine(a, tid, &li)) return;
  const bool rev = a.direction == 1 || a.direction == 3;
  Acc carry = Acc(0);  // g[t+1] * dh[t+1]
  for (int64_t s = li.steps - 1; s >= 0; --s) {
    const int64_t t = rev ? li.steps - 1 - s : s;
    const int64_t ix = li.base_x + t * li.stride_x, ig = li.base_g + t * li.stride_g;
    const Acc gv = static_cast<Acc>(g[ig]);
    const Acc dh = static_cast<Acc>(dy[ig]) + carry;
    Acc hprev = Acc(0);
    if (s > 0) hprev = static_cast<Acc>(y[ig + (rev ? li.stride_g : -li.stride_g)]);
    const Acc dxv = (Acc(1) - gv) * dh;
    dx[ix] = static_cast<T>(accumulate ? static_cast<Acc>(dx[ix]) + dxv : dxv);
    dg[ig] = static_cast<T>(dh * (hprev - static_cast<Acc>(x[ix])));
    carry = gv * dh;
  }
}

inline int64_t NumThreads(const ScanArgs& a) {
  return (a.direction < 2 ? a.n * a.h : a.n * a.w) * a.c;
}

constexpr int kThreadsPerBlock = 256;

// Runs the slots' directions one after another on `stream`.
template <typename T>
cudaError_t LaunchGatedRecurrenceForward(int64_t n, int64_t h, int64_t w, int64_t c,
                                         int slots, const int* directions, const T* x,
                                         const T* g, T* y, cudaStream_t stream) {
  for (int k = 0; k < slots; ++k) {
    ScanArgs a{n, h, w, c, slots, k, directions[k]};
    const int64_t threads = NumThreads(a);
    if (threads == 0) continue;
    const int64_t blocks = (threads + kThreadsPerBlock - 1) / kThreadsPerBlock;
    GatedRecurrenceForwardKernel<T><<<blocks, kThreadsPerBlock, 0, stream>>>(a, x, g, y);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

// dx is written by the first slot's launch and accumulated by the others; the
// launches are ordered on one stream, so no atomics and deterministic results.
template <typename T>
cudaError_t LaunchGatedRecurrenceBackward(int64_t n, int64_t h, int64_t w, int64_t c,
                                          int slots, const int* directions, const T* x,
                                          const T* g, const T* y, const T* dy, T* dx, T* dg,
                                          cudaStream_t stream) {
  for (int k = 0; k < slots; ++k) {
    ScanArgs a{n, h, w, c, slots, k, directions[k]};
    const int64_t threads = NumThreads(a);
    if (threads == 0) continue;
    const int64_t blocks = (threads + kThreadsPerBlock - 1) / kThreadsPerBlock;
    GatedRecurrenceBackwardKernel<T>
        <<<blocks, kThreadsPerBlock, 0, stream>>>(a, k > 0, x, g, y, dy, dx, dg);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace tfdeblur_cuda

#endif  // TFDEBLUR_GATED_RECURRENCE_KERNELS_CU_H_
