// CPU kernels of the modulated deformable convolution (DCNv2), and the
// OpKernel classes that validate inputs and dispatch to the CPU or CUDA
// functor.
//
// Forward: the output pixels (flattened over batch and rows) are cut into
// tiles of about kTileElements column-buffer elements. A tile is
// deformable-im2col'ed into a thread-local column buffer [tile, KH*KW*Cin] and
// multiplied with the kernel (one Eigen GEMM per weight group), tiles running
// in parallel on TensorFlow's intra-op pool. Scratch memory: one tile buffer
// per concurrently running task, i.e. at most
// (intra-op threads) x kTileElements elements (512 KiB each in float32).
//
// Backward: the pixels are processed in chunks of at most kChunkBytes of
// column gradient (and at least one tile). For a chunk:
//   A. parallel over R = (intra-op threads) fixed ranges of tiles: dcol =
//      dy W^T into the chunk buffer; in the same pass over x, the column
//      buffer of the tile and the mask/offset gradients (each pixel's own, so
//      race-free); then dW_r += col^T dy, db_r += sum dy into range r's own
//      accumulator.
//   B. parallel over (image, channel block): scatter dcol into dx. Blocks
//      own disjoint channels of one image, so no two tasks write the same
//      element and no atomics or per-thread copies of dx are needed.
// dW and db are summed over the ranges in a fixed order at the end. Tiles,
// chunks and ranges depend only on the shapes and the pool size, so results
// are bit-identical run to run. Scratch: the chunk buffer (<= kChunkBytes
// unless a single tile is larger), R tile buffers and R copies of the kernel.
#define EIGEN_USE_THREADS

