"""The one error type a user can cause and fix."""


class UserError(ValueError):
    """A mistake in the user's input; its message is one sentence naming the problem.

    The CLI prints the message on one line and exits 2, without a traceback.
    """
