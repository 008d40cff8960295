// TensorFlow-free entry points to the deformable convolution CUDA kernels,
// for checking them against the CPU path with CuPy or PyTorch on a GPU host.
//
// geometry: 17 int64 values {n, h, w, cin, ho, wo, cout, kh, kw, sh, sw, dh,
// dw, pad_top, pad_left, groups, deformable_groups} (the caller resolves the
// padding mode). dtype: 0 float32, 1 float16. bias / dbias may be null. The
// scratch memory is allocated and freed here (the calls synchronise the
// stream). TFDEBLUR_DCN_SCRATCH_BYTES caps the column buffer per chunk as it
// does in the TensorFlow op. Returns a cudaError_t (0 on success), -1 for a
// bad dtype.
#include <cuda_fp16.h>

#include <cstdlib>

#include "deform_conv/kernels/deform_conv_kernels.cu.h"

namespace {

// Same testing knob as the TensorFlow op: small test shapes then run through
// several chunks (the path large images take), which the default budget
// would never split.
int64_t ScratchBytesFromEnv() {
  const char* v = std::getenv("TFDEBLUR_DCN_SCRATCH_BYTES");
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long long parsed = std::strtoll(v, &end, 10);
  return (end != nullptr && *end == '\0' && parsed > 0) ? static_cast<int64_t>(parsed) : 0;
}

tfdeblur_dcn::DeformConvGeometry MakeGeometry(const int64_t* v, bool has_bias) {
  tfdeblur_dcn::DeformConvGeometry g;
  g.n = v[0];
  g.h = v[1];
  g.w = v[2];
  g.cin = v[3];
  g.ho = v[4];
  g.wo = v[5];
  g.cout = v[6];
  g.kh = static_cast<int>(v[7]);
  g.kw = static_cast<int>(v[8]);
  g.sh = static_cast<int>(v[9]);
  g.sw = static_cast<int>(v[10]);
  g.dh = static_cast<int>(v[11]);
  g.dw = static_cast<int>(v[12]);
  g.pad_top = static_cast<int>(v[13]);
  g.pad_left = static_cast<int>(v[14]);
  g.groups = static_cast<int>(v[15]);
  g.dgroups = static_cast<int>(v[16]);
  g.has_bias = has_bias;
  return g;
}

// Runs launch(scratch) with `bytes` of device scratch, waits for the stream
// and frees the scratch; the launch's error first, then the stream's.
template <typename Launch>
int WithScratch(int64_t bytes, cudaStream_t stream, Launch launch) {
  float* scratch = nullptr;
  cudaError_t err = cudaMalloc(&scratch, bytes + 4);
  if (err != cudaSuccess) return err;
  err = launch(scratch);
  const cudaError_t sync = cudaStreamSynchronize(stream);
  cudaFree(scratch);
  return err != cudaSuccess ? err : sync;
}

template <typename T>
int Forward(const int64_t* geometry, const void* x, const void* offset, const void* mask,
            const void* kernel, const void* bias, void* y, cudaStream_t stream) {
  const auto g = MakeGeometry(geometry, bias != nullptr);
  const int64_t chunk = tfdeblur_dcn::ChunkPixels(g, ScratchBytesFromEnv());
  return WithScratch(tfdeblur_dcn::ForwardScratchBytes(g, chunk), stream, [&](float* scratch) {
    return tfdeblur_dcn::LaunchDeformConvForward<T>(
        g, static_cast<const T*>(x), static_cast<const T*>(offset), static_cast<const T*>(mask),
        static_cast<const T*>(kernel), static_cast<const T*>(bias), static_cast<T*>(y), scratch,
        chunk, stream);
  });
}

template <typename T>
int Backward(const int64_t* geometry, const void* x, const void* offset, const void* mask,
             const void* kernel, const void* dy, void* dx, void* doffset, void* dmask,
             void* dkernel, void* dbias, cudaStream_t stream) {
  const auto g = MakeGeometry(geometry, dbias != nullptr);
  const int64_t chunk = tfdeblur_dcn::ChunkPixels(g, ScratchBytesFromEnv());
  return WithScratch(tfdeblur_dcn::BackwardScratchBytes(g, chunk), stream, [&](float* scratch) {
    return tfdeblur_dcn::LaunchDeformConvBackward<T>(
        g, static_cast<const T*>(x), static_cast<const T*>(offset), static_cast<const T*>(mask),
        static_cast<const T*>(kernel), static_cast<const T*>(dy), static_cast<T*>(dx),
        static_cast<T*>(doffset), static_cast<T*>(dmask), static_cast<T*>(dkernel),
        static_cast<T*>(dbias), scratch, chunk, stream);
  });
}

}  // namespace

extern "C" {

int tfdeblur_deform_conv_forward(int dtype, const int64_t* geometry, const void* x,
                                 const void* offset, const void* mask, const void* kernel,
                                 const void* bias, void* y, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == 0) return Forward<float>(geometry, x, offset, mask, kernel, bias, y, s);
  if (dtype == 1) return Forward<__half>(geometry, x, offset, mask, kernel, bias, y, s);
  return -1;
}

int tfdeblur_deform_conv_backward(int dtype, const int64_t* geometry, const void* x,
                                  const void* offset, const void* mask, const void* kernel,
                                  const void* dy, void* dx, void* doffset, void* dmask,
                                  void* dkernel, void* dbias, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (dtype == 0)
    return Backward<float>(geometry, x, offset, mask, kernel, dy, dx, doffset, dmask, dkernel,
                           dbias, s);
  if (dtype == 1)
    return Backward<__half>(geometry, x, offset, mask, kernel, dy, dx, doffset, dmask, dkernel,
                            dbias, s);
  return -1;
}

}  // extern "C"
