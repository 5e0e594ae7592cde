"""``python -m preprocessing.gdc``: see :func:`preprocessing.gdc.cli.main`."""
import sys

from .cli import main

sys.exit(main())
