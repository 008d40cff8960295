"""`tfdeblur demo --tile`: a tile below the bundled LMFN's minimum is one warning line."""

import re

from tfdeblur._tiling import TILING_DEFAULTS
from tfdeblur.cli import main
from tfdeblur.data.io import write_image


def test_demo_notes_a_small_tile_in_one_line(bundled, tmp_path, rng, capsys):
    photo = tmp_path / "blurry.png"
    write_image(photo, rng.uniform(0, 1, (40, 48, 3)))
    minimum = TILING_DEFAULTS["lmfn"].min_tile
    assert main(["demo", "--input", str(photo), "-o", str(tmp_path / "a"), "--tile", "32"]) == 0
    captured = capsys.readouterr()
    assert re.fullmatch(rf"tfdeblur demo: warning: tile 32 is below the minimum of {minimum} "
                        r"for LMFN, which is not local \(ALFM .*\n", captured.err), captured.err
    assert "model load " in captured.out
    # The photo fits in one tile: nothing is tiled, nothing to warn about.
    assert main(["demo", "--input", str(photo), "-o", str(tmp_path / "b"), "--tile", "64"]) == 0
    assert capsys.readouterr().err == ""
