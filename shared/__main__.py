"""Entry point of `python -m shared`."""

import sys

from .cli import main

sys.exit(main())
