// CPU kernels of the modulated deformable convolution (DCNv2); the OpKernel
// classes that validate inputs and dispatch here (or to CUDA) are in
// deform_conv_kernels.cc.
//
// Forward: the output pixels (flattened over batch and rows) are cut into
// tiles of about kTileElements column-buffer elements. A tile is
// deformable-im2col'ed into a thread-local column buffer [tile, KH*KW*Cin] and
// multiplied with the kernel (one Eigen GEMM per weight group), tiles running
// in parallel on TensorFlow's intra-op pool. Scratch memory: one tile buffer
// per concurrently running task, i.e. at most
// (intra-op threads) x kTileElements elements (512 KiB each in float32).
//
// Backward: the tiles are split into R = (intra-op threads, at most one per
// kMinBandRows output rows) contiguous ranges, one task each. For a tile,
// range r computes dcol = dy W^T into its tile buffer, then in one pass over x
// the tile's column buffer, the mask and offset gradients (each pixel's own,
// so race-free) and the input gradient, and finally dW_r += col^T dy,
// db_r += sum dy into its own accumulators (BackwardTile).
// The input gradient is a scatter (offsets may point anywhere), made
// race-free without atomics or per-thread copies of dx: range r owns a band
// of input rows (those around the output rows it processes) and adds into
// them directly; a bilinear corner in another range's band is queued and
// added by the owner after the round (AddQueuedGradients). With the usual
// small offsets almost nothing is queued. A round (RunRound) ends when every
// range is done or its queue could not take another tile; queues are bounded
// by kQueueBytes in all (or one tile's worst case, 4 x tile buffer, per range
// if that is larger). dW and db are summed over the ranges in a fixed order
// at the end (SumRangeParts). Tiles, ranges, bands and round boundaries
// depend only on the data, the shapes and the pool size (PlanBackward), so
// results are bit-identical run to run. Scratch: per range two tile buffers,
// one copy of the kernel and its queue.
#define EIGEN_USE_THREADS

