"""One module per ``qparse`` subcommand; each exposes ``register(subparsers)`` (see :mod:`qparse_lite.cli`)."""