#include "deform_conv/kernels/deform_conv_kernels.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tensorflow {
namespace tfdeblur {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;
using tfdeblur_dcn::Bilinear;
using tfdeblur_dcn::SetupBilinear;

namespace {

constexpr int64_t kTileElements = int64_t{1} << 17;
constexpr int64_t kMinTilePixels = 16;
constexpr int64_t kChunkBytes = int64_t{64} << 20;

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatrixMap = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

int64_t TilePixels(const DeformConvGeometry& g) {
  const int64_t elements = g.tile_elements > 0 ? g.tile_elements : kTileElements;
  const int64_t min_pixels = g.tile_elements > 0 ? 1 : kMinTilePixels;
  return std::max<int64_t>(min_pixels, elements / std::max<int64_t>(1, g.col_width()));
}

int64_t NumRanges(const CPUDevice& d) { return std::max(1, d.numThreads()); }

// A big cost per unit so that Eigen's ParallelFor gives every unit its own
// task: our units are already coarse (a tile or a whole range of tiles).
Eigen::TensorOpCost CoarseCost(double flops) {
  return Eigen::TensorOpCost(flops, flops, flops * 2);
}

// Sample (pixel p = (n, i, j), offset group dg, tap k): bilinear corners of
// its position and its mask value. False when the sample reads zeros only.
template <typename T>
bool Locate(const DeformConvGeometry& g, const T* offset, const T* mask, int64_t p, int64_t i,
            int64_t j, int64_t dg, int64_t k, Bilinear<T>* b, T* m) {
  const int64_t slot = dg * g.taps() + k;
  const T* o = offset + p * 2 * g.dgroups * g.taps() + 2 * slot;
  const int64_t ky = k / g.kw, kx = k - ky * g.kw;
  const T py = static_cast<T>(i * g.sh - g.pad_top + ky * g.dh) + o[0];
  const T px = static_cast<T>(j * g.sw - g.pad_left + kx * g.dw) + o[1];
  *m = mask[p * g.dgroups * g.taps() + slot];
  return SetupBilinear<T>(py, px, g.h, g.w, b);
}

// Calls fn(c_begin, c_end) for the runs of channels [c0, c1) that lie within
// one weight group (the column buffer is contiguous only within a group).
template <typename Fn>
void ForEachRun(const DeformConvGeometry& g, int64_t c0, int64_t c1, Fn fn) {
  const int64_t cg = g.cg();
  for (int64_t c = c0; c < c1;) {
    const int64_t end = std::min(c1, (c / cg + 1) * cg);
    fn(c, end);
    c = end;
  }
}

// Deformable im2col of pixels [p0, p1) into col ([p1 - p0] rows).
template <typename T>
void Im2Col(const DeformConvGeometry& g, const T* x, const T* offset, const T* mask, int64_t p0,
            int64_t p1, T* col) {
  const int64_t rows = p1 - p0, hw = g.ho * g.wo, C = g.cin, cdg = g.cdg();
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n = p / hw, i = (p - n * hw) / g.wo, j = p - n * hw - i * g.wo;
    const T* xn = x + n * g.h * g.w * C;
    for (int64_t dg = 0; dg < g.dgroups; ++dg) {
      for (int64_t k = 0; k < g.taps(); ++k) {
        Bilinear<T> b;
        T m;
        const bool valid = Locate(g, offset, mask, p, i, j, dg, k, &b, &m);
        ForEachRun(g, dg * cdg, (dg + 1) * cdg, [&](int64_t c0, int64_t c1) {
          T* __restrict__ dst = col + g.col_index(rows, p - p0, k, c0);
          const int64_t len = c1 - c0;
          if (!valid) {
            std::fill(dst, dst + len, T(0));
          } else if (b.all_inside) {
            const T* __restrict__ v0 = xn + b.offset[0] * C + c0;
            const T* __restrict__ v1 = xn + b.offset[1] * C + c0;
            const T* __restrict__ v2 = xn + b.offset[2] * C + c0;
            const T* __restrict__ v3 = xn + b.offset[3] * C + c0;
            const T w0 = m * b.weight[0], w1 = m * b.weight[1], w2 = m * b.weight[2],
                    w3 = m * b.weight[3];
            for (int64_t t = 0; t < len; ++t) {
              dst[t] = w0 * v0[t] + w1 * v1[t] + w2 * v2[t] + w3 * v3[t];
            }
          } else {
            std::fill(dst, dst + len, T(0));
            for (int q = 0; q < 4; ++q) {
              if (!b.inside[q]) continue;
              const T* __restrict__ v = xn + b.offset[q] * C + c0;
              const T wq = m * b.weight[q];
              for (int64_t t = 0; t < len; ++t) dst[t] += wq * v[t];
            }
          }
        });
      }
    }
  }
}

// Backward pass over x for pixels [p0, p1): writes the tile's column buffer
// (for dW) and the mask and offset gradients, reading the column gradient of
// the chunk (dcol, chunk_rows rows starting at pixel chunk0). `zeros` holds at
// least cdg zeros and stands in for corners outside the image.
template <typename T>
void SampleBackward(const DeformConvGeometry& g, const T* x, const T* offset, const T* mask,
                    const T* dcol, int64_t chunk0, int64_t chunk_rows, int64_t p0, int64_t p1,
                    const T* zeros, T* col, T* doffset, T* dmask) {
  const int64_t rows = p1 - p0, hw = g.ho * g.wo, C = g.cin, cdg = g.cdg();
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n = p / hw, i = (p - n * hw) / g.wo, j = p - n * hw - i * g.wo;
    const T* xn = x + n * g.h * g.w * C;
    for (int64_t dg = 0; dg < g.dgroups; ++dg) {
      for (int64_t k = 0; k < g.taps(); ++k) {
        const int64_t slot = dg * g.taps() + k;
        T* dm = dmask + p * g.dgroups * g.taps() + slot;
        T* doff = doffset + p * 2 * g.dgroups * g.taps() + 2 * slot;
        Bilinear<T> b;
        T m;
        if (!Locate(g, offset, mask, p, i, j, dg, k, &b, &m)) {
          ForEachRun(g, dg * cdg, (dg + 1) * cdg, [&](int64_t c0, int64_t c1) {
            T* dst = col + g.col_index(rows, p - p0, k, c0);
            std::fill(dst, dst + (c1 - c0), T(0));
          });
          *dm = T(0);
          doff[0] = doff[1] = T(0);
          continue;
        }
        T acc_m(0), acc_y(0), acc_x(0);
        ForEachRun(g, dg * cdg, (dg + 1) * cdg, [&](int64_t c0, int64_t c1) {
          const int64_t len = c1 - c0;
          const T* v[4];
          for (int q = 0; q < 4; ++q) v[q] = b.inside[q] ? xn + b.offset[q] * C + c0 : zeros;
          ConstArrayMap<T> v0(v[0], len), v1(v[1], len), v2(v[2], len), v3(v[3], len);
          ConstArrayMap<T> dc(dcol + g.col_index(chunk_rows, p - chunk0, k, c0), len);
          Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> dst(
              col + g.col_index(rows, p - p0, k, c0), len);
          const auto val = b.weight[0] * v0 + b.weight[1] * v1 + b.weight[2] * v2 +
                           b.weight[3] * v3;
          dst = m * val;
          acc_m += (dc * val).sum();
          acc_y += (dc * (b.dwy[0] * v0 + b.dwy[1] * v1 + b.dwy[2] * v2 + b.dwy[3] * v3)).sum();
          acc_x += (dc * (b.dwx[0] * v0 + b.dwx[1] * v1 + b.dwx[2] * v2 + b.dwx[3] * v3)).sum();
        });
        *dm = acc_m;
        doff[0] = m * acc_y;
        doff[1] = m * acc_x;
      }
    }
  }
}

