"""``python -m tucker_init``: the command line (see :mod:`tucker_init.cli`)."""

import sys

from .cli import main

sys.exit(main())
