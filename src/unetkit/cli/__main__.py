"""``python -m unetkit.cli`` runs the CLI, as ``python -m unetkit`` does."""

import sys

from . import main

sys.exit(main())
