"""The one exception type users see.

Commands catch `ProximityError` at the top and print its message as a single line
with a non-zero exit, so every message must say what to change (file, line, field
or flag), not just what went wrong.
"""


class ProximityError(Exception):
    """A problem with the user's input or environment, explained in one line."""
