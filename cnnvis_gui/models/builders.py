"""Build an architecture from its source: torchvision, timm, ``package.module:factory``, ``net.py:Net``.

The caller decides whether a source may be built (see :mod:`.trust`); this module only builds.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
import threading
import uuid
from pathlib import Path
from typing import Callable

from torch import nn

from .errors import ModelLoadError, _short

__all__ = ["build_arch"]


def build_arch(arch, **kwargs) -> nn.Module:
    """Instantiate an architecture source (see :func:`load`)."""
    if isinstance(arch, nn.Module):
        return arch
    if callable(arch):
        return _call_factory(arch, kwargs, getattr(arch, "__name__", repr(arch)))
    if not isinstance(arch, str) or not arch.strip():
        raise ModelLoadError(f"arch must be a string like 'torchvision:resnet18' or a callable, got {arch!r}.")
    arch = arch.strip()
    head, sep, name = arch.rpartition(":")
    if not sep or not head or not name:
        raise ModelLoadError(f"architecture {arch!r} is not understood: use 'torchvision:NAME', 'timm:NAME', "
                             f"'package.module:factory' or 'path/to/net.py:ClassName'.")
    if head == "torchvision":
        return _torchvision(name, kwargs)
    if head == "timm":
        return _timm(name, kwargs)
    if head.endswith(".py") or "/" in head or "\\" in head:
        return _from_file(Path(head).expanduser(), name, kwargs, arch)
    return _from_module(head, name, kwargs, arch)


def _torchvision(name: str, kwargs: dict) -> nn.Module:
    try:
        import torchvision.models as tvm
    except ImportError:
        raise ModelLoadError("arch 'torchvision:...' needs torchvision, which is not installed: "
                             "pip install torchvision") from None
    available = list(tvm.list_models())
    if name not in available:
        near = difflib.get_close_matches(name, available, n=5)
        raise ModelLoadError(f"torchvision has no model {name!r}" + (f"; did you mean {', '.join(near)}?" if near
                             else f"; available: {_short(sorted(available), 12)}"))
    kwargs = dict(kwargs)
    kwargs.setdefault("weights", None)
    try:
        return tvm.get_model(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"torchvision:{name}({_kw(kwargs)}) failed: {e}") from None


def _timm(name: str, kwargs: dict) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ModelLoadError(f"arch 'timm:{name}' needs the timm package, which is not installed: pip install timm"
                             ) from None
    kwargs = dict(kwargs)
    kwargs.setdefault("pretrained", False)
    try:
        return timm.create_model(name, **kwargs)
    except Exception as e:
        near = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ModelLoadError(f"timm:{name}({_kw(kwargs)}) failed: {e}" + (f"; did you mean {', '.join(near)}?"
                                                                            if near else "")) from None


def _from_module(modname: str, attr: str, kwargs: dict, arch: str) -> nn.Module:
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        raise ModelLoadError(f"architecture {arch!r}: module {modname!r} cannot be imported ({e}); check the name and "
                             f"that its package is installed or on sys.path (for a file use 'path/to/net.py:{attr}')."
                             ) from None
    except SyntaxError as e:
        raise ModelLoadError(_syntax_msg(arch, e)) from None
    except Exception as e:
        raise ModelLoadError(f"architecture {arch!r}: importing {modname!r} failed: {type(e).__name__}: {e}") from None
    return _call_factory(_get_attr(mod, attr, arch), kwargs, arch)


_IMPORT_LOCK = threading.RLock()


def _local_module_names(folder: Path) -> set:
    """Top-level module names a folder on sys.path provides: ``x.py`` files and ``x/`` packages."""
    names = set()
    try:
        for p in folder.iterdir():
            if p.suffix == ".py" and p.stem.isidentifier():
                names.add(p.stem)
            elif p.is_dir() and p.name.isidentifier() and (p / "__init__.py").is_file():
                names.add(p.name)
    except OSError:
        pass
    std = getattr(sys, "stdlib_module_names", ())
    return {n for n in names if n not in std and n not in sys.builtin_module_names}


def _package_root(folder: Path):
    """For a file in a package (its folder has ``__init__.py``), the outermost package folder, else None."""
    if not (folder / "__init__.py").is_file():
        return None
    root = folder
    while (root.parent / "__init__.py").is_file() and root.parent != root and root.parent.name.isidentifier():
        root = root.parent
    return root


def _from_file(file: Path, attr: str, kwargs: dict, arch: str) -> nn.Module:
    """Import an architecture file in isolation and build it.

    The file's folder (for a file inside a package: the folder above the package root) goes
    first on ``sys.path`` for the duration of the load; modules of other projects that carry
    the name of one of that folder's modules (``blocks``, ``utils``...) are set aside first and
    put back after, and the modules this load imported from the folder are dropped again, so two
    projects with the same helper names never see each other's code.
    """
    if not file.is_file():
        raise ModelLoadError(f"architecture {arch!r}: file {file} not found.")
    file = file.resolve()
    root = _package_root(file.parent)
    if root is not None:   # proj/pkg/model.py with proj/pkg/__init__.py: import "pkg.model" from proj/
        base = root.parent
        parts = list(file.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if not all(p.isidentifier() for p in parts):
            root = None
    if root is None:
        base = file.parent
    local = _local_module_names(base)
    if root is not None:
        local.add(root.name)

    def ours(name: str) -> bool:
        return name.split(".", 1)[0] in local

    def elsewhere(top: str) -> bool:   # a module of that name, but not from this folder
        m = sys.modules.get(top)
        if m is None:
            return True
        locs = [getattr(m, "__file__", None)] + list(getattr(m, "__path__", None) or [])
        for loc in locs:
            if not loc:
                continue
            try:
                p = Path(loc).resolve()
            except (OSError, RuntimeError):
                continue
            if p in (base / f"{top}.py", base / top / "__init__.py", base / top):
                return False
        return True

    with _IMPORT_LOCK:
        foreign = {t for t in local if t in sys.modules and elsewhere(t)}
        set_aside = {n: m for n, m in sys.modules.items() if n.split(".", 1)[0] in foreign}
        for n in set_aside:
            del sys.modules[n]
        before = set(sys.modules)
        sys.path.insert(0, str(base))
        importlib.invalidate_caches()
        modname = None
        ok = False
        try:
            if root is not None:
                modname = ".".join(parts)
                try:
                    mod = importlib.import_module(modname)
                except SyntaxError as e:
                    raise ModelLoadError(_syntax_msg(arch, e)) from None
                except Exception as e:
                    raise ModelLoadError(f"architecture {arch!r}: importing {file.name} as {modname} (package root "
                                         f"{root}) failed: {type(e).__name__}: {e}") from None
            else:
                modname = f"_cnnvis_user_{file.stem}_{uuid.uuid4().hex[:8]}"
                spec = importlib.util.spec_from_file_location(modname, file)
                if spec is None or spec.loader is None:
                    raise ModelLoadError(f"architecture {arch!r}: {file} cannot be imported as Python.")
                mod = importlib.util.module_from_spec(spec)
                sys.modules[modname] = mod   # dataclasses / pickling look the module up by name
                try:
                    spec.loader.exec_module(mod)
                except SyntaxError as e:
                    raise ModelLoadError(_syntax_msg(arch, e)) from None
                except Exception as e:
                    raise ModelLoadError(f"architecture {arch!r}: running {file.name} failed: "
                                         f"{type(e).__name__}: {e}") from None
            model = _call_factory(_get_attr(mod, attr, arch), kwargs, arch)
            ok = True
            return model
        finally:
            try:
                if sys.path and sys.path[0] == str(base):
                    del sys.path[0]
                else:
                    sys.path.remove(str(base))
            except ValueError:
                pass
            for n in [n for n in sys.modules if n not in before and (ours(n) or (n == modname and not ok))]:
                sys.modules.pop(n, None)
            for n, m in set_aside.items():
                sys.modules.setdefault(n, m)


def _syntax_msg(arch: str, e: SyntaxError) -> str:
    where = f"{Path(e.filename).name if e.filename else '?'}, line {e.lineno}"
    line = f": {e.text.strip()!r}" if e.text else ""
    return f"architecture {arch!r}: syntax error in {where}{line} ({e.msg}); fix the file and load again."


def _get_attr(mod, attr: str, arch: str):
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n, v in vars(mod).items() if not n.startswith("_") and callable(v)
                     and (isinstance(v, type) and issubclass(v, nn.Module) or not isinstance(v, type))
                     and getattr(v, "__module__", None) == mod.__name__]
            near = difflib.get_close_matches(attr, names, n=3)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise ModelLoadError(f"architecture {arch!r}: {mod.__name__.split('_cnnvis_user_')[-1]} has no {attr!r}; "
                                 f"{hint}defined there: {_short(sorted(names), 12) if names else 'nothing callable'}.")
        obj = getattr(obj, part)
    return obj


def _call_factory(fn: Callable, kwargs: dict, what: str) -> nn.Module:
    if not callable(fn):
        raise ModelLoadError(f"architecture {what!r} is a {type(fn).__name__}, not a class or function.")
    try:
        model = fn(**kwargs)
    except TypeError as e:
        raise ModelLoadError(f"architecture {what!r}: calling it with ({_kw(kwargs)}) failed: {e}") from None
    except Exception as e:
        raise ModelLoadError(f"architecture {what!r}: building the model failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"architecture {what!r} returned a {type(model).__name__}, not a torch.nn.Module.")
    return model


def _kw(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
