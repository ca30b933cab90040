"""Start the cnnvis-gui window (same as the ``cnnvis-gui`` command)."""
from cnnvis_gui.qt.app import main

if __name__ == "__main__":
    raise SystemExit(main())
