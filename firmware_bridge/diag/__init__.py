"""cabinet-diag, the technician's diagnostic CLI over the serial line (docs/diag.md).

Imports point one way: ``cli`` (parser, ``main``, exit codes for each failure) imports the
command modules ``commands``, ``calibration`` and ``wire``; they import ``context`` (options,
output, the lazily opened Board, the errors) and ``output`` (tables, NDJSON, live views).
The console script is ``cabinet-diag = firmware_bridge.diag:main``.
"""
from .cli import build_parser, main
from .context import (EXIT_CONNECTION, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, PROG,
                      ConnectionProblem, Context, DiagError, UsageError)

__all__ = ["main", "build_parser", "Context", "DiagError", "ConnectionProblem", "UsageError",
           "EXIT_OK", "EXIT_ERROR", "EXIT_CONNECTION", "EXIT_INTERRUPTED", "PROG"]
