"""``python -m bench.serve_overhead [--rows N] [--reps R]``: see README.md beside this file."""

import sys

from . import main

sys.exit(main())
