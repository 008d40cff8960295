// Shape-function checks that the op schemas share (with the shape-inference
// names they use): the rank of an input and two dimensions that must agree.
// Each error starts with the op's prefix ("GatedRecurrence: ",
// "ModulatedDeformConv2D: ") and names the argument.
#ifndef TFDEBLUR_COMMON_SHAPE_CHECKS_H_
#define TFDEBLUR_COMMON_SHAPE_CHECKS_H_

#include <string>

#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace tfdeblur {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

// Input `index` of rank `rank` (a known other rank is an error naming `name`
// and its `layout`, e.g. "[N, H, W, C]"); `out` is the input with that rank.
inline absl::Status RequireRank(InferenceContext* c, const char* op, int index, int rank,
                                const char* name, const char* layout, ShapeHandle* out) {
  ShapeHandle s = c->input(index);
  if (c->RankKnown(s) && c->Rank(s) != rank) {
    return errors::InvalidArgument(op, name, " must be a rank-", rank, " ", layout,
                                   " tensor, got shape ", c->DebugString(s));
  }
  return c->WithRank(s, rank, out);
}

// `got` merged with `expected` into `out`; two known, different values are an
// error that says `what` and both values.
inline absl::Status MergeOrFail(InferenceContext* c, const char* op, DimensionHandle got,
                                DimensionHandle expected, const std::string& what,
                                DimensionHandle* out) {
  if (!c->Merge(got, expected, out).ok()) {
    return errors::InvalidArgument(op, what, ": expected ", c->DebugString(expected), ", got ",
                                   c->DebugString(got));
  }
  return absl::OkStatus();
}

}  // namespace tfdeblur
}  // namespace tensorflow

#endif  // TFDEBLUR_COMMON_SHAPE_CHECKS_H_
