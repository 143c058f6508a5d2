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
                if issubclass(obj, Exception) and obj.__module__.split(".")[0] in PACKAGES:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


EXCEPTIONS = _project_exceptions()


def _sample_error(cls: type) -> BaseException:
    """An instance built through the class's own constructor, each argument a distinct value of the kind its
    annotation or default suggests (a number, a list for a sequence, else a string)."""
    kwargs = {}
    for i, (name, param) in enumerate(inspect.signature(cls.__init__).parameters.items()):
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default, note = param.default, str(param.annotation)
        if note in ("int", "float", "<class 'int'>", "<class 'float'>"):
            kwargs[name] = i + 7
        elif isinstance(default, (list, tuple)):
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


def test_a_storage_error_in_a_worker_is_reported_retryable_and_pickles(tmp_path, monkeypatch):
    """What an actor sends back when its disk is full: a report naming ENOSPC, marked retryable (the
    driver runs the chunk again, then records the video failed), picklable. No Ray: the worker class alone."""
    import errno

    import numpy as np

    from model import embedded_checkpoint
    from tests.encoded_videos import write_video
    from tests.videos import moving_shapes
    from workers.stream_worker import StreamWorker
    from workers.tasks import ChunkTask, ModelSpec
    from workers.video_source import probe_video
    from model import Prompt

    info = probe_video(str(write_video(tmp_path / "v.mp4", moving_shapes(6, 72, 96, seed=1))))
    worker = StreamWorker(ModelSpec("synthetic-tiny", embedded_checkpoint("synthetic-tiny")), str(tmp_path / "out"))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(worker.output, "write_snapshot", full)
    task = ChunkTask("v", 0, 0, 0, 6, info, ((0, Prompt(1, points=np.array([[30.0, 30.0]]), labels=[1])),))
    (report,) = worker.run([task])
    back = pickle.loads(pickle.dumps(report))
    assert not back.ok and back.retryable and "No space left on device" in back.error, back
    assert 0 not in worker.states  # a half-written chunk's state is not reused
