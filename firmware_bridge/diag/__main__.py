"""``python -m firmware_bridge.diag``: the same as the ``cabinet-diag`` console script."""
import sys

from .cli import main

sys.exit(main())
