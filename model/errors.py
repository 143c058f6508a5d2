"""Typed errors; each carries the offending value."""


class SamstreamError(Exception):
    """Base of every error samstream raises on purpose.

    Errors cross process boundaries (Ray pickles an actor's exception to the driver). Exception's default
    pickling calls `cls(*self.args)`, which breaks for subclasses whose constructors take other arguments
    than their message; rebuilding from args and __dict__ without calling __init__ works for every subclass.
    """

    def __reduce__(self):
        return _rebuild_error, (type(self), self.args, self.__dict__)


def _rebuild_error(cls: type, args: tuple, state: dict) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class UnknownPresetError(SamstreamError, KeyError):
    def __init__(self, preset: str, known: list[str]):
        self.preset = preset
        super().__init__(f"unknown preset {preset!r}; known presets: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class CheckpointError(SamstreamError):
    """A checkpoint that cannot be read or does not fit the model."""

    def __init__(self, message: str, url: str, missing=(), unexpected=(), mismatched=()):
        self.url = url
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        super().__init__(message)


class PromptError(SamstreamError, ValueError):
    """A prompt that does not fit its frame; `object_id` and `value` name what is wrong."""

    def __init__(self, message: str, object_id=None, value=None):
        self.object_id = object_id
        self.value = value
        super().__init__(message)


class FrameError(SamstreamError, ValueError):
    """A frame of the wrong shape or dtype."""

    def __init__(self, message: str, value=None):
        self.value = value
        super().__init__(message)


class StateError(SamstreamError, ValueError):
    """A tracker state that cannot be used (corrupt snapshot, unknown object, wrong model)."""
