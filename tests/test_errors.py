"""Every exception type the project defines crosses a process boundary intact (Ray pickles an actor's error
to the driver): found by walking the packages, so a new one cannot slip by."""

import importlib
import inspect
import pickle
import pkgutil
from pathlib import Path

import pytest

from model.errors import SamstreamError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "workers", "cluster", "jobs")


def _project_exceptions() -> list[type]:
    found = {}
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}."):
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__.split(".")[0] in PACKAGES:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


EXCEPTIONS = _project_exceptions()


def _sample_error(cls: type) -> BaseException:
    """An instance built through the class's own constructor, each argument a distinct value of the kind its
    default suggests (a list for a sequence, a number for a number, else a string)."""
    kwargs = {}
    for i, (name, param) in enumerate(inspect.signature(cls.__init__).parameters.items()):
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = param.default
        if isinstance(default, (list, tuple)):
            kwargs[name] = [f"item {i}"]
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            kwargs[name] = type(default)(i + 7)
        else:
            kwargs[name] = f"value {i} of {name}"
    return cls(**kwargs)


def test_the_walk_finds_the_known_errors():
    names = {c.__name__ for c in EXCEPTIONS}
    assert {"CheckpointError", "MaskletWriteError", "VideoError", "ManifestError", "PromptBoundsError",
            "DecodeError", "UnknownPresetError"} <= names, names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda c: c.__qualname__)
def test_every_error_round_trips_pickle(cls):
    assert issubclass(cls, SamstreamError), f"{cls.__qualname__} must derive from SamstreamError"
    error = _sample_error(cls)
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls
    assert str(back) == str(error) and back.args == error.args
    assert vars(back) == vars(error)
