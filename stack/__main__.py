"""``python -m stack`` is the same as the ``model-service`` command."""

import sys

from stack.cli import main

sys.exit(main())
