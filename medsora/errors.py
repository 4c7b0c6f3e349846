"""The one base class of medsora's own errors: bad input, files or settings, with the fix in the message.

The `medsora` command prints such an error as one line (`error: ...`, exit code 2) instead of a traceback;
`-v` shows the traceback. Each error also keeps the builtin base its callers may already catch.
"""


class MedsoraError(Exception):
    """An error of the user's input, files or settings; the message names the file or value and the fix."""
