"""The project's one exception family: every error we raise on purpose derives from PipelineError.

The CLI prints these as one line (the message names the file and the problem); anything else is a bug and
keeps its traceback.
"""


class PipelineError(Exception):
    """A problem with the user's input, data or settings, explained in the message."""
