"""One-line messages for people from exceptions, without Keras's or TensorFlow's wrapping.

Keras re-raises an error from inside a layer as ``Exception encountered when
calling X.call(). <ANSI bold>original<ANSI reset> Arguments received by ...``;
TensorFlow reports an error raised in a ``tf.data`` / ``py_function`` as an
``OpError`` whose text holds the original ``Name: message`` line among node
names and a traceback. :func:`user_message` recovers the original message.
"""

from __future__ import annotations

import os
import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_KERAS_WRAPPER = re.compile(r"Exception encountered when calling [^\n]*\n\s*\n(?P<inner>.*?)"
                            r"(?:\n\s*\nArguments received by.*)?$", re.S)
# "ImageFileError: image file a.png could not be decoded" inside an OpError's text.
_INNER_ERROR = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?(?P<name>[A-Za-z_]\w*(?:Error|Exception)): "
                          r"(?P<message>.+)$", re.M)
# Lines of an OpError's text that are graph detail, not the error.
_GRAPH_DETAIL = ("Graph execution error", "Detected at node", "<stack traces", "Traceback",
                 " ", "\t")


def inner_error(e: BaseException) -> tuple[str, str] | None:
    """``(class name, message)`` of a Python error that a TensorFlow ``OpError`` carries.

    An exception raised inside ``tf.data`` (``py_function``) reaches the caller
    as an ``OpError``; its text holds the original ``Name: message`` line.
    """
    text = getattr(e, "message", None)
    if not isinstance(text, str):
        return None
    for m in _INNER_ERROR.finditer(_ANSI.sub("", text)):
        return m.group("name"), m.group("message").strip()
    return None


def _os_error_message(e: OSError) -> str | None:
    if e.filename is None:
        return e.strerror or None
    name = os.fsdecode(e.filename) if isinstance(e.filename, (str, bytes)) else str(e.filename)
    if isinstance(e, FileExistsError):
        return f"{name} already exists (a {'folder' if os.path.isdir(name) else 'file'})"
    what = (e.strerror or str(e)).lower()
    if e.filename2 is not None:
        return f"{name} -> {os.fsdecode(e.filename2)}: {what}"
    return f"{name}: {what}"


def user_message(e: BaseException) -> str:
    """The message of ``e`` as a person should read it: no wrapper text, colour codes or errno.

    Example:
        >>> user_message(FileExistsError(17, "File exists", "out.png"))
        'out.png already exists (a file)'
    """
    if isinstance(e, OSError) and e.errno is not None:
        text = _os_error_message(e)
        if text:
            return text
    inner = inner_error(e)
    if inner is not None:
        return inner[1]
    op_text = getattr(e, "message", None)  # a TensorFlow OpError
    text = _ANSI.sub("", op_text if isinstance(op_text, str) else str(e)).strip()
    while (m := _KERAS_WRAPPER.match(text)) is not None:
        text = m.group("inner").strip()
    if isinstance(op_text, str):
        lines = [line for line in text.splitlines()
                 if line.strip() and not line.startswith(_GRAPH_DETAIL)]
        text = lines[0].strip() if lines else text
    return text or type(e).__name__
