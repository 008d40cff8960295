"""``python -m tfdeblur``: the command-line tool (see :mod:`tfdeblur.cli`)."""

import sys

from tfdeblur.cli import main

sys.exit(main())
