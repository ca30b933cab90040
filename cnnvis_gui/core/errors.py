"""The one exception type of the project."""


class CnnvisError(ValueError):
    """A problem the user can fix: bad layer name, unit out of range, bad file...

    Subclasses ``ValueError`` so callers that only know the standard library can
    still catch it. The message always says what is wrong and what to do.
    """