#include "deform_conv/kernels/deform_conv_cpu.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace tensorflow {
namespace tfdeblur {

using CPUDevice = Eigen::ThreadPoolDevice;
using tfdeblur_dcn::Bilinear;
using tfdeblur_dcn::SetupBilinear;

namespace {

constexpr int64_t kTileElements = int64_t{1} << 17;
constexpr int64_t kMinTilePixels = 16;
constexpr int64_t kQueueBytes = int64_t{64} << 20;
constexpr int64_t kMinBandRows = 8;

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatrixMap = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

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

// One run of channels of one sample in the backward pass: writes the column
// buffer (m * value) and adds the sample's share of d(mask) (sum dc * value) and
// of d(py), d(px) (sum dc * dvalue/dp) to acc[0..2]. Eight independent partial
// sums per quantity let the compiler vectorise the reductions.
template <typename T>
void SampleRunBackward(int64_t len, const T* __restrict__ v0, const T* __restrict__ v1,
                       const T* __restrict__ v2, const T* __restrict__ v3,
                       const T* __restrict__ dc, T* __restrict__ col, const Bilinear<T>& b,
                       T m, T* acc) {
  constexpr int L = 8;
  const T w0 = b.weight[0], w1 = b.weight[1], w2 = b.weight[2], w3 = b.weight[3];
  const T y0 = b.dwy[0], y1 = b.dwy[1], y2 = b.dwy[2], y3 = b.dwy[3];
  const T x0 = b.dwx[0], x1 = b.dwx[1], x2 = b.dwx[2], x3 = b.dwx[3];
  T am[L] = {}, ay[L] = {}, ax[L] = {};
  int64_t t = 0;
  for (; t + L <= len; t += L) {
    for (int l = 0; l < L; ++l) {
      const T a0 = v0[t + l], a1 = v1[t + l], a2 = v2[t + l], a3 = v3[t + l];
      const T d = dc[t + l];
      const T val = w0 * a0 + w1 * a1 + w2 * a2 + w3 * a3;
      col[t + l] = m * val;
      am[l] += d * val;
      ay[l] += d * (y0 * a0 + y1 * a1 + y2 * a2 + y3 * a3);
      ax[l] += d * (x0 * a0 + x1 * a1 + x2 * a2 + x3 * a3);
    }
  }
  for (; t < len; ++t) {
    const T a0 = v0[t], a1 = v1[t], a2 = v2[t], a3 = v3[t];
    const T d = dc[t];
    const T val = w0 * a0 + w1 * a1 + w2 * a2 + w3 * a3;
    col[t] = m * val;
    am[0] += d * val;
    ay[0] += d * (y0 * a0 + y1 * a1 + y2 * a2 + y3 * a3);
    ax[0] += d * (x0 * a0 + x1 * a1 + x2 * a2 + x3 * a3);
  }
  for (int l = 0; l < L; ++l) {
    acc[0] += am[l];
    acc[1] += ay[l];
    acc[2] += ax[l];
  }
}

// Input-gradient contributions that a range could not write itself: `len`
// values at values[pos] to be added to dx[dst].
struct Overflow {
  int64_t dst, pos, len;
};

// Scratch of one range of tiles in the backward pass. The range owns dx rows
// [own_lo, own_hi) (flattened n * H + y) and writes them directly; a corner
// in another range's rows is queued in bucket[owner] and added after the
// round, when no range is writing.
template <typename T>
struct RangeState {
  int64_t tile_begin = 0, tile_end = 0, cursor = 0;
  int64_t own_lo = 0, own_hi = 0;
  std::unique_ptr<T[]> col, dcol;
  std::vector<T> values;
  std::vector<std::vector<Overflow>> buckets;
  T* dw = nullptr;  // kernel gradient accumulator, then bias gradient (cout)
};

// Backward over x for pixels [p0, p1) of range `rs`: the tile's column buffer
// (for dW), the mask and offset gradients (each pixel's own) and the input
// gradient (direct into owned rows, else queued). `bounds` holds the R + 1
// row boundaries of the ranges' bands; `zeros` at least cdg zeros.
template <typename T>
void SampleBackward(const DeformConvGeometry& g, const T* x, const T* offset, const T* mask,
                    int64_t p0, int64_t p1, const std::vector<int64_t>& bounds,
                    const T* zeros, RangeState<T>* rs, T* doffset, T* dmask, T* dx) {
  const int64_t rows = p1 - p0, hw = g.ho * g.wo, C = g.cin, cdg = g.cdg();
  const T* col_dc = rs->dcol.get();
  T* col = rs->col.get();
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n = p / hw, i = (p - n * hw) / g.wo, j = p - n * hw - i * g.wo;
    const T* xn = x + n * g.h * g.w * C;
    T* dxn = dx + n * g.h * g.w * C;
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
        // Owner of each corner's dx row: this range (-1) or another one.
        int owner[4];
        for (int q = 0; q < 4; ++q) {
          owner[q] = -1;
          if (!b.inside[q]) continue;
          const int64_t row = n * g.h + b.offset[q] / g.w;
          if (row < rs->own_lo || row >= rs->own_hi) {
            owner[q] = static_cast<int>(
                std::upper_bound(bounds.begin(), bounds.end(), row) - bounds.begin() - 1);
          }
        }
        T acc[3] = {T(0), T(0), T(0)};
        ForEachRun(g, dg * cdg, (dg + 1) * cdg, [&](int64_t c0, int64_t c1) {
          const int64_t len = c1 - c0;
          const T* v[4];
          for (int q = 0; q < 4; ++q) v[q] = b.inside[q] ? xn + b.offset[q] * C + c0 : zeros;
          const T* dc = col_dc + g.col_index(rows, p - p0, k, c0);
          SampleRunBackward(len, v[0], v[1], v[2], v[3], dc,
                            col + g.col_index(rows, p - p0, k, c0), b, m, acc);
          for (int q = 0; q < 4; ++q) {
            if (!b.inside[q]) continue;
            const T wq = m * b.weight[q];
            const int64_t dst = b.offset[q] * C + c0;
            if (owner[q] < 0) {
              T* __restrict__ out = dxn + dst;
              for (int64_t t = 0; t < len; ++t) out[t] += wq * dc[t];
            } else {
              const int64_t pos = static_cast<int64_t>(rs->values.size());
              rs->values.resize(pos + len);
              T* __restrict__ out = rs->values.data() + pos;
              for (int64_t t = 0; t < len; ++t) out[t] = wq * dc[t];
              rs->buckets[owner[q]].push_back({n * g.h * g.w * C + dst, pos, len});
            }
          }
        });
        *dm = acc[0];
        doff[0] = m * acc[1];
        doff[1] = m * acc[2];
      }
    }
  }
}