// dx[n, :, :, cb0:cb1] += scatter of dcol for the pixels [pa, pb) of image n.
template <typename T>
void ScatterToInput(const DeformConvGeometry& g, const T* offset, const T* mask, const T* dcol,
                    int64_t chunk0, int64_t chunk_rows, int64_t n, int64_t pa, int64_t pb,
                    int64_t cb0, int64_t cb1, T* dx) {
  const int64_t hw = g.ho * g.wo, C = g.cin, cdg = g.cdg();
  T* dxn = dx + n * g.h * g.w * C;
  const int64_t dg0 = cb0 / cdg, dg1 = (cb1 - 1) / cdg;
  for (int64_t p = pa; p < pb; ++p) {
    const int64_t i = (p - n * hw) / g.wo, j = p - n * hw - i * g.wo;
    for (int64_t dg = dg0; dg <= dg1; ++dg) {
      const int64_t c0 = std::max(cb0, dg * cdg), c1 = std::min(cb1, (dg + 1) * cdg);
      for (int64_t k = 0; k < g.taps(); ++k) {
        Bilinear<T> b;
        T m;
        if (!Locate(g, offset, mask, p, i, j, dg, k, &b, &m)) continue;
        ForEachRun(g, c0, c1, [&](int64_t r0, int64_t r1) {
          const T* __restrict__ src = dcol + g.col_index(chunk_rows, p - chunk0, k, r0);
          const int64_t len = r1 - r0;
          for (int q = 0; q < 4; ++q) {
            if (!b.inside[q]) continue;
            T* __restrict__ dst = dxn + b.offset[q] * C + r0;
            const T wq = m * b.weight[q];
            for (int64_t t = 0; t < len; ++t) dst[t] += wq * src[t];
          }
        });
      }
    }
  }
}

template <typename T>
std::unique_ptr<T[]> Scratch(int64_t elements) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(elements, 1))]);
}

}  // namespace

