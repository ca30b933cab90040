"""The user's saved settings: window geometry, view choices, recent models, the last folder.

One :class:`Persistence` per window reads and writes its ``QSettings``.  Everything the
window remembers between sessions goes through here, so an automation run (``--screenshot``,
``--quit-after``) that must leave the user's settings alone has one switch to turn off
(:attr:`Persistence.writable`).
"""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from PyQt5 import QtCore

from ..core.saliency_display import CLIPS, FILTERS, SIGNS
from .state import BACKPROP_METHODS

ORG, APP = "cnnvis-gui", "cnnvis-gui"
SETTINGS_ENV = "CNNVIS_GUI_SETTINGS"
#: view choices that come back at the next start
PERSISTED = ("method", "compare", "method2", "filter", "sign", "clip", "percentile", "overlay", "smoothgrad", "noise",
             "ig_steps")
#: string choices checked when read back (a value this version does not have is ignored)
_CHOICES = {"method": BACKPROP_METHODS, "method2": BACKPROP_METHODS, "filter": FILTERS, "sign": SIGNS, "clip": CLIPS}
#: the window's size when the settings do not say otherwise
DEFAULT_SIZE = (1500, 920)


#: room (w, h) kept for a window manager's frame and title bar before the window is shown
FRAME_RESERVE = (8, 36)


def default_size() -> tuple:
    """The window's first size: :data:`DEFAULT_SIZE`, shrunk to fit the screen's free area.

    The offscreen platform (automation, tests) has no real screen: there it is the default.
    """
    from PyQt5 import QtGui
    w, h = DEFAULT_SIZE
    app = QtGui.QGuiApplication.instance()
    if app is None or app.platformName() == "offscreen":
        return w, h
    screen = app.primaryScreen()
    if screen is None:
        return w, h
    avail = screen.availableGeometry()
    # the size is the client area's; the window manager's title bar and frame come on top of it
    # (about 30 px under openbox, GNOME, Windows): keep room for them, fit_on_screen corrects the rest
    frame_w, frame_h = FRAME_RESERVE
    return min(w, avail.width() - frame_w), min(h, avail.height() - frame_h)


def fit_on_screen(win) -> None:
    """Shrink and move ``win`` so that it lies inside the free area of its screen (not offscreen)."""
    from PyQt5 import QtGui
    app = QtGui.QGuiApplication.instance()
    if app is None or app.platformName() == "offscreen":
        return
    screen = app.screenAt(win.frameGeometry().center()) or app.primaryScreen()
    if screen is None:
        return
    avail = screen.availableGeometry()
    frame = win.frameGeometry()
    extra_w, extra_h = frame.width() - win.width(), frame.height() - win.height()
    w = min(win.width(), avail.width() - extra_w)
    h = min(win.height(), avail.height() - extra_h)
    if (w, h) != (win.width(), win.height()):
        win.resize(w, h)
    frame = win.frameGeometry()
    x = min(max(frame.x(), avail.x()), avail.right() - frame.width() + 1)
    y = min(max(frame.y(), avail.y()), avail.bottom() - frame.height() + 1)
    if (x, y) != (frame.x(), frame.y()):
        win.move(x, y)


#: the dynamic property of a QSettings whose file was refused: why (see :func:`make_settings`)
REFUSED_PROPERTY = "cnnvis_refused"