template <typename T>
std::unique_ptr<T[]> Scratch(int64_t elements) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(elements, 1))]);
}


// Inputs and outputs of one backward call, as the steps below share them.
template <typename T>
struct BackwardArgs {
  const T *x, *offset, *mask, *kernel, *dy;
  T *dx, *doffset, *dmask;
};

// How one backward call is cut up: tiles of `tile` pixels, `ranges` ranges of
// consecutive tiles, the band of dx rows each range owns, and the bound on
// the values a range may queue per round.
struct BackwardPlan {
  int64_t pixels = 0, tile = 0, tiles = 0, ranges = 1;
  int64_t tile_worst = 0;  // values one tile can queue (4 corners per sample)
  int64_t cap = 0;         // values a range may hold queued in one round
  int64_t kernel_size = 0;  // elements of dW
  int64_t part_len = 0;     // per-range accumulator: dW, then db
  // ranges + 1 boundaries (flattened n * H + y) of the owned dx row bands.
  std::vector<int64_t> bounds;
};

BackwardPlan PlanBackward(const DeformConvGeometry& g, const CPUDevice& d, size_t elem_bytes) {
  BackwardPlan plan;
  plan.pixels = g.pixels();
  plan.kernel_size = g.taps() * g.cg() * g.cout;
  plan.part_len = plan.kernel_size + g.cout;
  // At least kMinBandRows output rows per range: thinner bands would queue
  // most corners (offsets and kernel reach several rows beyond a band).
  plan.ranges = g.ranges > 0 ? g.ranges
                             : std::max<int64_t>(1, std::min<int64_t>(
                                   NumRanges(d), g.n * g.ho / kMinBandRows));
  plan.tile = TilePixels(g);
  plan.tiles = (plan.pixels + plan.tile - 1) / plan.tile;
  // Queued values of one range: its share of the budget, but at least what
  // one tile can queue.
  const int64_t budget = g.scratch_bytes > 0 ? g.scratch_bytes : kQueueBytes;
  plan.tile_worst = 4 * plan.tile * g.col_width();
  plan.cap = std::max(plan.tile_worst,
                      budget / plan.ranges / static_cast<int64_t>(elem_bytes));
  // Range r takes tiles [T*r/R, T*(r+1)/R) and owns the input rows from the
  // centre row of its first pixel's receptive field to the next range's.
  const int64_t R = plan.ranges, hw = g.ho * g.wo;
  plan.bounds.resize(R + 1);
  for (int64_t r = 0; r <= R; ++r) {
    const int64_t p = std::min(plan.pixels, plan.tiles * r / R * plan.tile);
    if (r == 0) {
      plan.bounds[r] = 0;
    } else if (r == R || p >= plan.pixels) {
      plan.bounds[r] = g.n * g.h;
    } else {
      const int64_t n = p / hw, i = (p - n * hw) / g.wo;
      const int64_t centre = i * g.sh - g.pad_top + (g.kh - 1) * g.dh / 2;
      plan.bounds[r] = n * g.h + std::min<int64_t>(g.h, std::max<int64_t>(0, centre));
    }
  }
  return plan;
}

template <typename T>
std::vector<RangeState<T>> MakeRanges(const BackwardPlan& plan, T* parts) {
  const int64_t R = plan.ranges;
  std::vector<RangeState<T>> ranges(R);
  for (int64_t r = 0; r < R; ++r) {
    RangeState<T>& rs = ranges[r];
    rs.tile_begin = rs.cursor = plan.tiles * r / R;
    rs.tile_end = plan.tiles * (r + 1) / R;
    rs.own_lo = plan.bounds[r];
    rs.own_hi = plan.bounds[r + 1];
    rs.buckets.resize(R);
    rs.dw = parts + r * plan.part_len;
  }
  return ranges;
}

