"""tfdeblur: single-image dynamic-scene deblurring for Keras 3 / TensorFlow.

Networks: SVRNN (Zhang et al., CVPR 2018), SVDN (Yuan, Su, Ma, CVPR 2020) and
LMFN (Zhang et al.), built on two compiled ops (gated spatial recurrence and
modulated deformable convolution) that also have portable pure-TensorFlow
twins for SavedModel / TFLite export.

Deblurring a photo with a bundled trained model (see :mod:`tfdeblur.pretrained`):

    >>> import tfdeblur
    >>> sharp = tfdeblur.deblur("photo.png")        # float32 [H, W, 3] in [0, 1]
    >>> model = tfdeblur.load("lmfn_bundled")         # a bundled name, or a .keras path

``import tfdeblur`` does not import TensorFlow; ``load`` and ``deblur`` do.
It leaves the environment alone (no ``KERAS_BACKEND``, no TensorFlow log
level): Keras's backend is the user's choice. SVRNN and SVDN, built on
TensorFlow ops, need the TensorFlow backend (Keras's default) and say so when
another one is active; LMFN runs on any (``KERAS_BACKEND=jax`` too).
"""

__version__ = "0.1.0"

from tfdeblur._api import deblur, load
from tfdeblur.evaluation import evaluate  # noqa: E402 - imports TensorFlow only when called

__all__ = ["__version__", "deblur", "evaluate", "load"]
