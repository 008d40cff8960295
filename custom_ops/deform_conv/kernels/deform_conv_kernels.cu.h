// Raw-pointer CUDA kernels of the modulated deformable convolution (DCNv2).
//
// Shared by the TensorFlow op (deform_conv_kernels.cu.cc) and by the
// TensorFlow-free test library (cuda_standalone/), so nothing here includes
// TensorFlow. Same structure as the CPU kernels: output pixels are processed
// in chunks; a chunk is deformable-im2col'ed into a float column buffer
// [chunk, KH*KW*Cin] (weight-group-major, see DeformConvGeometry::col_index)
// and multiplied with the kernel by a shared-memory tiled GEMM. All
// arithmetic is in float (half / bfloat16 inputs are read and written in
// their own type).
//
// Backward, per chunk: dcol = dy W^T (GEMM into the column buffer); one warp
// per sample (pixel, offset group, tap) reduces the mask and offset
// gradients over the group's channels and adds the input gradient into a
// float copy of dx with atomicAdd (so the GPU input gradient is NOT bitwise
// deterministic: float additions land in varying order); then the column
// buffer is rebuilt and dW += col^T dy, db += sum dy accumulate in float.
// Scratch: column buffer (chunk * KH*KW*Cin floats, chunk chosen by the
// caller) + float dx (N*H*W*Cin) + float dW + float db.
#ifndef TFDEBLUR_DEFORM_CONV_KERNELS_CU_H_
#define TFDEBLUR_DEFORM_CONV_KERNELS_CU_H_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "deform_conv/kernels/deform_conv_geometry.h"

namespace tfdeblur_dcn {

constexpr int kThreads = 256;
constexpr int kGemmTile = 64;   // output tile of the GEMM kernel (kGemmTile x kGemmTile)
constexpr int kGemmDepth = 16;  // reduction slice held in shared memory

// Default column buffer budget per chunk on the GPU.
constexpr int64_t kCudaScratchBytes = int64_t{256} << 20;

template <typename T>
__device__ __forceinline__ float ToFloat(T v) {
  return static_cast<float>(v);
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v) {
  return static_cast<T>(v);
}

inline int64_t Blocks(int64_t threads) { return (threads + kThreads - 1) / kThreads; }

// Pixels per chunk for a column-buffer budget of `bytes` (0: default).
inline int64_t ChunkPixels(const DeformConvGeometry& g, int64_t bytes) {
  const int64_t budget = bytes > 0 ? bytes : kCudaScratchBytes;
  const int64_t per_pixel = g.col_width() * static_cast<int64_t>(sizeof(float));
  return std::max<int64_t>(1, std::min(g.pixels(), budget / std::max<int64_t>(1, per_pixel)));
}

// Sample (pixel p, offset group dg, tap k) of the chunk: bilinear corners and mask.
template <typename T>
__device__ __forceinline__ bool LocateSample(const DeformConvGeometry& g, const T* offset,
                                             const T* mask, int64_t p, int64_t dg, int64_t k,
                                             Bilinear<float>* b, float* m) {
  const int64_t hw = g.ho * g.wo;
  const int64_t n = p / hw, i = (p - n * hw) / g.wo, j = p - n * hw - i * g.wo;
  const int64_t slot = dg * g.taps() + k;
  const T* o = offset + p * 2 * g.dgroups * g.taps() + 2 * slot;
  const int64_t ky = k / g.kw, kx = k - ky * g.kw;
  const float py = static_cast<float>(i * g.sh - g.pad_top + ky * g.dh) + ToFloat(o[0]);
  const float px = static_cast<float>(j * g.sw - g.pad_left + kx * g.dw) + ToFloat(o[1]);
  *m = ToFloat(mask[p * g.dgroups * g.taps() + slot]);
  return SetupBilinear<float>(py, px, g.h, g.w, b);
}

// col[chunk pixel, tap, channel] for pixels [p0, p0 + rows): one thread per element.
template <typename T>
__global__ void DeformIm2ColKernel(DeformConvGeometry g, int64_t p0, int64_t rows,
                                   const T* __restrict__ x, const T* __restrict__ offset,
                                   const T* __restrict__ mask, float* __restrict__ col) {
  const int64_t total = rows * g.taps() * g.cin;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = e % g.cin;
    const int64_t k = (e / g.cin) % g.taps();
    const int64_t pl = e / (g.cin * g.taps());
    const int64_t p = p0 + pl;
    const int64_t dg = c / g.cdg();
    Bilinear<float> b;
    float m;
    float v = 0.f;
    if (LocateSample(g, offset, mask, p, dg, k, &b, &m)) {
      const int64_t n = p / (g.ho * g.wo);
      const T* xn = x + n * g.h * g.w * g.cin + c;
      // (m * weight) * value per corner, as on the CPU: the same result for
      // an infinite mask too (docs/ops_nonfinite.md).
      for (int q = 0; q < 4; ++q) {
        if (b.inside[q]) v += (m * b.weight[q]) * ToFloat(xn[b.offset[q] * g.cin]);
      }
    }
    col[g.col_index(rows, pl, k, c)] = v;
  }
}

