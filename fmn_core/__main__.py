"""``python -m fmn_core ...``: the command-line interface."""

import sys

from fmn_core.cli import main

sys.exit(main())
