"""Which format a concept folder is in: Broden (``index.csv``) or the simple one (``labels.csv``)."""
from __future__ import annotations

import os
from pathlib import Path

from .broden import open_broden
from .concepts import ConceptError, ConceptSet
from .folder import open_folder

__all__ = ["open_concepts"]


def open_concepts(path, categories=None) -> ConceptSet:
    """The concept set in folder ``path``: Broden (``index.csv``) or the simple format (``labels.csv``).

    ``categories`` (Broden) keeps only these categories, as NetDissect's ``CATEGORIES`` setting.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConceptError(f"--concepts: '{root}' is not a folder; give a folder with images/, masks/ and "
                           f"labels.csv, or a Broden folder (index.csv, label.csv).")
    if (root / "index.csv").is_file():
        return open_broden(root, categories)
    if (root / "labels.csv").is_file() or (root / "masks").is_dir() or (root / "images").is_dir():
        if categories:
            raise ConceptError("--category selects Broden categories; this is a simple concept folder "
                               "(labels.csv), which uses all its concepts.")
        return open_folder(root)
    try:
        empty = not any(os.scandir(root))
    except OSError:
        empty = False
    raise ConceptError(f"'{root}' is {'an empty folder' if empty else 'not a concept set'}: expected images/NAME.png "
                       f"with masks/NAME.png and labels.csv (id,name[,category]), or a Broden folder with index.csv "
                       f"and label.csv.")
