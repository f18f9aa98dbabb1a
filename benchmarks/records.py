"""The benchmark record store: a JSON list of flat records, one file per study.

Every benchmark writes its measurements the same way:

- `load` reads a results file (a JSON list; an empty list when missing);
- `append` adds one record as soon as it is measured, atomically (a temporary
  file renamed over the results) and under a lock, so an interrupted run
  loses at most the record being measured and parallel runs can share a file;
- `Store` adds the resume logic: a record's key is the tuple of its
  ``fields``, and a run skips the records whose key is already stored;
- `command` is the line that reproduces a run, stored in each record and
  printed at the end;
- `stamp` is the metadata of a record (library version, commit, Keras
  version and backend) and `versions` the versions of chosen packages.

Example:
>>> store = Store("benchmarks/results/study.json", ("model", "target"))
>>> record = {"model": "lenet5", "target": 0.9}
>>> if not store.has(record):
...     store.add({**record, "accuracy": 0.98, **stamp(), "command": cmd})
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(path: str | Path) -> list[dict]:
    """The records of a results file.

    Args:
        path: A JSON file holding a list of records.

    Returns:
        The list (empty if the file does not exist).

    Raises:
        ValueError: If the file holds something other than a JSON list.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(
            f"Expected a JSON list of records in {path}. Received: "
            f"{type(records).__name__}"
        )
    return records


def append(
    path: str | Path,
    record: dict,
    replaces: Callable[[dict], bool] | None = None,
) -> None:
    """Appends one record to a results file, atomically.

    The file is rewritten through a temporary file renamed over it, under a
    lock file beside it (where the platform has `fcntl`), so concurrent
    writers do not lose each other's records.

    Args:
        path: The results file; created, with its folder, when missing.
        record: A JSON-serializable dict.
        replaces: Optional predicate; stored records for which it is true are
            dropped (a re-measured cell replaces its old record).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # no advisory locks on this platform
            pass
        records = [r for r in load(path) if replaces is None or not replaces(r)]
        records.append(record)
        tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(records, indent=1) + "\n")
        tmp.replace(path)


def _hashable(value):
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def record_key(record: dict, fields: Sequence[str]) -> tuple:
    """The values of ``fields`` in ``record`` (None when absent), hashable.

    Lists and dicts become tuples, so a key read back from JSON equals the key
    of the record before it was written.
    """
    return tuple(_hashable(record.get(field)) for field in fields)


class Store:
    """A results file whose records are keyed by some of their fields.

    A record marked ``"superseded": true`` (measured by code or settings that
    have since changed) stays in the file for the history, but no longer
    counts as measured: `keys` and `has` leave it out, so a resumed run
    measures its key again.

    Args:
        path: The results file (see `load` and `append`).
        fields: The fields that identify a measurement: a record with the
            same values of all of them is the same measurement.
    """

    def __init__(self, path: str | Path, fields: Sequence[str]):
        self.path = Path(path)
        self.fields = tuple(fields)

    def records(self) -> list[dict]:
        """The stored records, read now."""
        return load(self.path)

    def key(self, record: dict) -> tuple:
        """The key of ``record`` (`record_key` of the store's fields)."""
        return record_key(record, self.fields)

    def keys(self, where: Callable[[dict], bool] | None = None) -> set[tuple]:
        """The keys of the stored records that are not superseded (and that
        ``where`` accepts, if given)."""
        return {
            self.key(r)
            for r in self.records()
            if not r.get("superseded") and (where is None or where(r))
        }

    def has(self, record: dict) -> bool:
        """Whether a record with the key of ``record`` is stored."""
        return self.key(record) in self.keys()

    def add(self, record: dict, replace: bool = False) -> None:
        """Appends ``record`` now; with ``replace``, drops stored ones of its key."""
        key = self.key(record)
        append(self.path, record, (lambda r: self.key(r) == key) if replace else None)


def command(script: str, argv: Iterable[str], module: bool = False) -> str:
    """The shell line that reproduces a run of ``benchmarks/<script>.py``.

    Args:
        script: The benchmark's name, such as ``"zoo"``.
        argv: Its command-line arguments.
        module: Whether it runs as ``python -m benchmarks.<script>`` (else as
            ``python benchmarks/<script>.py``).

    Returns:
        The quoted command line.
    """
    head = ["-m", f"benchmarks.{script}"] if module else [f"benchmarks/{script}.py"]
    return shlex.join(["python", *head, *argv])


def commit() -> str | None:
    """The repository's short commit, ``+dirty`` if the library has changes.

    Returns:
        None outside a git checkout.
    """
    try:
        head, dirty = (
            subprocess.run(
                ["git", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            for args in (
                ("rev-parse", "--short", "HEAD"),
                ("status", "--porcelain", "--", "tf_reweight", "tflite_export"),
            )
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def stamp() -> dict:
    """What produced a record: library version, commit, Keras and its backend.

    Returns:
        ``{"tf_reweight", "commit", "keras", "backend"}``.
    """
    import keras

    import tf_reweight

    return {
        "tf_reweight": tf_reweight.__version__,
        "commit": commit(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }


def versions(*distributions: str) -> dict:
    """The Python version and those of the installed ``distributions``.

    Args:
        *distributions: Package names as installed (``"ai-edge-litert"``);
            ones that are not installed are left out.

    Returns:
        ``{"python": ..., name: version, ...}``.
    """
    found = {"python": sys.version.split()[0]}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def tf_versions() -> dict:
    """The ``versions`` of a record measured on TensorFlow.

    The field of the frontier, robust and overhead records: Python,
    TensorFlow, Keras, NumPy and this library.

    Returns:
        ``{"python", "tensorflow", "keras", "numpy", "tf_reweight"}``.
    """
    import tf_reweight

    return {
        **versions("tensorflow", "keras", "numpy"),
        "tf_reweight": tf_reweight.__version__,
    }


def number_or_auto(text: str) -> float | str:
    """An argparse type for a penalty or eps: a number, or ``"auto"``."""
    return text if text == "auto" else float(text)


def label(value) -> str:
    """A penalty or eps for tables and plots: ``1e-05``, or ``auto``."""
    return value if isinstance(value, str) else f"{value:g}"
