"""``python -m edgefleet``: the same as the ``edgefleet`` command."""

import sys

from edgefleet.cli import main

sys.exit(main())
