"""``python -m dgs_core``: the command line (:mod:`dgs_core.cli`)."""

import sys

from dgs_core.cli import main

sys.exit(main())