def settings_file_problem(path) -> str | None:
    """Why ``path`` cannot hold the settings, or None (a regular file, or none yet).

    Qt reads a settings file at once and saves by writing a new file and renaming it over
    the path: a FIFO would hang the start (the read waits for a writer), a device node
    (``/dev/...``) or a socket would be replaced by a regular file at the first save, a
    folder cannot be read.  Symbolic links are followed: their target is what counts.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None                     # a first start: Qt creates it at the first save
    except OSError as e:
        return f"the settings file {path} cannot be opened ({e.strerror or e})"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode)
            else "a character device" if stat.S_ISCHR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    return f"the settings file {path} is {kind}, not a regular file"


def _native_settings_files() -> list:
    """The files ``QSettings(ORG, APP)`` reads on Linux and the BSDs: the user's, then the system's."""
    if sys.platform.startswith(("win", "darwin")):
        return []                       # the registry / property lists: not files Qt reads this way
    user = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.GenericConfigLocation)
    system = QtCore.QLibraryInfo.location(QtCore.QLibraryInfo.SettingsPath)
    out = []
    for base in dict.fromkeys(p for p in (user, system, "/etc/xdg") if p):
        out += [os.path.join(base, ORG, f"{APP}.conf"), os.path.join(base, f"{ORG}.conf")]
    return out


def make_settings() -> QtCore.QSettings:
    """QSettings of the app; ``$CNNVIS_GUI_SETTINGS`` (an .ini path) redirects them (tests).

    A settings path that is not a regular file (:func:`settings_file_problem`) is neither read
    nor written: the window starts with the default settings on an empty scratch store, and
    :func:`refused_reason` says why (the window shows it, and saves nothing).
    """
    path = os.environ.get(SETTINGS_ENV)
    for candidate in [path] if path else _native_settings_files():
        problem = settings_file_problem(candidate)
        if problem is not None:
            return _scratch_settings(problem)
    if path:
        return QtCore.QSettings(path, QtCore.QSettings.IniFormat)
    return QtCore.QSettings(ORG, APP)


def _scratch_settings(problem: str) -> QtCore.QSettings:
    """An empty settings store in a private temporary folder (removed at exit), marked as refused."""
    import atexit
    import shutil
    import tempfile
    folder = tempfile.mkdtemp(prefix="cnnvis-gui-settings-")
    atexit.register(shutil.rmtree, folder, True)
    st = QtCore.QSettings(os.path.join(folder, "unused.ini"), QtCore.QSettings.IniFormat)
    st.setProperty(REFUSED_PROPERTY, f"{problem}: it was not read and nothing is saved to it; "
                                     f"starting with the default settings")
    return st


def refused_reason(settings) -> str | None:
    """Why ``settings`` are a scratch store (their file was refused), or None."""
    reason = settings.property(REFUSED_PROPERTY) if settings is not None else None
    return str(reason) if reason else None


class Persistence:
    """Reads the window's settings at start, writes them back at close.

    ``remember=False`` (automation runs: ``--screenshot``, ``--quit-after``): the window
    starts at its default size and view and writes nothing back, so such a run neither
    depends on nor changes what the user's next normal start looks like.
    """

    def __init__(self, state, settings: QtCore.QSettings, remember: bool = True):
        self.state = state
        self.settings = settings
        self.recent_menu = None                    # File → Recent models (build_menus sets it)
        self.open_recent = lambda what, arch: None  # what an entry of it does (the window wires the session's)
        self.refused = refused_reason(settings)    # the settings file is not a regular file: said at start
        self.writable = remember and self.refused is None

    # ---- the last folder of a file dialog
    def last_dir(self) -> str:
        return str(self.settings.value("last_dir", str(Path.home())))

    def set_last_dir(self, p) -> None:
        self.set("last_dir", str(Path(p).parent))

    def set(self, key, value) -> None:
        """Write one value (nothing when this run must not touch the user's settings)."""
        if self.writable:
            self.settings.setValue(key, value)

    def sync(self) -> None:
        if self.writable:
            self.settings.sync()

    # ---- recent models ("what|arch" entries, newest first)
    def remember_model(self, what, arch=None) -> None:
        if not what:
            return
        entry = f"{what}|{arch or ''}"
        recent = [r for r in self.recent() if r != entry]
        recent.insert(0, entry)
        self.set("recent_models", recent[:8])
        self.set("last_model", entry)
        self.fill_recent()

    def recent(self) -> list:
        v = self.settings.value("recent_models", [])
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)):
            return []                       # a settings file of another shape: no recent models
        return [r for r in v if isinstance(r, str) and r]

    def fill_recent(self) -> None:
        menu = self.recent_menu
        if menu is None:
            return
        menu.clear()
        for entry in self.recent():
            what, _, arch = entry.partition("|")
            a = menu.addAction(_recent_label(what, arch))
            a.triggered.connect(lambda _=False, w=what, ar=arch: self.open_recent(w, ar))
        menu.setEnabled(bool(self.recent()))

    # ---- the window: geometry, docks, view choices
    def restore(self, win) -> None:
        """The geometry and docks of the main window ``win``, the view choices into the state (the
        window then shows them in its controls)."""
        st = self.settings
        if not self.writable:
            win.resize(*default_size())
            return
        g = st.value("geometry")
        if g is not None:
            win.restoreGeometry(g)         # a size saved on a bigger screen is fitted when shown
        else:
            win.resize(*default_size())
        ws = st.value("window_state")
        if ws is not None:
            win.restoreState(ws)
        upd = {}
        for k in PERSISTED:
            v = st.value(f"view/{k}")
            if v is None:
                continue
            cur = getattr(self.state, k)
            if isinstance(cur, bool):
                v = v in (True, "true", "1", 1)
            elif isinstance(cur, (int, float)):   # an .ini file gives strings back
                try:
                    v = type(cur)(v)
                except (TypeError, ValueError):
                    continue
            elif k in _CHOICES and v not in _CHOICES[k]:
                continue                          # a choice this version does not have
            if k == "percentile" and not 0.0 < v <= 100.0:
                continue
            upd[k] = v
        try:
            self.state.update(**upd)
        except Exception:  # noqa: BLE001
            pass

    def save(self, win, atlas_dock=None) -> None:
        """The geometry and docks of the main window ``win``, the view choices, whether the atlas dock
        ``atlas_dock`` (None: never opened) is shown."""
        if not self.writable:
            return
        st = self.settings
        st.setValue("geometry", win.saveGeometry())
        st.setValue("window_state", win.saveState())
        for k in PERSISTED:
            st.setValue(f"view/{k}", getattr(self.state, k))
        if atlas_dock is not None:
            st.setValue("atlas/dock_visible", not atlas_dock.isHidden())
        st.sync()


def _recent_label(what: str, arch: str) -> str:
    """A Recent-menu entry: ``resnet50 · IMAGENET1K_V2 (pretrained)``, ``file.pth  (arch)``, ``demo:shapes``."""
    from ..options import PRETRAINED_ENTRY
    if what.startswith(PRETRAINED_ENTRY) and arch:
        return f"{arch} · {what[len(PRETRAINED_ENTRY):]} (pretrained)"
    return what + (f"  ({arch})" if arch else "")
