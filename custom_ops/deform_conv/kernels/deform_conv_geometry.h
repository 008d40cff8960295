// Geometry and bilinear sampling of the modulated deformable convolution,
// shared by the CPU kernels, the CUDA kernels and the TensorFlow-free CUDA
// test library (so it includes nothing from TensorFlow).
//
// Meaning (docs/ops.md section 2), NHWC:
//   y[n,i,j,o] = b[o] + sum_{g,ky,kx,c in g} w[ky,kx,c,o] * m[n,i,j,g,k] * bilinear(x[n,:,:,c], py, px)
//   py = i*sh - pad_top  + ky*dh + offset[n,i,j, 2*(g*K+k)]
//   px = j*sw - pad_left + kx*dw + offset[n,i,j, 2*(g*K+k)+1],   k = ky*KW + kx
#ifndef TFDEBLUR_DEFORM_CONV_GEOMETRY_H_
#define TFDEBLUR_DEFORM_CONV_GEOMETRY_H_

#include <cstdint>

#if defined(__CUDACC__)
#define TFDEBLUR_HD __host__ __device__ __forceinline__
#else
#define TFDEBLUR_HD inline
#endif

namespace tfdeblur_dcn {

struct DeformConvGeometry {
  int64_t n = 0, h = 0, w = 0, cin = 0;  // x
  int64_t ho = 0, wo = 0, cout = 0;      // y
  int kh = 1, kw = 1;
  int sh = 1, sw = 1, dh = 1, dw = 1;
  int pad_top = 0, pad_left = 0;
  int groups = 1;    // weight groups
  int dgroups = 1;   // deformable (offset) groups
  bool has_bias = false;
  // Scratch limits, 0 = the kernels' defaults: column-buffer elements per CPU
  // tile; bytes of queued input gradient (CPU backward) or of column buffer
  // per chunk (CUDA).
  int64_t tile_elements = 0;
  int64_t scratch_bytes = 0;
  int64_t ranges = 0;  // CPU backward: ranges of tiles (default: intra-op threads)

  TFDEBLUR_HD int64_t taps() const { return static_cast<int64_t>(kh) * kw; }
  TFDEBLUR_HD int64_t cg() const { return cin / groups; }     // input channels per weight group
  TFDEBLUR_HD int64_t cog() const { return cout / groups; }   // output channels per weight group
  TFDEBLUR_HD int64_t cdg() const { return cin / dgroups; }   // input channels per offset group
  TFDEBLUR_HD int64_t pixels() const { return n * ho * wo; }  // output pixels
  // Column-buffer row length of one output pixel (all taps, all channels).
  TFDEBLUR_HD int64_t col_width() const { return taps() * cin; }

  // Index of element (pixel p, tap k, channel c) in a column buffer holding
  // `rows` pixels. Weight group gi's block [rows, taps * cg] is contiguous and
  // row-major, so each group's product with the kernel is one plain GEMM.
  TFDEBLUR_HD int64_t col_index(int64_t rows, int64_t p, int64_t k, int64_t c) const {
    const int64_t cgv = cg();
    const int64_t gi = c / cgv;
    return (gi * rows + p) * taps() * cgv + k * cgv + (c - gi * cgv);
  }
};

// The four bilinear corners of a sample at (py, px) in an h x w image. A
// corner outside the image has weight 0 and is never read. `dwy`/`dwx` are
// the derivatives of the corner weights with respect to py / px, so
// d(sample)/dpy = sum_corner dwy * value (zero-padding semantics, matching
// automatic differentiation of the same formula; floor() has zero gradient).
template <typename Acc>
struct Bilinear {
  int64_t offset[4];  // (y * w + x) pixel index of each corner (0 when outside)
  Acc weight[4];
  Acc dwy[4];
  Acc dwx[4];
  bool inside[4];
  bool all_inside;
};

// Returns false when the sample is 0 together with its gradient (py <= -1,
// py >= h, px <= -1 or px >= w; also NaN positions).
template <typename Acc>
TFDEBLUR_HD bool SetupBilinear(Acc py, Acc px, int64_t h, int64_t w, Bilinear<Acc>* b) {
  if (!(py > Acc(-1) && py < static_cast<Acc>(h) && px > Acc(-1) && px < static_cast<Acc>(w))) {
    return false;
  }
  // py > -1, so truncation after adding 1 is floor(py) + 1 without calling floor.
  const int64_t y0 = static_cast<int64_t>(py + Acc(1)) - 1;
  const int64_t x0 = static_cast<int64_t>(px + Acc(1)) - 1;
  const Acc ly = py - static_cast<Acc>(y0), lx = px - static_cast<Acc>(x0);
  const Acc hy = Acc(1) - ly, hx = Acc(1) - lx;
  const int64_t ys[2] = {y0, y0 + 1}, xs[2] = {x0, x0 + 1};
  const Acc wy[2] = {hy, ly}, wx[2] = {hx, lx};
  const Acc sy[2] = {Acc(-1), Acc(1)};
  b->all_inside = true;
  for (int a = 0; a < 2; ++a) {
    for (int c = 0; c < 2; ++c) {
      const int q = 2 * a + c;
      const bool in = ys[a] >= 0 && ys[a] < h && xs[c] >= 0 && xs[c] < w;
      b->inside[q] = in;
      b->all_inside = b->all_inside && in;
      b->offset[q] = in ? ys[a] * w + xs[c] : 0;
      b->weight[q] = in ? wy[a] * wx[c] : Acc(0);
      b->dwy[q] = in ? sy[a] * wx[c] : Acc(0);
      b->dwx[q] = in ? wy[a] * sy[c] : Acc(0);
    }
  }
  return true;
}

}  // namespace tfdeblur_dcn

#endif  // TFDEBLUR_DEFORM_CONV_GEOMETRY_H_