// C(i, j) (+)= sum_k A(i, k) B(k, j) (+ bias[j]) with arbitrary strides, float
// accumulation. Block: kGemmTile x kGemmTile outputs, 256 threads, 4 x 4 each.
template <typename TA, typename TB, typename TC>
__global__ void GemmKernel(int64_t M, int64_t N, int64_t K, const TA* __restrict__ A,
                           int64_t sam, int64_t sak, const TB* __restrict__ B, int64_t sbk,
                           int64_t sbn, TC* C, int64_t scm, int64_t scn,
                           const TB* __restrict__ bias, bool accumulate) {
  __shared__ float As[kGemmDepth][kGemmTile + 1];
  __shared__ float Bs[kGemmDepth][kGemmTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kGemmTile;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kGemmTile;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kGemmDepth) {
    for (int e = threadIdx.x; e < kGemmDepth * kGemmTile; e += blockDim.x) {
      // Threads with consecutive e read consecutive rows (A) / columns (B).
      const int kk = e / kGemmTile, rr = e % kGemmTile;
      const int64_t gk = k0 + kk, gm = m0 + rr, gn = n0 + rr;
      As[kk][rr] = (gm < M && gk < K) ? ToFloat(A[gm * sam + gk * sak]) : 0.f;
      Bs[kk][rr] = (gn < N && gk < K) ? ToFloat(B[gk * sbk + gn * sbn]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kGemmDepth; ++kk) {
      float a[4], bv[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        a[u] = As[kk][ty * 4 + u];
        bv[u] = Bs[kk][tx * 4 + u];
      }
#pragma unroll
      for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] += a[u] * bv[v];
    }
    __syncthreads();
  }
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    const int64_t gm = m0 + ty * 4 + u;
    if (gm >= M) continue;
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const int64_t gn = n0 + tx * 4 + v;
      if (gn >= N) continue;
      float r = acc[u][v];
      if (bias != nullptr) r += ToFloat(bias[gn]);
      TC* out = C + gm * scm + gn * scn;
      *out = accumulate ? FromFloat<TC>(ToFloat(*out) + r) : FromFloat<TC>(r);
    }
  }
}

template <typename TA, typename TB, typename TC>
cudaError_t Gemm(int64_t M, int64_t N, int64_t K, const TA* A, int64_t sam, int64_t sak,
                 const TB* B, int64_t sbk, int64_t sbn, TC* C, int64_t scm, int64_t scn,
                 const TB* bias, bool accumulate, cudaStream_t stream) {
  if (M == 0 || N == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((M + kGemmTile - 1) / kGemmTile),
                  static_cast<unsigned>((N + kGemmTile - 1) / kGemmTile));
  GemmKernel<TA, TB, TC><<<grid, kThreads, 0, stream>>>(M, N, K, A, sam, sak, B, sbk, sbn, C,
                                                        scm, scn, bias, accumulate);
  return cudaGetLastError();
}

