"""tfdeblur: single-image dynamic-scene deblurring for Keras 3 / TensorFlow.

Networks: SVRNN (Zhang et al., CVPR 2018), SVDN (Yuan, Su, Ma, CVPR 2020) and
LMFN (Zhang et al.), built on two compiled ops (gated spatial recurrence and
modulated deformable convolution) that also have portable pure-TensorFlow
twins for SavedModel / TFLite export.
"""

import os as _os

# Keras 3 must run on the TensorFlow backend: the compiled ops are TF ops.
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
