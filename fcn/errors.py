"""The one base class of every error a user can cause.

A user's mistake (a path, a name, a file, a number) raises FcnError, or a subclass
naming its kind, with one line of text: what is wrong, naming the file, and what to
do. ``fcn.cli.run`` prints it as ``prog: message`` and exits 2. Pure Python,
imported by every layer of the project, importing nothing of it.
"""


class FcnError(Exception):
    """A mistake in what the user asked for or gave us; one line, exit code 2. The
    message is made one line here, whatever text it quotes (a library's exception
    may span several)."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


class UserError(FcnError):
    """A mistake in what the user asked for (a path, a name, a number); one line."""


class DataError(FcnError):
    """A problem with a dataset on disk, an image, or a data layer's parameters; one
    line, naming the file."""
