"""``python -m bench.postgres [--rows N]``: see README.md beside this file."""

import sys

from . import main

sys.exit(main())