template <typename T>
bool AnyPending(const std::vector<RangeState<T>>& ranges) {
  for (const auto& rs : ranges) {
    if (rs.cursor < rs.tile_end) return true;
  }
  return false;
}

// Pixels [p0, p1) of range `rs`: dcol = dy W^T, the pass over x
// (SampleBackward), then dW_r += col^T dy and db_r += sum dy.
template <typename T>
void BackwardTile(const DeformConvGeometry& g, const BackwardPlan& plan,
                  const BackwardArgs<T>& a, const T* zeros, int64_t p0, int64_t p1,
                  RangeState<T>* rs) {
  const int64_t rows = p1 - p0, kcg = g.taps() * g.cg(), cog = g.cog();
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    ConstMatrixMap<T> dyg(a.dy + p0 * g.cout + gi * cog, rows, cog, Eigen::OuterStride<>(g.cout));
    ConstMatrixMap<T> w(a.kernel + gi * cog, kcg, cog, Eigen::OuterStride<>(g.cout));
    MatrixMap<T> dc(rs->dcol.get() + gi * rows * kcg, rows, kcg, Eigen::OuterStride<>(kcg));
    dc.noalias() = dyg * w.transpose();
  }
  SampleBackward(g, a.x, a.offset, a.mask, p0, p1, plan.bounds, zeros, rs, a.doffset, a.dmask,
                 a.dx);
  for (int64_t gi = 0; gi < g.groups; ++gi) {
    ConstMatrixMap<T> col(rs->col.get() + gi * rows * kcg, rows, kcg, Eigen::OuterStride<>(kcg));
    ConstMatrixMap<T> dyg(a.dy + p0 * g.cout + gi * cog, rows, cog, Eigen::OuterStride<>(g.cout));
    MatrixMap<T> dwg(rs->dw + gi * cog, kcg, cog, Eigen::OuterStride<>(g.cout));
    dwg.noalias() += col.transpose() * dyg;
  }
  if (g.has_bias) {
    ConstMatrixMap<T> dyt(a.dy + p0 * g.cout, rows, g.cout, Eigen::OuterStride<>(g.cout));
    Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(rs->dw + plan.kernel_size, g.cout) +=
        dyt.colwise().sum();
  }
}

// One round: every range with tiles left runs them (one task per range)
// until it is done or its queue could overflow on the next tile.
template <typename T>
void RunRound(const CPUDevice& d, const DeformConvGeometry& g, const BackwardPlan& plan,
              const BackwardArgs<T>& a, const T* zeros, std::vector<RangeState<T>>* ranges) {
  const int64_t R = plan.ranges, cw = g.col_width();
  const double tile_flops = static_cast<double>(plan.tile) * cw * (3.0 * g.cog() + 24.0);
  d.parallelFor(R, CoarseCost(tile_flops * std::max<int64_t>(1, plan.tiles / R)),
                [&](Eigen::Index rb, Eigen::Index re) {
                  for (Eigen::Index r = rb; r < re; ++r) {
                    RangeState<T>& rs = (*ranges)[r];
                    if (rs.cursor >= rs.tile_end) continue;
                    if (!rs.col) {
                      rs.col = Scratch<T>(plan.tile * cw);
                      rs.dcol = Scratch<T>(plan.tile * cw);
                    }
                    while (rs.cursor < rs.tile_end &&
                           static_cast<int64_t>(rs.values.size()) + plan.tile_worst <= plan.cap) {
                      const int64_t p0 = rs.cursor * plan.tile;
                      BackwardTile(g, plan, a, zeros, p0, std::min(plan.pixels, p0 + plan.tile),
                                   &rs);
                      ++rs.cursor;
                    }
                  }
                });
}