template <typename T>
struct ModulatedDeformConvForward<CPUDevice, T> {
  absl::Status operator()(OpKernelContext* ctx, const DeformConvGeometry& g, const T* x,
                          const T* offset, const T* mask, const T* kernel, const T* bias,
                          T* y) {
    const CPUDevice& d = ctx->eigen_device<CPUDevice>();
    const int64_t P = g.pixels(), tile = TilePixels(g), tiles = (P + tile - 1) / tile;
    const int64_t kcg = g.taps() * g.cg(), cog = g.cog();
    const double flops = static_cast<double>(tile) * g.col_width() * (g.cog() + 4);
    d.parallelFor(tiles, CoarseCost(flops), [&](Eigen::Index begin, Eigen::Index end) {
      auto col = Scratch<T>(tile * g.col_width());
      for (Eigen::Index t = begin; t < end; ++t) {
        const int64_t p0 = t * tile, p1 = std::min(P, p0 + tile), rows = p1 - p0;
        Im2Col(g, x, offset, mask, p0, p1, col.get());
        for (int64_t gi = 0; gi < g.groups; ++gi) {
          ConstMatrixMap<T> a(col.get() + gi * rows * kcg, rows, kcg, Eigen::OuterStride<>(kcg));
          ConstMatrixMap<T> w(kernel + gi * cog, kcg, cog, Eigen::OuterStride<>(g.cout));
          MatrixMap<T> out(y + p0 * g.cout + gi * cog, rows, cog, Eigen::OuterStride<>(g.cout));
          out.noalias() = a * w;
        }
        if (g.has_bias) {
          MatrixMap<T> out(y + p0 * g.cout, rows, g.cout, Eigen::OuterStride<>(g.cout));
          out.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias, g.cout);
        }
      }
    });
    return absl::OkStatus();
  }
};

template <typename T>
struct ModulatedDeformConvBackward<CPUDevice, T> {
  absl::Status operator()(OpKernelContext* ctx, const DeformConvGeometry& g, const T* x,
                          const T* offset, const T* mask, const T* kernel, const T* dy, T* dx,
                          T* doffset, T* dmask, T* dkernel, T* dbias) {
    const CPUDevice& d = ctx->eigen_device<CPUDevice>();
    const int64_t P = g.pixels(), C = g.cin, cw = g.col_width();
    const int64_t kcg = g.taps() * g.cg(), cog = g.cog();
    const int64_t kernel_size = kcg * g.cout;
    const int64_t R = NumRanges(d);
    const int64_t tile = TilePixels(g);
    const int64_t budget = g.chunk_bytes > 0 ? g.chunk_bytes : kChunkBytes;
    const int64_t chunk =
        std::max<int64_t>(1, budget / (tile * cw * static_cast<int64_t>(sizeof(T)))) * tile;

    // dx is accumulated into by the scatter; zero it in parallel.
    const int64_t x_size = g.n * g.h * g.w * C;
    d.parallelFor(x_size, Eigen::TensorOpCost(0, sizeof(T), 1),
                  [&](Eigen::Index b, Eigen::Index e) { std::fill(dx + b, dx + e, T(0)); });

    Tensor dcol_tensor, parts_tensor;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(DataTypeToEnum<T>::value,
                                          TensorShape({std::max<int64_t>(1, std::min(chunk, P) * cw)}),
                                          &dcol_tensor));
    TF_RETURN_IF_ERROR(ctx->allocate_temp(DataTypeToEnum<T>::value,
                                          TensorShape({R * (kernel_size + g.cout)}),
                                          &parts_tensor));
    T* dcol = dcol_tensor.flat<T>().data();
    T* parts = parts_tensor.flat<T>().data();  // R x (dW, db)
    std::fill(parts, parts + R * (kernel_size + g.cout), T(0));
    std::vector<T> zeros(static_cast<size_t>(g.cdg()), T(0));

