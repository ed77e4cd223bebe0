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


def failed_write(exc: BaseException, path=None) -> OSError | None:
    """torch's or safetensors' failure to write a file (a full disk: torch says "unexpected
    pos", "iostream error" or "file write failed", safetensors "I/O error ... (os error N)"),
    as the OSError Python's own writes raise, so that the run stops with r1kit's message and
    not a traceback: its errno where the message gives one; else ENOSPC where the disk of
    `path` (the file or directory written) has less than 64 MiB left, else EIO. None for
    any other error."""
    import errno
    import os
    import re
    import shutil
    from pathlib import Path

    text = str(exc)
    if type(exc).__name__ == "SafetensorError" and "I/O error" in text:
        found = re.search(r"\(os error (\d+)\)", text)
        code = int(found.group(1)) if found else None
    elif isinstance(exc, RuntimeError) and any(s in text for s in (
            "unexpected pos", "iostream error", "file write failed")):
        code = None
    else:
        return None
    if code is None and path is not None:
        existing = Path(path)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            code = errno.ENOSPC if shutil.disk_usage(existing).free < 64 << 20 else errno.EIO
        except OSError:
            code = errno.EIO
    code = code or errno.EIO
    return OSError(code, os.strerror(code), *([str(path)] if path is not None else []))


def looks_like_hub_id(ref: str) -> bool:
    """Whether `ref` has the shape of a Hugging Face Hub id ("Qwen/Qwen2.5-0.5B",
    "openai/gsm8k", "Qwen/Qwen2.5-0.5B@main")."""
    ref = str(ref)
    return ref.count("/") == 1 and not ref.startswith((".", "/", "~"))


def hub_note(ref: str, dataset: bool = False) -> str:
    """" (r1kit reads local …: download it first …)" where `ref` looks like a Hugging Face Hub
    id and is no local path (nor, for a model, in the Hugging Face cache); "" otherwise."""
    from pathlib import Path

    ref = str(ref)
    if not looks_like_hub_id(ref) or Path(ref.split("/")[0]).exists():  # (a local path's typo)
        return ""
    if dataset:
        return (" (r1kit reads local data files and the Hugging Face cache, and never "
                f"downloads: huggingface-cli download {ref} --repo-type dataset puts it in the "
                f"cache; then name one of its files or shards, hf://datasets/{ref}/PATH, e.g. "
                "PATH = main/train-*.parquet)")
    repo, _, revision = ref.partition("@")
    return (" (r1kit reads local checkpoint directories and the Hugging Face cache, and never "
            f"downloads: it is not in the cache; huggingface-cli download {repo}"
            + (f" --revision {revision}" if revision else "")
            + " puts it there, or give a directory of your own)")
