"""``python -m bench.workers [--rows N] [--reps R] [--work-us U]``: see README.md beside this file."""

import sys

from . import main

sys.exit(main())