    for (int64_t c0 = 0; c0 < P; c0 += chunk) {
      const int64_t c1 = std::min(P, c0 + chunk), crows = c1 - c0;
      const int64_t ntiles = (crows + tile - 1) / tile;
      const double range_flops =
          static_cast<double>(crows) / R * cw * (3.0 * g.cog() + 12.0);
      // Phase A: per range of tiles.
      d.parallelFor(R, CoarseCost(range_flops), [&](Eigen::Index rb, Eigen::Index re) {
        auto col = Scratch<T>(tile * cw);
        for (Eigen::Index r = rb; r < re; ++r) {
          T* dw = parts + r * (kernel_size + g.cout);
          T* db = dw + kernel_size;
          for (int64_t t = ntiles * r / R; t < ntiles * (r + 1) / R; ++t) {
            const int64_t p0 = c0 + t * tile, p1 = std::min(c1, p0 + tile), rows = p1 - p0;
            for (int64_t gi = 0; gi < g.groups; ++gi) {
              ConstMatrixMap<T> dyg(dy + p0 * g.cout + gi * cog, rows, cog,
                                    Eigen::OuterStride<>(g.cout));
              ConstMatrixMap<T> w(kernel + gi * cog, kcg, cog, Eigen::OuterStride<>(g.cout));
              MatrixMap<T> dc(dcol + (gi * crows + (p0 - c0)) * kcg, rows, kcg,
                              Eigen::OuterStride<>(kcg));
              dc.noalias() = dyg * w.transpose();
            }
            SampleBackward(g, x, offset, mask, dcol, c0, crows, p0, p1, zeros.data(),
                           col.get(), doffset, dmask);
            for (int64_t gi = 0; gi < g.groups; ++gi) {
              ConstMatrixMap<T> a(col.get() + gi * rows * kcg, rows, kcg,
                                  Eigen::OuterStride<>(kcg));
              ConstMatrixMap<T> dyg(dy + p0 * g.cout + gi * cog, rows, cog,
                                    Eigen::OuterStride<>(g.cout));
              MatrixMap<T> dwg(dw + gi * cog, kcg, cog, Eigen::OuterStride<>(g.cout));
              dwg.noalias() += a.transpose() * dyg;
            }
            if (g.has_bias) {
              ConstMatrixMap<T> dyt(dy + p0 * g.cout, rows, g.cout, Eigen::OuterStride<>(g.cout));
              Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(db, g.cout) +=
                  dyt.colwise().sum();
            }
          }
        }
      });
      // Phase B: scatter into dx, parallel over (image, channel block).
      const int64_t hw = g.ho * g.wo;
      const int64_t n_first = c0 / hw, n_last = (c1 - 1) / hw, images = n_last - n_first + 1;
      const int64_t max_blocks = std::max<int64_t>(1, C / 8);
      const int64_t blocks = std::min(max_blocks, std::max<int64_t>(1, (R + images - 1) / images));
      const double unit_flops = static_cast<double>(crows) / images * cw / blocks * 10.0;
      d.parallelFor(images * blocks, CoarseCost(unit_flops), [&](Eigen::Index ub, Eigen::Index ue) {
        for (Eigen::Index u = ub; u < ue; ++u) {
          const int64_t n = n_first + u / blocks, blk = u % blocks;
          const int64_t pa = std::max(c0, n * hw), pb = std::min(c1, (n + 1) * hw);
          const int64_t cb0 = C * blk / blocks, cb1 = C * (blk + 1) / blocks;
          if (cb0 < cb1) ScatterToInput(g, offset, mask, dcol, c0, crows, n, pa, pb, cb0, cb1, dx);
        }
      });
    }

    // Sum the per-range parts in range order (deterministic).
    const int64_t part_len = kernel_size + g.cout;
    const int64_t out_len = kernel_size + (g.has_bias ? g.cout : 0);
    d.parallelFor(out_len, Eigen::TensorOpCost(R * sizeof(T), sizeof(T), R),
                  [&](Eigen::Index b, Eigen::Index e) {
                    for (Eigen::Index q = b; q < e; ++q) {
                      T s = parts[q];
                      for (int64_t r = 1; r < R; ++r) s += parts[r * part_len + q];
                      if (q < kernel_size) {
                        dkernel[q] = s;
                      } else {
                        dbias[q - kernel_size] = s;
                      }
                    }
                  });
    return absl::OkStatus();
  }
};

