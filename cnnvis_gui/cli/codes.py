"""The ``cnnvis`` program's name and exit codes, shared by its sub-commands."""

__all__ = ["PROG", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE"]

PROG = "cnnvis"
EXIT_OK = 0
EXIT_FAILURE = 1      #: the run started but failed (model forward raised, disk full...)
EXIT_USAGE = 2        #: a bad argument: unknown layer, unit out of range, missing file...
