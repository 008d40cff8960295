// CPU kernels of the gated spatial recurrence, and the OpKernel classes that
// validate inputs and dispatch to the CPU or CUDA functor.
//
// Work split (forward and backward alike): first every horizontal direction
// present, parallel over image rows (a row's scan is serial, each step a
// contiguous C-vector, so the inner loop vectorises); then every vertical
// direction, parallel over column stripes of each image (each step a row of
// the stripe). In the backward pass the horizontal phase writes dx and the
// vertical phase adds to it, so no two threads ever write the same element:
// results are bit-identical run to run.
#define EIGEN_USE_THREADS

#include "gated_recurrence/kernels/gated_recurrence_kernels.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common/kernels/op_kernel_common.h"

namespace tensorflow {
namespace tfdeblur {

namespace {

// Arithmetic type: float for the 16-bit types (their scans accumulate in
// float, as on the GPU), the type itself otherwise.
template <typename T> struct AccOf { using type = T; };
template <> struct AccOf<Eigen::half> { using type = float; };
template <> struct AccOf<Eigen::bfloat16> { using type = float; };

bool IsHorizontal(int dir) { return dir == kLeftToRight || dir == kRightToLeft; }
bool IsReverse(int dir) { return dir == kRightToLeft || dir == kBottomToTop; }

// Pixels per column stripe in the vertical phase: enough contiguous floats per
// step to vectorise well, small enough for many stripes per image.
int64_t StripeWidth(int64_t c) { return std::max<int64_t>(1, 2048 / std::max<int64_t>(c, 1)); }

// One scan step over C channels. The pointers never overlap (different
// pixels or tensors); saying so with __restrict lets GCC vectorise without
// run-time alias checks, which it otherwise gives up on (7 pointers).
template <typename T>
inline void ForwardStep(int64_t C, const T* __restrict xp, const T* __restrict gp,
                        const T* __restrict hp, T* __restrict yp) {
  using A = typename AccOf<T>::type;
  if (hp == nullptr) {
    for (int64_t c = 0; c < C; ++c) yp[c] = T((A(1) - A(gp[c])) * A(xp[c]));
  } else {
    for (int64_t c = 0; c < C; ++c)
      yp[c] = T((A(1) - A(gp[c])) * A(xp[c]) + A(gp[c]) * A(hp[c]));
  }
}

// dh = dy + carry; dx (+)= (1 - g) dh; dg = dh (h_prev - x); carry = g dh.
template <typename T, bool kAccumulate, bool kHasPrev>
inline void BackwardStepImpl(int64_t C, const T* __restrict xp, const T* __restrict gp,
                             const T* __restrict dyp, const T* __restrict hp,
                             T* __restrict dxp, T* __restrict dgp,
                             typename AccOf<T>::type* __restrict carry) {
  using A = typename AccOf<T>::type;
  for (int64_t c = 0; c < C; ++c) {
    const A gv = A(gp[c]);
    const A dh = A(dyp[c]) + carry[c];
    const A dxv = (A(1) - gv) * dh;
    dxp[c] = T(kAccumulate ? A(dxp[c]) + dxv : dxv);
    dgp[c] = T(dh * ((kHasPrev ? A(hp[c]) : A(0)) - A(xp[c])));
    carry[c] = gv * dh;
  }
}

template <typename T>
inline void BackwardStep(int64_t C, bool accumulate, const T* xp, const T* gp, const T* dyp,
                         const T* hp, T* dxp, T* dgp, typename AccOf<T>::type* carry) {
  if (accumulate) {
    if (hp) BackwardStepImpl<T, true, true>(C, xp, gp, dyp, hp, dxp, dgp, carry);
    else BackwardStepImpl<T, true, false>(C, xp, gp, dyp, hp, dxp, dgp, carry);
  } else {
    if (hp) BackwardStepImpl<T, false, true>(C, xp, gp, dyp, hp, dxp, dgp, carry);
    else BackwardStepImpl<T, false, false>(C, xp, gp, dyp, hp, dxp, dgp, carry);
  }
}

// One horizontal scan of row `row` (flattened n*h index) for slot k.
template <typename T>
void ForwardRow(const RecurrenceGeometry& g, int k, int64_t row, const T* x, const T* gate,
                T* y) {
  const int64_t C = g.c, W = g.w, G = g.slots() * C;
  const bool rev = IsReverse(g.directions[k]);
  const T* xr = x + row * W * C;
  const T* gr = gate + row * W * G + k * C;
  T* yr = y + row * W * G + k * C;
  const T* prev = nullptr;
  for (int64_t s = 0; s < W; ++s) {
    const int64_t t = rev ? W - 1 - s : s;
    const T* xp = xr + t * C;
    const T* gp = gr + t * G;
    T* yp = yr + t * G;
    ForwardStep(C, xp, gp, prev, yp);
    prev = yp;
  }
}

// One vertical scan of image n, pixels [w0, w1), for slot k.
template <typename T>
void ForwardStripe(const RecurrenceGeometry& g, int k, int64_t n, int64_t w0, int64_t w1,
                   const T* x, const T* gate, T* y) {
  const int64_t C = g.c, W = g.w, H = g.h, G = g.slots() * C;
  const bool rev = IsReverse(g.directions[k]);
  for (int64_t s = 0; s < H; ++s) {
    const int64_t r = rev ? H - 1 - s : s;
    const int64_t rp = rev ? r + 1 : r - 1;
    for (int64_t p = w0; p < w1; ++p) {
      const T* xp = x + ((n * H + r) * W + p) * C;
      const T* gp = gate + ((n * H + r) * W + p) * G + k * C;
      T* yp = y + ((n * H + r) * W + p) * G + k * C;
      const T* hp = s == 0 ? nullptr : y + ((n * H + rp) * W + p) * G + k * C;
      ForwardStep(C, xp, gp, hp, yp);
    }
  }
}

// Backward of one horizontal scan. `carry` holds g[t+1] * dh[t+1] (C values).
template <typename T>
void BackwardRow(const RecurrenceGeometry& g, int k, int64_t row, bool accumulate, const T* x,
                 const T* gate, const T* y, const T* dy, T* dx, T* dgate,
                 typename AccOf<T>::type* carry) {
  using A = typename AccOf<T>::type;  // carry's type
  const int64_t C = g.c, W = g.w, G = g.slots() * C;
  const bool rev = IsReverse(g.directions[k]);
  const int64_t off_x = row * W * C, off_g = row * W * G + k * C;
  std::fill(carry, carry + C, A(0));
  for (int64_t s = W - 1; s >= 0; --s) {
    const int64_t t = rev ? W - 1 - s : s;
    const T* xp = x + off_x + t * C;
    const T* gp = gate + off_g + t * G;
    const T* dyp = dy + off_g + t * G;
    T* dxp = dx + off_x + t * C;
    T* dgp = dgate + off_g + t * G;
    const T* hp = s > 0 ? y + off_g + (rev ? t + 1 : t - 1) * G : nullptr;
    BackwardStep(C, accumulate, xp, gp, dyp, hp, dxp, dgp, carry);
  }
}

// Backward of one vertical scan over pixels [w0, w1) of image n.
template <typename T>
void BackwardStripe(const RecurrenceGeometry& g, int k, int64_t n, int64_t w0, int64_t w1,
                    bool accumulate, const T* x, const T* gate, const T* y, const T* dy, T* dx,
                    T* dgate, typename AccOf<T>::type* carry) {
  using A = typename AccOf<T>::type;
  const int64_t C = g.c, W = g.w, H = g.h, G = g.slots() * C;
  const bool rev = IsReverse(g.directions[k]);
  std::fill(carry, carry + (w1 - w0) * C, A(0));
  for (int64_t s = H - 1; s >= 0; --s) {
    const int64_t r = rev ? H - 1 - s : s;
    const int64_t rp = rev ? r + 1 : r - 1;
    for (int64_t p = w0; p < w1; ++p) {
      const int64_t px = ((n * H + r) * W + p);
      const T* xp = x + px * C;
      const T* gp = gate + px * G + k * C;
      const T* dyp = dy + px * G + k * C;
      T* dxp = dx + px * C;
      T* dgp = dgate + px * G + k * C;
      const T* hp = s > 0 ? y + ((n * H + rp) * W + p) * G + k * C : nullptr;
      A* cp = carry + (p - w0) * C;
      BackwardStep(C, accumulate, xp, gp, dyp, hp, dxp, dgp, cp);
    }
  }
}

// ---------------------------------------------------------------------------
// Channel-group sweeps: the preferred schedule whenever batch x channel groups
// gives every thread work. One task owns one image and one cache line worth
// of channels, and visits memory in two streaming sweeps: rows downwards
// (left_to_right, right_to_left and top_to_bottom of each row while it is in
// cache) and rows upwards (bottom_to_top). Every cache line of the gates and
// outputs is then touched by one task, once, in address order; the row/stripe
// schedule above reads a quarter of each pixel's 4C gate block per pass,
// which measured twice as slow on the fused [1, 360, 640, 32] case.

struct SlotsByDirection {
  int k[4] = {-1, -1, -1, -1};  // slot of each direction, -1 when absent
  explicit SlotsByDirection(const RecurrenceGeometry& g) {
    for (int i = 0; i < g.slots(); ++i) k[g.directions[i]] = i;
  }
  bool down_sweep() const { return k[kLeftToRight] >= 0 || k[kRightToLeft] >= 0 ||
                                   k[kTopToBottom] >= 0; }
};

// Channels per task: one 64-byte cache line.
template <typename T>
constexpr int64_t ChannelGroup() { return 64 / static_cast<int64_t>(sizeof(T)); }

// Scans `steps` pixels of one line for channels [0, cc) (pointers already at
// the task's first channel). Consecutive pixels are `sx` / `sg` elements apart
// in x / gate+y (negative for reverse scans); the first step has no history.
// kCC > 0 fixes cc at compile time, so the
// channel loop is fully unrolled into a few vector instructions.
template <int kCC, typename T>
inline void ForwardLine(int64_t cc_dyn, int64_t steps, const T* x, int64_t sx, const T* g,
                        T* y, int64_t sg) {
  const int64_t cc = kCC > 0 ? kCC : cc_dyn;
  if (steps <= 0) return;
  ForwardStep<T>(cc, x, g, nullptr, y);
  for (int64_t s = 1; s < steps; ++s) {
    x += sx;
    g += sg;
    ForwardStep(cc, x, g, y, y + sg);
    y += sg;
  }
}

template <int kCC, bool kAccumulate, typename T>
inline void BackwardLine(int64_t cc_dyn, int64_t steps, const T* x, T* dx, int64_t sx,
                         const T* g, const T* dy, T* dg, const T* y, int64_t sg,
                         typename AccOf<T>::type* carry, int64_t carry_stride) {
  // Scans from the line's last step back to its first; h_prev of step s is
  // y at step s - 1 (none for s = 0). Pointers are at step 0.
  const int64_t cc = kCC > 0 ? kCC : cc_dyn;
  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t ox = s * sx, og = s * sg;
    typename AccOf<T>::type* cp = carry + s * carry_stride;
    if (s > 0) {
      BackwardStepImpl<T, kAccumulate, true>(cc, x + ox, g + og, dy + og, y + og - sg, dx + ox,
                                             dg + og, cp);
    } else {
      BackwardStepImpl<T, kAccumulate, false>(cc, x + ox, g + og, dy + og, nullptr, dx + ox,
                                              dg + og, cp);
    }
  }
}

template <int kCC, typename T>
void ForwardSweeps(const RecurrenceGeometry& g, const SlotsByDirection& sd, int64_t n,
                   int64_t c0, int64_t c1, const T* x, const T* gate, T* y) {
  const int64_t C = g.c, W = g.w, H = g.h, G = g.slots() * C, cc = c1 - c0;
  const int64_t img_x = n * H * W * C + c0, img_g = n * H * W * G + c0;
  if (sd.down_sweep()) {
    for (int64_t r = 0; r < H; ++r) {
      const T* xr = x + img_x + r * W * C;
      const int64_t gr = img_g + r * W * G;
      if (int k = sd.k[kLeftToRight]; k >= 0)
        ForwardLine<kCC>(cc, W, xr, C, gate + gr + k * C, y + gr + k * C, G);
      if (int k = sd.k[kRightToLeft]; k >= 0) {
        const int64_t last = (W - 1);
        ForwardLine<kCC>(cc, W, xr + last * C, -C, gate + gr + last * G + k * C,
                         y + gr + last * G + k * C, -G);
      }
      if (int k = sd.k[kTopToBottom]; k >= 0) {
        // One step of W independent column scans: history is the row above.
        const T* xp = xr;
        const T* gp = gate + gr + k * C;
        T* yp = y + gr + k * C;
        for (int64_t p = 0; p < W; ++p, xp += C, gp += G, yp += G)
          ForwardStep(kCC > 0 ? kCC : cc, xp, gp, r > 0 ? yp - W * G : nullptr, yp);
      }
    }
  }
  if (int k = sd.k[kBottomToTop]; k >= 0) {
    for (int64_t r = H - 1; r >= 0; --r) {
      const T* xp = x + img_x + r * W * C;
      const T* gp = gate + img_g + r * W * G + k * C;
      T* yp = y + img_g + r * W * G + k * C;
      for (int64_t p = 0; p < W; ++p, xp += C, gp += G, yp += G)
        ForwardStep(kCC > 0 ? kCC : cc, xp, gp, r < H - 1 ? yp + W * G : nullptr, yp);
    }
  }
}

// Backward in the mirror order: rows upwards for the three directions of the
// forward's down sweep (their gradients flow against their scans), then rows
// downwards for bottom_to_top. dx is written by the first contribution and
// accumulated by the others, all within one task.
template <int kCC, typename T>
void BackwardSweeps(const RecurrenceGeometry& g, const SlotsByDirection& sd, int64_t n,
                    int64_t c0, int64_t c1, const T* x, const T* gate, const T* y,
                    const T* dy, T* dx, T* dgate, std::vector<typename AccOf<T>::type>* buf) {
  using A = typename AccOf<T>::type;
  const int64_t C = g.c, W = g.w, H = g.h, G = g.slots() * C, cc = c1 - c0;
  const int64_t img_x = n * H * W * C + c0, img_g = n * H * W * G + c0;
  buf->assign(cc + W * cc, A(0));
  A* carry_h = buf->data();
  A* carry_v = buf->data() + cc;  // one carry per column for the vertical scan
  // A vertical step over a whole row: W independent columns, history in the
  // neighbouring row (`hist`: element offset to it, 0 for none).
  auto vertical_row = [&](auto acc_tag, int64_t r, int k, int64_t hist) {
    constexpr bool kAcc = decltype(acc_tag)::value;
    const int64_t ox0 = img_x + r * W * C, og0 = img_g + r * W * G + k * C;
    for (int64_t p = 0; p < W; ++p) {
      const int64_t ox = ox0 + p * C, og = og0 + p * G;
      if (hist != 0) {
        BackwardStepImpl<T, kAcc, true>(kCC > 0 ? kCC : cc, x + ox, gate + og, dy + og,
                                        y + og + hist, dx + ox, dgate + og, carry_v + p * cc);
      } else {
        BackwardStepImpl<T, kAcc, false>(kCC > 0 ? kCC : cc, x + ox, gate + og, dy + og,
                                         nullptr, dx + ox, dgate + og, carry_v + p * cc);
      }
    }
  };
  using False = std::false_type;
  using True = std::true_type;
  if (sd.down_sweep()) {
    for (int64_t r = H - 1; r >= 0; --r) {
      const int64_t ox = img_x + r * W * C, og = img_g + r * W * G;
      bool acc = false;
      if (int k = sd.k[kLeftToRight]; k >= 0) {
        std::fill(carry_h, carry_h + cc, A(0));
        BackwardLine<kCC, false>(cc, W, x + ox, dx + ox, C, gate + og + k * C, dy + og + k * C,
                                 dgate + og + k * C, y + og + k * C, G, carry_h, 0);
        acc = true;
      }
      if (int k = sd.k[kRightToLeft]; k >= 0) {
        std::fill(carry_h, carry_h + cc, A(0));
        const int64_t lx = ox + (W - 1) * C, lg = og + (W - 1) * G + k * C;
        if (acc) {
          BackwardLine<kCC, true>(cc, W, x + lx, dx + lx, -C, gate + lg, dy + lg, dgate + lg,
                                  y + lg, -G, carry_h, 0);
        } else {
          BackwardLine<kCC, false>(cc, W, x + lx, dx + lx, -C, gate + lg, dy + lg, dgate + lg,
                                   y + lg, -G, carry_h, 0);
        }
        acc = true;
      }
      if (int k = sd.k[kTopToBottom]; k >= 0) {
        const int64_t hist = r > 0 ? -W * G : 0;
        if (acc) vertical_row(True(), r, k, hist); else vertical_row(False(), r, k, hist);
      }
    }
  }
  if (int k = sd.k[kBottomToTop]; k >= 0) {
    std::fill(carry_v, carry_v + W * cc, A(0));
    for (int64_t r = 0; r < H; ++r) {
      const int64_t hist = r < H - 1 ? W * G : 0;
      if (sd.down_sweep()) vertical_row(True(), r, k, hist); else vertical_row(False(), r, k, hist);
    }
  }
}

// Runs one channel-group task, with the channel count fixed at compile time
// for full groups.
template <typename T>
void ForwardTask(const RecurrenceGeometry& g, const SlotsByDirection& sd, int64_t n, int64_t c0,
                 int64_t c1, const T* x, const T* gate, T* y) {
  if (c1 - c0 == ChannelGroup<T>())
    ForwardSweeps<static_cast<int>(ChannelGroup<T>())>(g, sd, n, c0, c1, x, gate, y);
  else
    ForwardSweeps<0>(g, sd, n, c0, c1, x, gate, y);
}

template <typename T>
void BackwardTask(const RecurrenceGeometry& g, const SlotsByDirection& sd, int64_t n,
                  int64_t c0, int64_t c1, const T* x, const T* gate, const T* y, const T* dy,
                  T* dx, T* dgate, std::vector<typename AccOf<T>::type>* buf) {
  if (c1 - c0 == ChannelGroup<T>())
    BackwardSweeps<static_cast<int>(ChannelGroup<T>())>(g, sd, n, c0, c1, x, gate, y, dy, dx,
                                                        dgate, buf);
  else
    BackwardSweeps<0>(g, sd, n, c0, c1, x, gate, y, dy, dx, dgate, buf);
}

// Cost hints for Eigen's ParallelFor: bytes moved and cycles per unit of work.
Eigen::TensorOpCost LineCost(int64_t steps, int64_t c, int64_t bytes_per_elem, int slots) {
  const double elems = static_cast<double>(steps) * c * slots;
  return Eigen::TensorOpCost(elems * bytes_per_elem * 2, elems * bytes_per_elem, elems * 4);
}

}  // namespace

template <typename T>
struct GatedRecurrenceForward<CPUDevice, T> {
  absl::Status operator()(const CPUDevice& d, const RecurrenceGeometry& g, const T* x,
                          const T* gate, T* y) {
    const int64_t cg = ChannelGroup<T>(), groups = (g.c + cg - 1) / cg;
    if (g.n * groups >= d.numThreads()) {
      const SlotsByDirection sd(g);
      d.parallelFor(g.n * groups, LineCost(g.h * g.w, cg, sizeof(T), g.slots()),
                    [&](Eigen::Index begin, Eigen::Index end) {
                      for (Eigen::Index u = begin; u < end; ++u) {
                        const int64_t c0 = (u % groups) * cg;
                        ForwardTask(g, sd, u / groups, c0, std::min(g.c, c0 + cg), x, gate, y);
                      }
                    });
      return absl::OkStatus();
    }
    std::vector<int> hk, vk;
    for (int k = 0; k < g.slots(); ++k) (IsHorizontal(g.directions[k]) ? hk : vk).push_back(k);
    if (!hk.empty()) {
      d.parallelFor(g.n * g.h, LineCost(g.w, g.c, sizeof(T), hk.size()),
                    [&](Eigen::Index begin, Eigen::Index end) {
                      for (Eigen::Index row = begin; row < end; ++row)
                        for (int k : hk) ForwardRow(g, k, row, x, gate, y);
                    });
    }
    if (!vk.empty()) {
      const int64_t sw = StripeWidth(g.c), stripes = (g.w + sw - 1) / sw;
      d.parallelFor(g.n * stripes, LineCost(g.h * sw, g.c, sizeof(T), vk.size()),
                    [&](Eigen::Index begin, Eigen::Index end) {
                      for (Eigen::Index u = begin; u < end; ++u) {
                        const int64_t n = u / stripes, w0 = (u % stripes) * sw;
                        const int64_t w1 = std::min(g.w, w0 + sw);
                        for (int k : vk) ForwardStripe(g, k, n, w0, w1, x, gate, y);
                      }
                    });
    }
    return absl::OkStatus();
  }
};

template <typename T>
struct GatedRecurrenceBackward<CPUDevice, T> {
  absl::Status operator()(const CPUDevice& d, const RecurrenceGeometry& g, const T* x,
                          const T* gate, const T* y, const T* dy, T* dx, T* dgate) {
    const int64_t cg = ChannelGroup<T>(), groups = (g.c + cg - 1) / cg;
    if (g.n * groups >= d.numThreads()) {
      const SlotsByDirection sd(g);
      d.parallelFor(g.n * groups, LineCost(g.h * g.w, cg, sizeof(T), 3 * g.slots()),
                    [&](Eigen::Index begin, Eigen::Index end) {
                      std::vector<typename AccOf<T>::type> buf;
                      for (Eigen::Index u = begin; u < end; ++u) {
                        const int64_t c0 = (u % groups) * cg;
                        BackwardTask(g, sd, u / groups, c0, std::min(g.c, c0 + cg), x, gate,
                                     y, dy, dx, dgate, &buf);
                      }
                    });
      return absl::OkStatus();
    }
    std::vector<int> hk, vk;
    for (int k = 0; k < g.slots(); ++k) (IsHorizontal(g.directions[k]) ? hk : vk).push_back(k);
    if (!hk.empty()) {
      d.parallelFor(g.n * g.h, LineCost(g.w, g.c, sizeof(T), 3 * hk.size()),
                    [&](Eigen::Index begin, Eigen::Index end) {
                      std::vector<typename AccOf<T>::type> carry(g.c);
                      for (Eigen::Index row = begin; row < end; ++row)
                        for (size_t i = 0; i < hk.size(); ++i)
                          BackwardRow(g, hk[i], row, i > 0, x, gate, y, dy, dx, dgate,
                                      carry.data());
                    });
    }
    if (!vk.empty()) {
      const int64_t sw = StripeWidth(g.c), stripes = (g.w + sw - 1) / sw;
      const bool after_horizontal = !hk.empty();
      d.parallelFor(g.n * stripes, LineCost(g.h * sw, g.c, sizeof(T), 3 * vk.size()),
                    [&](Eigen::Index begin, Eigen::Index end) {
                      std::vector<typename AccOf<T>::type> carry(sw * g.c);
                      for (Eigen::Index u = begin; u < end; ++u) {
                        const int64_t n = u / stripes, w0 = (u % stripes) * sw;
                        const int64_t w1 = std::min(g.w, w0 + sw);
                        for (size_t i = 0; i < vk.size(); ++i)
                          BackwardStripe(g, vk[i], n, w0, w1, after_horizontal || i > 0, x,
                                         gate, y, dy, dx, dgate, carry.data());
                      }
                    });
    }
    return absl::OkStatus();
  }
};

namespace {

std::vector<int> ParseDirection(OpKernelConstruction* ctx) {
  std::string direction;
  const absl::Status status = ctx->GetAttr("direction", &direction);
  if (!status.ok()) {
    ctx->CtxFailure(__FILE__, __LINE__, status);
    return {};
  }
  if (direction == "all") return {kLeftToRight, kRightToLeft, kTopToBottom, kBottomToTop};
  if (direction == "left_to_right") return {kLeftToRight};
  if (direction == "right_to_left") return {kRightToLeft};
  if (direction == "top_to_bottom") return {kTopToBottom};
  if (direction == "bottom_to_top") return {kBottomToTop};
  ctx->CtxFailure(__FILE__, __LINE__,
                  errors::InvalidArgument("GatedRecurrence: unknown direction '", direction,
                                          "'"));
  return {};
}

// Validates x and gate (and optionally y, dy) and fills the geometry.
absl::Status Validate(const RecurrenceGeometry& proto, const Tensor& x, const Tensor& gate,
                      RecurrenceGeometry* g) {
  if (x.dims() != 4) {
    return errors::InvalidArgument("GatedRecurrence: x must be a rank-4 [N, H, W, C] tensor, "
                                   "got shape ", x.shape().DebugString());
  }
  if (gate.dims() != 4) {
    return errors::InvalidArgument("GatedRecurrence: gate must be a rank-4 tensor, got shape ",
                                   gate.shape().DebugString());
  }
  *g = proto;
  g->n = x.dim_size(0);
  g->h = x.dim_size(1);
  g->w = x.dim_size(2);
  g->c = x.dim_size(3);
  const int64_t expect_c = g->c * g->slots();
  if (gate.dim_size(0) != g->n || gate.dim_size(1) != g->h || gate.dim_size(2) != g->w ||
      gate.dim_size(3) != expect_c) {
    return errors::InvalidArgument("GatedRecurrence: gate must have shape [", g->n, ", ", g->h,
                                   ", ", g->w, ", ", expect_c, "] (", g->slots(),
                                   " x channels of x), got ", gate.shape().DebugString());
  }
  return absl::OkStatus();
}

// What the forward and the gradient kernel share: the directions, parsed
// once when TensorFlow constructs the kernel, and the checks of x and gate.
class RecurrenceKernelBase : public OpKernel {
 public:
  explicit RecurrenceKernelBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    proto_.directions = ParseDirection(ctx);
  }