namespace {

constexpr char kOp[] = "ModulatedDeformConv2D: ";

struct DeformConvAttrs {
  std::vector<int32> strides, dilations, explicit_paddings;
  std::string padding;
  int64_t groups = 1, dgroups = 1;
};

absl::Status ReadAttrs(OpKernelConstruction* ctx, DeformConvAttrs* a) {
  TF_RETURN_IF_ERROR(ctx->GetAttr("strides", &a->strides));
  TF_RETURN_IF_ERROR(ctx->GetAttr("dilations", &a->dilations));
  TF_RETURN_IF_ERROR(ctx->GetAttr("padding", &a->padding));
  TF_RETURN_IF_ERROR(ctx->GetAttr("explicit_paddings", &a->explicit_paddings));
  TF_RETURN_IF_ERROR(ctx->GetAttr("groups", &a->groups));
  TF_RETURN_IF_ERROR(ctx->GetAttr("deformable_groups", &a->dgroups));
  if (a->strides.size() != 2 || a->strides[0] < 1 || a->strides[1] < 1) {
    return errors::InvalidArgument(kOp, "strides must be 2 positive ints");
  }
  if (a->dilations.size() != 2 || a->dilations[0] < 1 || a->dilations[1] < 1) {
    return errors::InvalidArgument(kOp, "dilations must be 2 positive ints");
  }
  if (a->padding == "EXPLICIT") {
    if (a->explicit_paddings.size() != 4) {
      return errors::InvalidArgument(kOp, "padding EXPLICIT needs explicit_paddings = [top, "
                                     "bottom, left, right]");
    }
    for (int32 p : a->explicit_paddings) {
      if (p < 0) return errors::InvalidArgument(kOp, "explicit_paddings must be >= 0");
    }
  } else if (!a->explicit_paddings.empty()) {
    return errors::InvalidArgument(kOp, "explicit_paddings must be empty unless padding is "
                                   "EXPLICIT");
  }
  return absl::OkStatus();
}

// Output length and padding before along one axis.
absl::Status AxisGeometry(const DeformConvAttrs& a, int axis, int64_t size, int64_t k,
                          const char* side, int64_t* out, int* pad_before) {
  const int64_t s = a.strides[axis], d = a.dilations[axis], eff = (k - 1) * d + 1;
  if (size < 1) return errors::InvalidArgument(kOp, "x must have a non-empty ", side);
  int64_t len = 0, before = 0;
  if (a.padding == "SAME") {
    len = (size + s - 1) / s;
    before = std::max<int64_t>((len - 1) * s + eff - size, 0) / 2;
  } else if (a.padding == "VALID") {
    len = size >= eff ? (size - eff) / s + 1 : 0;
  } else {
    before = a.explicit_paddings[2 * axis];
    const int64_t padded = size + before + a.explicit_paddings[2 * axis + 1];
    len = padded >= eff ? (padded - eff) / s + 1 : 0;
  }
  if (len < 1) {
    return errors::InvalidArgument(kOp, "x's ", side, " (", size,
                                   ") is too small for the kernel with this padding and "
                                   "dilation: the output ", side, " would be empty");
  }
  *out = len;
  *pad_before = static_cast<int>(before);
  return absl::OkStatus();
}

// Testing knobs: small limits make small test shapes run through many tiles
// and chunks (the paths that large images take).
int64_t EnvInt(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long long parsed = std::strtoll(v, &end, 10);
  return (end != nullptr && *end == '\0' && parsed > 0) ? static_cast<int64_t>(parsed) : 0;
}

absl::Status CheckRank(const Tensor& t, int rank, const char* name, const char* layout) {
  if (t.dims() != rank) {
    return errors::InvalidArgument(kOp, name, " must be a rank-", rank, " ", layout,
                                   " tensor, got shape ", t.shape().DebugString());
  }
  return absl::OkStatus();
}

absl::Status Validate(const DeformConvAttrs& a, const Tensor& x, const Tensor& offset,
                      const Tensor& mask, const Tensor& kernel, const Tensor& bias,
                      DeformConvGeometry* g) {
  TF_RETURN_IF_ERROR(CheckRank(x, 4, "x", "[N, H, W, Cin]"));
  TF_RETURN_IF_ERROR(CheckRank(offset, 4, "offset", "[N, Ho, Wo, 2*G*KH*KW]"));
  TF_RETURN_IF_ERROR(CheckRank(mask, 4, "mask", "[N, Ho, Wo, G*KH*KW]"));
  TF_RETURN_IF_ERROR(CheckRank(kernel, 4, "kernel", "[KH, KW, Cin/groups, Cout]"));
  TF_RETURN_IF_ERROR(CheckRank(bias, 1, "bias", "[Cout] or [0]"));
  g->n = x.dim_size(0);
  g->h = x.dim_size(1);
  g->w = x.dim_size(2);
  g->cin = x.dim_size(3);
  g->kh = static_cast<int>(kernel.dim_size(0));
  g->kw = static_cast<int>(kernel.dim_size(1));
  g->cout = kernel.dim_size(3);
  g->groups = static_cast<int>(a.groups);
  g->dgroups = static_cast<int>(a.dgroups);
  if (kernel.NumElements() == 0) {
    return errors::InvalidArgument(kOp, "kernel must not be empty, got shape ",
                                   kernel.shape().DebugString());
  }
  if (g->cin < 1) return errors::InvalidArgument(kOp, "x must have at least one channel");
  if (g->cin % a.groups != 0) {
    return errors::InvalidArgument(kOp, "groups (", a.groups,
                                   ") must divide the input channels of x (", g->cin, ")");
  }
  if (g->cin % a.dgroups != 0) {
    return errors::InvalidArgument(kOp, "deformable_groups (", a.dgroups,
                                   ") must divide the input channels of x (", g->cin, ")");
  }
  if (kernel.dim_size(2) != g->cin / a.groups) {
    return errors::InvalidArgument(kOp, "kernel must have shape [KH, KW, Cin/groups, Cout] "
                                   "with Cin/groups = ", g->cin / a.groups, ", got ",
                                   kernel.shape().DebugString());
  }
  if (g->cout % a.groups != 0) {
    return errors::InvalidArgument(kOp, "groups (", a.groups,
                                   ") must divide the output channels of kernel (", g->cout,
                                   ")");
  }
  if (bias.dim_size(0) != 0 && bias.dim_size(0) != g->cout) {
    return errors::InvalidArgument(kOp, "bias must have shape [", g->cout,
                                   "] (Cout) or [0] (no bias), got ",
                                   bias.shape().DebugString());
  }
  g->has_bias = bias.dim_size(0) != 0;
  g->tile_elements = EnvInt("TFDEBLUR_DCN_TILE_ELEMENTS");
  g->chunk_bytes = EnvInt("TFDEBLUR_DCN_CHUNK_BYTES");
  g->sh = a.strides[0];
  g->sw = a.strides[1];
  g->dh = a.dilations[0];
  g->dw = a.dilations[1];
  TF_RETURN_IF_ERROR(AxisGeometry(a, 0, g->h, g->kh, "height", &g->ho, &g->pad_top));
  TF_RETURN_IF_ERROR(AxisGeometry(a, 1, g->w, g->kw, "width", &g->wo, &g->pad_left));
  const int64_t taps = g->dgroups * g->taps();
  const TensorShape want_offset({g->n, g->ho, g->wo, 2 * taps});
  const TensorShape want_mask({g->n, g->ho, g->wo, taps});
  if (offset.shape() != want_offset) {
    return errors::InvalidArgument(kOp, "offset must have shape ", want_offset.DebugString(),
                                   " ([N, Ho, Wo, 2 * deformable_groups * KH * KW]), got ",
                                   offset.shape().DebugString());
  }
  if (mask.shape() != want_mask) {
    return errors::InvalidArgument(kOp, "mask must have shape ", want_mask.DebugString(),
                                   " ([N, Ho, Wo, deformable_groups * KH * KW]), got ",
                                   mask.shape().DebugString());
  }
  return absl::OkStatus();
}

}  // namespace

