"""Typed errors; each carries the offending value."""


class SamstreamError(Exception):
    """Base of every error samstream raises on purpose."""


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
