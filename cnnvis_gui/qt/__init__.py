"""The Qt desktop app: main window, panels, the render worker, dialogs.

The only package of cnnvis_gui that imports PyQt5 or pyqtgraph.  Start it with
``cnnvis-gui`` or ``python run_gui.py`` (see :mod:`cnnvis_gui.qt.app`).
"""
