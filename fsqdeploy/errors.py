"""The one exception type for user-facing failures.

Raise it with a message that names the component, what was wrong and what to do, e.g.
``FSQDeployError("data: folder 'x' does not exist. Note: pass folder:DIR with PNG/JPEG files")``.
The CLI prints it as one line on stderr and exits with code 2; anything else is a bug.
"""


class FSQDeployError(Exception):
    """A user error: bad input, a missing or corrupt file, an unavailable backend."""
