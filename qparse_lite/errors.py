"""The kit's user-facing error: a message that names the file and the fix.

The CLI prints a :class:`QparseError` as one line (no traceback) and exits with status 2.
"""

from __future__ import annotations


class QparseError(Exception):
    """Bad input or environment; the message names the file and how to fix it."""