// One warp per sample (chunk pixel, offset group, tap): mask and offset
// gradients (warp reductions over the group's channels) and the input
// gradient (atomicAdd into the float dx).
template <typename T>
__global__ void SampleBackwardKernel(DeformConvGeometry g, int64_t p0, int64_t rows,
                                     const T* __restrict__ x, const T* __restrict__ offset,
                                     const T* __restrict__ mask, const float* __restrict__ dcol,
                                     float* __restrict__ dx, T* __restrict__ doffset,
                                     T* __restrict__ dmask) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const int64_t total = rows * g.dgroups * g.taps();
  for (int64_t s = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
       s < total; s += warps) {
    const int64_t k = s % g.taps();
    const int64_t dg = (s / g.taps()) % g.dgroups;
    const int64_t pl = s / (g.taps() * g.dgroups);
    const int64_t p = p0 + pl;
    const int64_t slot = dg * g.taps() + k;
    Bilinear<float> b;
    float m;
    float am = 0.f, ay = 0.f, ax = 0.f;
    if (LocateSample(g, offset, mask, p, dg, k, &b, &m)) {
      const int64_t n = p / (g.ho * g.wo);
      const T* xn = x + n * g.h * g.w * g.cin;
      float* dxn = dx + n * g.h * g.w * g.cin;
      for (int64_t c = dg * g.cdg() + lane; c < (dg + 1) * g.cdg(); c += 32) {
        const float dc = dcol[g.col_index(rows, pl, k, c)];
        float val = 0.f, vy = 0.f, vx = 0.f;
        for (int q = 0; q < 4; ++q) {
          if (!b.inside[q]) continue;
          const float v = ToFloat(xn[b.offset[q] * g.cin + c]);
          val += b.weight[q] * v;
          vy += b.dwy[q] * v;
          vx += b.dwx[q] * v;
          atomicAdd(dxn + b.offset[q] * g.cin + c, m * b.weight[q] * dc);
        }
        am += dc * val;
        ay += dc * vy;
        ax += dc * vx;
      }
    }
    for (int delta = 16; delta > 0; delta /= 2) {
      am += __shfl_down_sync(0xffffffffu, am, delta);
      ay += __shfl_down_sync(0xffffffffu, ay, delta);
      ax += __shfl_down_sync(0xffffffffu, ax, delta);
    }
    if (lane == 0) {
      dmask[p * g.dgroups * g.taps() + slot] = FromFloat<T>(am);
      T* doff = doffset + p * 2 * g.dgroups * g.taps() + 2 * slot;
      doff[0] = FromFloat<T>(m * ay);
      doff[1] = FromFloat<T>(m * ax);
    }
  }
}

// db[o] += sum over the chunk's pixels of dy[p, o]: blocks (pixel slice, channel).
template <typename T>
__global__ void BiasGradKernel(int64_t rows, int64_t cout, const T* __restrict__ dy,
                               float* __restrict__ db) {
  __shared__ float partial[kThreads];
  for (int64_t o = blockIdx.y; o < cout; o += gridDim.y) {
    float s = 0.f;
    for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < rows;
         p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      s += ToFloat(dy[p * cout + o]);
    }
    partial[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
      if (threadIdx.x < w) partial[threadIdx.x] += partial[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(db + o, partial[0]);
    __syncthreads();
  }
}

template <typename T>
__global__ void ConvertKernel(int64_t count, const float* __restrict__ in, T* __restrict__ out) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[e] = FromFloat<T>(in[e]);
  }
}

inline unsigned GridFor(int64_t threads) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(Blocks(threads), 65535)));
}

// Bytes of scratch the forward pass needs for chunks of `chunk` pixels.
inline int64_t ForwardScratchBytes(const DeformConvGeometry& g, int64_t chunk) {
  return chunk * g.col_width() * static_cast<int64_t>(sizeof(float));
}

// Bytes of scratch the backward pass needs: column buffer, float dx, dW, db.
inline int64_t BackwardScratchBytes(const DeformConvGeometry& g, int64_t chunk) {
  return (chunk * g.col_width() + g.n * g.h * g.w * g.cin + g.taps() * g.cg() * g.cout +
          g.cout) * static_cast<int64_t>(sizeof(float));
}