template <typename Device, typename T>
class ModulatedDeformConv2DOp : public OpKernel {
 public:
  explicit ModulatedDeformConv2DOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadAttrs(ctx, &attrs_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& offset = ctx->input(1);
    const Tensor& mask = ctx->input(2);
    const Tensor& kernel = ctx->input(3);
    const Tensor& bias = ctx->input(4);
    DeformConvGeometry g;
    OP_REQUIRES_OK(ctx, Validate(attrs_, x, offset, mask, kernel, bias, &g));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(0, TensorShape({g.n, g.ho, g.wo, g.cout}), &y));
    if (y->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, ModulatedDeformConvForward<Device, T>()(
                            ctx, g, x.flat<T>().data(), offset.flat<T>().data(),
                            mask.flat<T>().data(), kernel.flat<T>().data(),
                            g.has_bias ? bias.flat<T>().data() : nullptr, y->flat<T>().data()));
  }

 private:
  DeformConvAttrs attrs_;
};

template <typename Device, typename T>
class ModulatedDeformConv2DGradOp : public OpKernel {
 public:
  explicit ModulatedDeformConv2DGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadAttrs(ctx, &attrs_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& offset = ctx->input(1);
    const Tensor& mask = ctx->input(2);
    const Tensor& kernel = ctx->input(3);
    const Tensor& bias = ctx->input(4);
    const Tensor& dy = ctx->input(5);
    DeformConvGeometry g;
    OP_REQUIRES_OK(ctx, Validate(attrs_, x, offset, mask, kernel, bias, &g));
    const TensorShape y_shape({g.n, g.ho, g.wo, g.cout});
    OP_REQUIRES(ctx, dy.shape() == y_shape,
                errors::InvalidArgument(kOp, "dy must have the output's shape ",
                                        y_shape.DebugString(), ", got ",
                                        dy.shape().DebugString()));
    Tensor *dx, *doffset, *dmask, *dkernel, *dbias;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, offset.shape(), &doffset));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, mask.shape(), &dmask));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, kernel.shape(), &dkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, bias.shape(), &dbias));
    // Called also for batch 0: the functor then writes zero dkernel and dbias.
    OP_REQUIRES_OK(ctx, ModulatedDeformConvBackward<Device, T>()(
                            ctx, g, x.flat<T>().data(), offset.flat<T>().data(),
                            mask.flat<T>().data(), kernel.flat<T>().data(), dy.flat<T>().data(),
                            dx->flat<T>().data(), doffset->flat<T>().data(),
                            dmask->flat<T>().data(), dkernel->flat<T>().data(),
                            g.has_bias ? dbias->flat<T>().data() : nullptr));
  }

 private:
  DeformConvAttrs attrs_;
};

