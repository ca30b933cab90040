"""``python -m cnnvis_gui``: the ``cnnvis`` command line (see :mod:`cnnvis_gui.cli`)."""
import sys

from cnnvis_gui.cli import main

if __name__ == "__main__":
    sys.exit(main())
