"""``python -m backend`` runs the ``aware3d`` command line."""

import sys

from backend.cli.main import main

sys.exit(main())
