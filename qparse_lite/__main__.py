"""``python -m qparse_lite`` = the ``qparse`` command."""

import sys

from .cli import main

sys.exit(main())