 protected:
  absl::Status ValidateInputs(OpKernelContext* ctx, RecurrenceGeometry* g) const {
    return Validate(proto_, ctx->input(0), ctx->input(1), g);
  }

 private:
  RecurrenceGeometry proto_;
};

}  // namespace

template <typename Device, typename T>
class GatedRecurrenceOp : public RecurrenceKernelBase {
 public:
  using RecurrenceKernelBase::RecurrenceKernelBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& gate = ctx->input(1);
    RecurrenceGeometry g;
    OP_REQUIRES_OK(ctx, ValidateInputs(ctx, &g));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, gate.shape(), &y));
    if (y->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, GatedRecurrenceForward<Device, T>()(
                            ctx->eigen_device<Device>(), g, x.flat<T>().data(),
                            gate.flat<T>().data(), y->flat<T>().data()));
  }
};

template <typename Device, typename T>
class GatedRecurrenceGradOp : public RecurrenceKernelBase {
 public:
  using RecurrenceKernelBase::RecurrenceKernelBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& gate = ctx->input(1);
    const Tensor& y = ctx->input(2);
    const Tensor& dy = ctx->input(3);
    RecurrenceGeometry g;
    OP_REQUIRES_OK(ctx, ValidateInputs(ctx, &g));
    OP_REQUIRES(ctx, y.shape() == gate.shape(),
                errors::InvalidArgument("GatedRecurrenceGrad: y must have the gate's shape ",
                                        gate.shape().DebugString(), ", got ",
                                        y.shape().DebugString()));
    OP_REQUIRES(ctx, dy.shape() == gate.shape(),
                errors::InvalidArgument("GatedRecurrenceGrad: dy must have the gate's shape ",
                                        gate.shape().DebugString(), ", got ",
                                        dy.shape().DebugString()));
    Tensor* dx = nullptr;
    Tensor* dgate = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gate.shape(), &dgate));
    if (gate.NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, GatedRecurrenceBackward<Device, T>()(
                            ctx->eigen_device<Device>(), g, x.flat<T>().data(),
                            gate.flat<T>().data(), y.flat<T>().data(), dy.flat<T>().data(),
                            dx->flat<T>().data(), dgate->flat<T>().data()));
  }
};

#define REGISTER_CPU(T)                                                                    \
  TFDEBLUR_REGISTER_CPU_OP_AND_GRAD("TfDeblur>GatedRecurrence", T, GatedRecurrenceOp,        \
                                    GatedRecurrenceGradOp);
REGISTER_CPU(Eigen::half);
REGISTER_CPU(Eigen::bfloat16);
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

#if GOOGLE_CUDA
#define REGISTER_GPU(T)                                                                    \
  TFDEBLUR_REGISTER_GPU_OP_AND_GRAD("TfDeblur>GatedRecurrence", T, GatedRecurrenceOp,        \
                                    GatedRecurrenceGradOp, GatedRecurrenceForward,           \
                                    GatedRecurrenceBackward);
TFDEBLUR_CALL_GPU_TYPES(REGISTER_GPU)
#undef REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace tfdeblur
}  // namespace tensorflow
