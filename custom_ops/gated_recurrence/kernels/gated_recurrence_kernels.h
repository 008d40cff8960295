// Device-independent interface of the gated spatial recurrence kernels.
// The CPU specialisation is in gated_recurrence_kernels.cc, the CUDA one in
// gated_recurrence_kernels.cu.cc (which wraps the raw-pointer kernels of
// gated_recurrence_kernels.cu.h, shared with the TensorFlow-free test library).
#ifndef TFDEBLUR_GATED_RECURRENCE_KERNELS_H_
#define TFDEBLUR_GATED_RECURRENCE_KERNELS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"

namespace tensorflow {
namespace tfdeblur {

// Prefix of the error messages of the op and its gradient.
inline constexpr char kGatedRecurrenceOp[] = "GatedRecurrence: ";

// Scan directions in the channel order of the fused ("all") form.
enum ScanDirection : int {
  kLeftToRight = 0,
  kRightToLeft = 1,
  kTopToBottom = 2,
  kBottomToTop = 3,
};

// Shape of one call: x is [n, h, w, c]; gate, y, dy are [n, h, w, slots * c]
// and slot k runs direction directions[k].
struct RecurrenceGeometry {
  int64_t n = 0, h = 0, w = 0, c = 0;
  std::vector<int> directions;
  int64_t slots() const { return static_cast<int64_t>(directions.size()); }
};

template <typename Device, typename T>
struct GatedRecurrenceForward {
  absl::Status operator()(const Device& d, const RecurrenceGeometry& geo, const T* x,
                          const T* gate, T* y);
};

template <typename Device, typename T>
struct GatedRecurrenceBackward {
  absl::Status operator()(const Device& d, const RecurrenceGeometry& geo, const T* x,
                          const T* gate, const T* y, const T* dy, T* dx, T* dgate);
};

}  // namespace tfdeblur
}  // namespace tensorflow

#endif  // TFDEBLUR_GATED_RECURRENCE_KERNELS_H_
