"""The one exception type of the project, and autograd's in-place error turned into it."""
from contextlib import contextmanager


class CnnvisError(ValueError):
    """A problem the user can fix: bad layer name, unit out of range, bad file...

    Subclasses ``ValueError`` so callers that only know the standard library can
    still catch it. The message always says what is wrong and what to do.
    """


_STALE_MARK = "modified by an inplace operation"


def stale_saved_tensor(error: BaseException) -> str | None:
    """What autograd's "modified by an inplace operation" error names (``"output 0 of Elu1"``, or
    ``"a saved tensor"``), or None when ``error`` is another error."""
    text = str(error)
    if _STALE_MARK not in text:
        return None
    at = text.find("which is ")
    return text[at + len("which is "):].split(",")[0] if at >= 0 else "a saved tensor"


def not_differentiable(what: str) -> CnnvisError:
    """The one-line error for a model that changes in place a tensor its own backward needs."""
    return CnnvisError(f"the model changes in place a tensor its backward needs ({what}, changed after the "
                       f"forward saved it), so no gradient reaches the input (saliency, deconvnet, guided, "
                       f"CAMs); make that in-place operation out of place (inplace=False) -- activations "
                       f"are unaffected")


@contextmanager
def backward_errors():
    """Around a backward: autograd's "modified by an inplace operation" error becomes the one-line
    :func:`not_differentiable` error; every other error passes unchanged."""
    try:
        yield
    except RuntimeError as e:
        what = stale_saved_tensor(e)
        if what is None:
            raise
        raise not_differentiable(what) from None


def opencv_reason(error: BaseException) -> str:
    """What a ``cv2.error`` says, without OpenCV's version, source path and assertion code:
    ``"pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'"``."""
    text = str(error).strip()
    at = text.find(") ", text.find("error: (")) if "error: (" in text else -1
    why = (text[at + 2:] if at >= 0 else text).strip()
    return why.splitlines()[0] if why else type(error).__name__


def one_line(error: BaseException) -> str:
    """Any exception as the text of one ``prog: error: ...`` line (a multi-line message of ours keeps its
    lines; the front end indents them).

    A :class:`CnnvisError` is already written for the user: its message as it is.  Anything else
    is a failure nobody foresaw, so it is named by its type, with a pointer to ``--traceback``;
    running out of memory, nesting too deep to read and OpenCV's own errors are said in words.
    """
    if isinstance(error, CnnvisError):
        return str(error).strip() or type(error).__name__
    text = str(error).strip()
    name = type(error).__name__
    if isinstance(error, MemoryError):
        return ("out of memory" + (f" ({text})" if text else "") + ": the input or an option asks for more memory "
                "than this machine has; use smaller images, fewer units or a smaller --batch-size")
    if isinstance(error, RecursionError):
        return "an input is nested too deeply to read (RecursionError); it is not a file of ours"
    if type(error).__module__.startswith("cv2") or name == "error" and "OpenCV" in text:
        return f"OpenCV could not process the input: {opencv_reason(error)}"
    first = text.splitlines()[0] if text else ""
    if isinstance(error, KeyError) and first:
        first = f"missing entry {first}"
    return f"{name}: {first} (run with --traceback for details)" if first else \
        f"{name} (run with --traceback for details)"
