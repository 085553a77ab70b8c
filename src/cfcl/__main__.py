"""``python -m cfcl``: the command line (further local ranks are started this way)."""

import sys

from cfcl.cli import main

sys.exit(main())
