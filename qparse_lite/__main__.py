"""``python -m qparse_lite`` = the ``qparse`` command."""

import sys

from qparse_lite.cli import main

sys.exit(main())
