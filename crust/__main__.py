"""``python -m crust``: the same as the ``crust`` command."""

import sys

from crust.cli import main

sys.exit(main())
