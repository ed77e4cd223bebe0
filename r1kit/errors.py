"""The one exception type that reaches the user as a message instead of a traceback."""


class R1kitError(Exception):
    """A problem the user can fix: the message names it, `hint` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg}\n  fix: {self.hint}" if self.hint else msg


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is torch running out of GPU or CPU memory."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc)
                                           or "out of memory" in str(exc).lower()))
