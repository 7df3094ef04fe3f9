"""``python -m mmaudio``: the headless command (see :mod:`.cli`)."""

import sys

from .cli import main

sys.exit(main())
