"""Errors that mean "the input was wrong", raised before any work starts.

`BadInput` marks them: the command line prints such an error as one `error: ...` line (no traceback), while
anything else that goes wrong later keeps its traceback. They stay `ValueError` / `FileNotFoundError` for
Python callers.
"""

from __future__ import annotations


class BadInput(Exception):
    """Marker base: a bad argument, file or data set, detected before any work."""


class InputError(BadInput, ValueError):
    """A bad argument or data set."""


class InputFileError(BadInput, FileNotFoundError):
    """A file or folder that the arguments name does not exist."""


def as_bad_input(error: Exception) -> Exception:
    """The same message as a `BadInput` of the matching kind (for re-raising `from` the original)."""
    if isinstance(error, BadInput):
        return error
    if isinstance(error, FileNotFoundError):
        return InputFileError(str(error))
    return InputError(str(error))


def parse_dataclasses(parser, argv=None):
    """`parser.parse_args_into_dataclasses(args=argv)` of an `HfArgumentParser`; the `ValueError` with which it
    reports options it does not know becomes an `InputError` (argparse's own usage errors exit by themselves)."""
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as e:
        raise as_bad_input(e) from e


def parse_arguments(parser, argv=None):
    """The dataclasses of an `HfArgumentParser`, read from `argv` (default: the command line) with argparse's
    usage errors (usage line, `PROG: error: MESSAGE`, exit status 2).

    Two cases that `parse_args_into_dataclasses` would raise as `ValueError` stay usage errors, as with a plain
    `argparse` parser: an option the parser does not know (`unrecognized arguments: ...`, argparse's wording), and
    a `ValueError` of a dataclass's `__post_init__`, which checks what one option cannot check alone (two options
    that exclude each other, a range that depends on another value). No `.args` file is read.
    """
    try:
        *outputs, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True,
                                                               look_for_args_file=False)
    except ValueError as e:
        parser.error(str(e))
    if unknown:
        parser.error("unrecognized arguments: " + " ".join(unknown))
    return tuple(outputs)
