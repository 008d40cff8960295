"""Per-architecture tiling defaults: the overlap to use and the smallest tile that keeps quality.

Standard library only, so that ``tfdeblur deblur --help`` can name the
non-local networks without importing TensorFlow. Measured with
``benchmarks/bench_tiling.py`` on trained models (numbers and method in
``docs/tiling.md``): the minimum tile is the smallest tested side at which,
with the default overlap, every test photo's tiled PSNR stayed within 0.05 dB
(half the 0.1 dB aimed at: the models measured were trained briefly) of its
whole-image PSNR, there and at every larger side tested.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TilingDefaults:
    """How one architecture is best tiled.

    Attributes:
        architecture: the registry name (``"lmfn"``, ...), None for an unknown model.
        overlap: pixels shared by neighbouring tiles when none is given.
        min_tile: the smallest tile side that keeps tiled within 0.1 dB PSNR of
            whole-image deblurring (None: no minimum known or needed).
        non_local: why the network's output at a pixel depends on the whole
            image (None for a local network).
    """

    architecture: str | None
    overlap: int
    min_tile: int | None = None
    non_local: str | None = None


# Used for models of no known architecture (and before this table existed, for all).
FALLBACK_OVERLAP = 32

TILING_DEFAULTS: dict[str, TilingDefaults] = {
    # 128 with overlap 32: one photo 0.06 dB off; from 192: at most 0.021 dB (64: 0.27 dB).
    "lmfn": TilingDefaults("lmfn", overlap=32, min_tile=192,
                           non_local="ALFM attends over the whole feature map"),
    # Local: at most 0.034 dB from tile 64 with overlap 16, 0.012 dB from 96 with 32.
    "svdn": TilingDefaults("svdn", overlap=32),
    # 96 with overlap 32: at most 0.036 dB, 0.021 dB from 128 (64 with 16: 0.11 dB).
    "svrnn": TilingDefaults("svrnn", overlap=32, min_tile=96,
                            non_local="its spatial recurrences run across the whole image"),
}
