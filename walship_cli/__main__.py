"""``python -m walship_cli``: the same as the ``walship`` command."""

import sys

from walship_cli import main

sys.exit(main())
