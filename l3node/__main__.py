"""``python -m l3node`` is the same as the ``l3node`` command."""

import sys

from .cli import main

sys.exit(main())