// After a round, when no range writes dx: every owner adds the values queued
// for its band, in source-range order (reproducible sums), then the queues
// are emptied.
template <typename T>
void AddQueuedGradients(const CPUDevice& d, std::vector<RangeState<T>>* ranges, T* dx) {
  const int64_t R = static_cast<int64_t>(ranges->size());
  int64_t queued = 0;
  for (const auto& rs : *ranges) queued += static_cast<int64_t>(rs.values.size());
  if (queued == 0) return;
  d.parallelFor(R, CoarseCost(static_cast<double>(queued) / R * 2),
                [&](Eigen::Index ob, Eigen::Index oe) {
                  for (Eigen::Index owner = ob; owner < oe; ++owner) {
                    for (int64_t r = 0; r < R; ++r) {
                      const RangeState<T>& src = (*ranges)[r];
                      for (const Overflow& o : src.buckets[owner]) {
                        T* __restrict__ out = dx + o.dst;
                        const T* __restrict__ in = src.values.data() + o.pos;
                        for (int64_t t = 0; t < o.len; ++t) out[t] += in[t];
                      }
                    }
                  }
                });
  for (auto& rs : *ranges) {
    rs.values.clear();
    for (auto& bucket : rs.buckets) bucket.clear();
  }
}

// dkernel (and dbias) = the per-range accumulators summed in range order.
template <typename T>
void SumRangeParts(const CPUDevice& d, const DeformConvGeometry& g, const BackwardPlan& plan,
                   const T* parts, T* dkernel, T* dbias) {
  const int64_t R = plan.ranges, kernel_size = plan.kernel_size, part_len = plan.part_len;
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
}

template <typename T>
void ZeroFill(const CPUDevice& d, T* data, int64_t size) {
  d.parallelFor(size, Eigen::TensorOpCost(0, sizeof(T), 1),
                [&](Eigen::Index b, Eigen::Index e) { std::fill(data + b, data + e, T(0)); });
}

}  // namespace

template <typename T>
absl::Status ModulatedDeformConvForward<CPUDevice, T>::operator()(
    OpKernelContext* ctx, const DeformConvGeometry& g, const T* x, const T* offset,
    const T* mask, const T* kernel, const T* bias, T* y) {
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

template <typename T>
absl::Status ModulatedDeformConvBackward<CPUDevice, T>::operator()(
    OpKernelContext* ctx, const DeformConvGeometry& g, const T* x, const T* offset,
    const T* mask, const T* kernel, const T* dy, T* dx, T* doffset, T* dmask, T* dkernel,
    T* dbias) {
  const CPUDevice& d = ctx->eigen_device<CPUDevice>();
  const BackwardPlan plan = PlanBackward(g, d, sizeof(T));
  ZeroFill(d, dx, g.n * g.h * g.w * g.cin);
  Tensor parts_tensor;
  TF_RETURN_IF_ERROR(ctx->allocate_temp(DataTypeToEnum<T>::value,
                                        TensorShape({plan.ranges * plan.part_len}),
                                        &parts_tensor));
  T* parts = parts_tensor.flat<T>().data();
  std::fill(parts, parts + plan.ranges * plan.part_len, T(0));
  const std::vector<T> zeros(static_cast<size_t>(g.cdg()), T(0));
  std::vector<RangeState<T>> ranges = MakeRanges(plan, parts);
  const BackwardArgs<T> args{x, offset, mask, kernel, dy, dx, doffset, dmask};
  // Round boundaries depend on the data only, so the summation order (and
  // the result) is reproducible.
  while (AnyPending(ranges)) {
    RunRound(d, g, plan, args, zeros.data(), &ranges);
    AddQueuedGradients(d, &ranges, dx);
  }
  SumRangeParts(d, g, plan, parts, dkernel, dbias);
  return absl::OkStatus();
}

template struct ModulatedDeformConvForward<CPUDevice, float>;
template struct ModulatedDeformConvForward<CPUDevice, double>;
template struct ModulatedDeformConvBackward<CPUDevice, float>;
template struct ModulatedDeformConvBackward<CPUDevice, double>;

}  // namespace tfdeblur
}  // namespace tensorflow
