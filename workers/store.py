"""A run's storage: files under one fsspec URL, every write all-or-nothing.

On a local filesystem a hidden temp file in the same directory is fsynced and renamed over the target; on
object stores the whole file is built in memory and PUT in one call (a buffered fsspec file commits on close
even after an exception, leaving a partial object). The output layout on top of this is workers/output.py.
"""

from __future__ import annotations

import os
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .masklets import MaskletWriteError, OutputPathError


def check_relpath(relative_path: str) -> str:
    """`relative_path` when it stays inside the output: no '.', '..', empty segments or backslashes."""
    parts = relative_path.split("/") if isinstance(relative_path, str) else [""]
    if any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise OutputPathError(f"output path must be relative, without '.', '..' or empty segments: "
                              f"{relative_path!r}", relative_path)
    return relative_path


def atomic_local_write(path: str, data: bytes) -> None:
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    # Hidden (readers skip '.' names) and not '*.parquet' (no glob matches it) while it is incomplete.
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must not publish a file whose bytes are not on disk
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class Store:
    """Files under one fsspec URL. `url` never carries storage options or URL credentials."""

    def __init__(self, out_url: str, storage_options: dict | None = None):
        if not isinstance(out_url, str) or not out_url.strip():
            raise OutputPathError(f"out_url must be a non-empty URL, got {out_url!r}", out_url)
        self._fs, root = fsspec.core.url_to_fs(out_url, **(storage_options or {}))
        self.root = root.rstrip("/")
        self.local = isinstance(self._fs, LocalFileSystem)
        self.url = self.root if self.local else self._fs.unstrip_protocol(self.root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @property
    def filesystem(self) -> fsspec.AbstractFileSystem:
        return self._fs

    def path(self, relative_path: str) -> str:
        return f"{self.root}/{check_relpath(relative_path)}"

    def fresh(self, relative_path: str) -> str:
        """The path, with the filesystem's cached listings dropped: other processes (the actors) write here,
        and s3fs would otherwise answer from a listing taken before they did."""
        self._fs.invalidate_cache()  # all of it: a path's entry alone would leave its children's listings
        return self.path(relative_path)

    def write_bytes(self, relative_path: str, data: bytes) -> str:
        """Write (or replace) a file atomically; returns its URL. Raises MaskletWriteError naming it."""
        path = self.path(relative_path)
        try:
            if self.local:
                atomic_local_write(path, bytes(data))
            else:
                self._fs.pipe(path, bytes(data))  # one PUT: object stores only publish complete objects
        except Exception as e:
            raise MaskletWriteError(f"cannot write {self.url}/{relative_path}: {type(e).__name__}: {e}",
                                    f"{self.url}/{relative_path}") from e
        return f"{self.url}/{relative_path}"

    def read_bytes(self, relative_path: str) -> bytes:
        return self._fs.cat_file(self.fresh(relative_path))

    def exists(self, relative_path: str) -> bool:
        return self._fs.exists(self.fresh(relative_path))

    def names(self, relative_dir: str) -> list[str]:
        """Names of the entries of a folder (none when it does not exist)."""
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self._fs.ls(self.fresh(relative_dir),
                                                                                detail=False))
        except FileNotFoundError:
            return []

    def remove(self, relative_path: str) -> None:
        """Delete a file or a whole folder; absent is fine."""
        path = self.fresh(relative_path)
        try:
            self._fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