#define REGISTER_CPU(T)                                                                       \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("TfDeblur>ModulatedDeformConv2D").Device(DEVICE_CPU).TypeConstraint<T>("T"),       \
      ModulatedDeformConv2DOp<CPUDevice, T>);                                                 \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("TfDeblur>ModulatedDeformConv2DGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),   \
      ModulatedDeformConv2DGradOp<CPUDevice, T>);
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

#if GOOGLE_CUDA
#define REGISTER_GPU(T)                                                                       \
  extern template struct ModulatedDeformConvForward<GPUDevice, T>;                            \
  extern template struct ModulatedDeformConvBackward<GPUDevice, T>;                           \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("TfDeblur>ModulatedDeformConv2D").Device(DEVICE_GPU).TypeConstraint<T>("T"),       \
      ModulatedDeformConv2DOp<GPUDevice, T>);                                                 \
  REGISTER_KERNEL_BUILDER(                                                                    \
      Name("TfDeblur>ModulatedDeformConv2DGrad").Device(DEVICE_GPU).TypeConstraint<T>("T"),   \
      ModulatedDeformConv2DGradOp<GPUDevice, T>);
REGISTER_GPU(float);
REGISTER_GPU(Eigen::half);
REGISTER_GPU(Eigen::bfloat16);
#undef REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace tfdeblur
}  // namespace tensorflow