// y = DCNv2(x, offset, mask, kernel) + bias (bias may be null). `scratch`
// holds ForwardScratchBytes(g, chunk) bytes.
template <typename T>
cudaError_t LaunchDeformConvForward(const DeformConvGeometry& g, const T* x, const T* offset,
                                    const T* mask, const T* kernel, const T* bias, T* y,
                                    float* scratch, int64_t chunk, cudaStream_t stream) {
  const int64_t P = g.pixels(), kcg = g.taps() * g.cg(), cog = g.cog();
  for (int64_t p0 = 0; p0 < P; p0 += chunk) {
    const int64_t rows = std::min(chunk, P - p0);
    DeformIm2ColKernel<T><<<GridFor(rows * g.taps() * g.cin), kThreads, 0, stream>>>(
        g, p0, rows, x, offset, mask, scratch);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      err = Gemm<float, T, T>(rows, cog, kcg, scratch + gi * rows * kcg, kcg, 1,
                              kernel + gi * cog, g.cout, 1, y + p0 * g.cout + gi * cog, g.cout,
                              1, bias != nullptr ? bias + gi * cog : nullptr, false, stream);
      if (err != cudaSuccess) return err;
    }
  }
  return cudaSuccess;
}

// Gradients of every input; dbias may be null (no bias). `scratch` holds
// BackwardScratchBytes(g, chunk) bytes.
template <typename T>
cudaError_t LaunchDeformConvBackward(const DeformConvGeometry& g, const T* x, const T* offset,
                                     const T* mask, const T* kernel, const T* dy, T* dx,
                                     T* doffset, T* dmask, T* dkernel, T* dbias, float* scratch,
                                     int64_t chunk, cudaStream_t stream) {
  const int64_t P = g.pixels(), kcg = g.taps() * g.cg(), cog = g.cog();
  const int64_t x_size = g.n * g.h * g.w * g.cin, w_size = kcg * g.cout;
  float* col = scratch;
  float* dx_acc = col + chunk * g.col_width();
  float* dw_acc = dx_acc + x_size;
  float* db_acc = dw_acc + w_size;
  cudaError_t err = cudaMemsetAsync(dx_acc, 0, (x_size + w_size + g.cout) * sizeof(float),
                                    stream);
  if (err != cudaSuccess) return err;
  for (int64_t p0 = 0; p0 < P; p0 += chunk) {
    const int64_t rows = std::min(chunk, P - p0);
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      // dcol_g [rows, kcg] = dy_g [rows, cog] * W_g^T
      err = Gemm<T, T, float>(rows, kcg, cog, dy + p0 * g.cout + gi * cog, g.cout, 1,
                              kernel + gi * cog, 1, g.cout, col + gi * rows * kcg, kcg, 1,
                              nullptr, false, stream);
      if (err != cudaSuccess) return err;
    }
    const int64_t samples = rows * g.dgroups * g.taps();
    SampleBackwardKernel<T><<<GridFor(samples * 32), kThreads, 0, stream>>>(
        g, p0, rows, x, offset, mask, col, dx_acc, doffset, dmask);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    DeformIm2ColKernel<T><<<GridFor(rows * g.taps() * g.cin), kThreads, 0, stream>>>(
        g, p0, rows, x, offset, mask, col);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      // dW_g [kcg, cog] += col_g^T [kcg, rows] * dy_g [rows, cog]
      err = Gemm<float, T, float>(kcg, cog, rows, col + gi * rows * kcg, 1, kcg,
                                  dy + p0 * g.cout + gi * cog, g.cout, 1, dw_acc + gi * cog,
                                  g.cout, 1, nullptr, true, stream);
      if (err != cudaSuccess) return err;
    }
    if (dbias != nullptr) {
      // One block per output channel: its single atomicAdd per chunk lands in
      // stream order, so the bias gradient stays bitwise deterministic (only
      // dx uses racing atomics).
      const dim3 grid(1u, static_cast<unsigned>(std::min<int64_t>(g.cout, 65535)));
      BiasGradKernel<T><<<grid, kThreads, 0, stream>>>(rows, g.cout, dy + p0 * g.cout, db_acc);
      err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
  }
  ConvertKernel<T><<<GridFor(x_size), kThreads, 0, stream>>>(x_size, dx_acc, dx);
  ConvertKernel<T><<<GridFor(w_size), kThreads, 0, stream>>>(w_size, dw_acc, dkernel);
  if (dbias != nullptr) {
    ConvertKernel<T><<<GridFor(g.cout), kThreads, 0, stream>>>(g.cout, db_acc, dbias);
  }
  return cudaGetLastError();
}

}  // namespace tfdeblur_dcn

#endif  // TFDEBLUR_DEFORM_CONV_KERNELS_CU_H_
