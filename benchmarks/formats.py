"""Formats benchmark: LiteRT bytes per kept weight, and whether sparsity is faster.

Two parts, each appending one record per measurement to
``benchmarks/results/formats.json`` (resumable: a key already there is
skipped):

- ``bytes``: LeNet-5 (random weights: a file's bytes depend on where the
  zeros are, not on training) with every layer pruned to ``--sparsity``
  (``scope="layer"``) in each structure of ``--structures``, exported in
  LiteRT's sparse encoding as int8 and as float32. One record per weight
  tensor: the layer type, kept weights, stored value bytes, index bytes, the
  unit the converter stored (``block``: all ones for single values, ``1x16``
  for blocks) and the bytes each kept weight costs. This is what chooses the
  structures of ``structure="litert"``.
- ``xnnpack``: does LiteRT's XNNPACK run a sparse file faster? XNNPACK's
  sparse inference takes float32 graphs whose 1x1 convolutions are mostly
  zeros and are stored in the sparse encoding. `MobileNetV2` (``--size``) and
  an ideal MobileNet-style chain (3x3 stride-2 stem on 3 channels, depthwise
  and 1x1 convolutions, no padding ops) get their 1x1 convolutions pruned to
  ``--sparsity`` and are exported float32 sparse and dense; both files are
  timed in interleaved rounds (`tflite_export.measure_pair`). The record
  holds both latencies, their ratio and whether the processor has AVX, on
  which XNNPACK turns its sparse kernels off by design.

- ``shrink``: `MobileNetV2` and `MobileNetV3Small` (``--size``, random
  weights: latency does not depend on training) filter-pruned to
  ``--shrink-sparsity`` with the library's defaults, stripped and shrunk
  (`tflite_export.shrink`); the float32 shrunk file is timed against the
  dense model's file in interleaved rounds, and the record holds both
  latencies, the MAC ratio and the speed-up per MAC ratio.

Example:

```
python -m benchmarks.formats --part bytes
python -m benchmarks.formats --part xnnpack --size 96
```
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_reweight as tfr  # noqa: E402
from benchmarks import records  # noqa: E402
from tflite_export import export, measure_pair, shrink, shrink_report  # noqa: E402
from tflite_export.flatbuffer import read  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "formats.json"
KEY_FIELDS = ("part", "model", "structure", "sparsity", "quantization", "layer", "size")
STRUCTURES = "unstructured,block:16x1,block:4x1,block:1x16,filter,channel,litert"
L = keras.layers


def _cpu_has_avx() -> bool | None:
    """Whether the processor has AVX (None where /proc/cpuinfo is absent)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return None
    return "avx" in flags


def _weight_tensors(path: Path) -> list:
    return [t for t in read(path) if t.data and t.rank >= 2]


def _layer_rows(model: keras.Model, tensors: list) -> list[dict]:
    """One row per kernel: its layer, kept weights and what the file stores."""
    rows = []
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        kernel = keras.ops.convert_to_numpy(kernel)
        # Shapes are unique per layer in LeNet-5; LiteRT stores (out, ..., in).
        stored_shape = (kernel.shape[-1], *kernel.shape[:-1])
        matches = [t for t in tensors if sorted(t.shape) == sorted(stored_shape)]
        if len(matches) != 1:
            raise RuntimeError(f"No single stored tensor for layer {layer.name!r}")
        tensor = matches[0]
        kept = int(np.count_nonzero(kernel))
        stored = len(tensor.data) + tensor.index_bytes
        rows.append(
            {
                "layer": layer.name,
                "layer_type": type(layer).__name__,
                "weights": int(kernel.size),
                "kept": kept,
                "value_bytes": len(tensor.data),
                "index_bytes": tensor.index_bytes,
                "block": None if tensor.block is None else list(tensor.block),
                "bytes_per_kept": round(stored / max(kept, 1), 3),
            }
        )
    return rows


def part_bytes(args, store: records.Store, command: str) -> None:
    keras.utils.set_random_seed(args.seed)
    base = tfr.models.lenet5()
    x = np.random.default_rng(0).uniform(size=(64, 28, 28, 1)).astype("float32")
    for structure in args.structures.split(","):
        for quantization in ("int8", "none"):
            key = {
                "part": "bytes",
                "model": "lenet5",
                "structure": structure,
                "sparsity": args.sparsity,
                "quantization": quantization,
            }
            if store.has({**key, "layer": "conv1"}):
                print(f"[skip] {key}", flush=True)
                continue
            pruned = tfr.apply(base, structure, args.sparsity, scope="layer")
            tfr.hard_prune(pruned)
            plain = tfr.strip(pruned)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.tflite"
                export(
                    plain,
                    path,
                    quantization,
                    sparse=True,
                    representative_data=x,
                    verify=False,
                )
                rows = _layer_rows(plain, _weight_tensors(path))
                file_bytes = path.stat().st_size
            for row in rows:
                record = {
                    **key,
                    **row,
                    "file_bytes": file_bytes,
                    **records.stamp(),
                    "command": command,
                }
                store.add(record)
                print(
                    f"{structure:>12} {quantization:>4} {row['layer']:>6}: "
                    f"{row['kept']:>6} kept, {row['bytes_per_kept']:.3f} B each, "
                    f"unit {row['block']}",
                    flush=True,
                )


def _chain(size: int) -> keras.Model:
    """The MobileNet-style chain XNNPACK's sparse inference is made for."""
    inputs = keras.Input((size, size, 3))
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inputs)
    for k, channels in enumerate([64, 128, 128, 256, 256]):
        x = L.DepthwiseConv2D(3, strides=2 - k % 2, padding="same", activation="relu")(
            x
        )
        x = L.Conv2D(channels, 1, activation="relu")(x)
    outputs = L.Dense(10)(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="mobilenet_chain")


BUILDERS = {
    "mobilenet_v2": lambda size: keras.applications.MobileNetV2(
        input_shape=(size, size, 3), weights=None, classes=10
    ),
    "mobilenet_v3_small": lambda size: keras.applications.MobileNetV3Small(
        input_shape=(size, size, 3), weights=None, classes=10
    ),
    "mobilenet_chain": lambda size: _chain(size),
}


def _unrecorded(args, store: records.Store, key: dict, names):
    """``(name, key, model)`` of each model not yet recorded, random weights."""
    for name in names:
        if args.models and name not in args.models.split(","):
            continue
        record_key = {**key, "model": name, "size": args.size}
        if store.has(record_key):
            print(f"[skip] {record_key}", flush=True)
            continue
        keras.utils.set_random_seed(args.seed)
        yield name, record_key, BUILDERS[name](args.size)


def _timed_pair(args, first, second) -> tuple[tuple, tuple]:
    """Exports two ``(model, export options)`` as float32 and times them together.

    Returns:
        ``(delegate, median ms, file bytes)`` of each, timed in interleaved
        rounds (`tflite_export.measure_pair`).
    """
    sample = np.random.default_rng(0).uniform(size=(4, args.size, args.size, 3))
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(Path(folder) / f"{i}.tflite") for i in (0, 1)]
        for path, (model, options) in zip(paths, (first, second), strict=True):
            export(model, path, verify=False, **options)
        timings = measure_pair(
            *paths, sample.astype("float32"), rounds=args.rounds, runs=args.runs
        )
        return tuple(
            (*timing, Path(path).stat().st_size)
            for timing, path in zip(timings, paths, strict=True)
        )


def part_xnnpack(args, store: records.Store, command: str) -> None:
    common = {
        "part": "xnnpack",
        "structure": "unstructured",
        "sparsity": args.sparsity,
        "quantization": "none",
    }
    for name, key, model in _unrecorded(
        args, store, common, ("mobilenet_v2", "mobilenet_chain")
    ):
        pointwise = [
            layer.name
            for layer in model.layers
            if type(layer) is L.Conv2D and layer.kernel_size == (1, 1)
        ]
        pruned = tfr.apply(
            model, "unstructured", dict.fromkeys(pointwise, args.sparsity)
        )
        tfr.hard_prune(pruned)
        plain = tfr.strip(pruned)
        (
            (sparse_delegate, sparse_ms, sparse_bytes),
            (dense_delegate, dense_ms, dense_bytes),
        ) = _timed_pair(args, (plain, {"sparse": True}), (plain, {"sparse": False}))
        record = {
            **key,
            "pointwise_layers": len(pointwise),
            "sparse_bytes": sparse_bytes,
            "dense_bytes": dense_bytes,
            "sparse_delegate": sparse_delegate,
            "dense_delegate": dense_delegate,
            "sparse_ms": round(sparse_ms, 4),
            "dense_ms": round(dense_ms, 4),
            "speedup": round(dense_ms / sparse_ms, 3),
            "cpu_avx": _cpu_has_avx(),
            "rounds": args.rounds,
            "runs": args.runs,
            **records.stamp(),
            **records.versions("ai-edge-litert", "tensorflow"),
            "command": command,
        }
        store.add(record)
        print(
            f"{name}: sparse {sparse_ms:.3f} ms on {sparse_delegate}, dense "
            f"{dense_ms:.3f} ms on {dense_delegate}: {dense_ms / sparse_ms:.2f}x "
            f"(AVX: {record['cpu_avx']})",
            flush=True,
        )


def part_shrink(args, store: records.Store, command: str) -> None:
    """Latency of filter-pruned, shrunk models against their MAC reduction."""
    common = {
        "part": "shrink",
        "structure": "filter",
        "sparsity": args.shrink_sparsity,
        "quantization": "none",
    }
    for name, key, model in _unrecorded(
        args, store, common, ("mobilenet_v2", "mobilenet_v3_small")
    ):
        pruned = tfr.apply(model, "filter", args.shrink_sparsity)
        tfr.hard_prune(pruned)
        plain = tfr.strip(pruned)
        small = shrink(plain)
        macs = shrink_report(plain, small)
        (shrunk_delegate, shrunk_ms, _), (dense_delegate, dense_ms, _) = _timed_pair(
            args, (small, {"sparse": False}), (model, {"sparse": False})
        )
        mac_ratio = macs.macs_before / macs.macs_after
        record = {
            **key,
            "macs_before": macs.macs_before,
            "macs_after": macs.macs_after,
            "mac_ratio": round(mac_ratio, 3),
            "params_before": macs.params_before,
            "params_after": macs.params_after,
            "shrunk_ms": round(shrunk_ms, 4),
            "dense_ms": round(dense_ms, 4),
            "speedup": round(dense_ms / shrunk_ms, 3),
            "speedup_per_mac_ratio": round(dense_ms / shrunk_ms / mac_ratio, 3),
            "delegates": [shrunk_delegate, dense_delegate],
            "rounds": args.rounds,
            "runs": args.runs,
            **records.stamp(),
            **records.versions("ai-edge-litert", "tensorflow"),
            "command": command,
        }
        store.add(record)
        print(
            f"{name}: {mac_ratio:.2f}x fewer MACs, {dense_ms / shrunk_ms:.2f}x "
            f"faster ({dense_ms:.3f} -> {shrunk_ms:.3f} ms): "
            f"{record['speedup_per_mac_ratio']:.2f} of the MAC ratio",
            flush=True,
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.formats",
        description="Bytes per kept weight in LiteRT's sparse encoding, by layer "
        "type and structure; sparse against dense latency under XNNPACK.",
    )
    p.add_argument(
        "--part", choices=["bytes", "xnnpack", "shrink", "all"], default="all"
    )
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--structures", default=STRUCTURES)
    p.add_argument("--size", type=int, default=96, help="xnnpack/shrink input size")
    p.add_argument(
        "--shrink-sparsity", type=float, default=0.75, help="filter target of shrink"
    )
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--models", default="", help="xnnpack/shrink: only these (comma-separated)"
    )
    p.add_argument("--results", default=str(RESULTS))
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if not 0 < args.sparsity < 1:
        parser().error("--sparsity must lie in (0, 1)")
    command = records.command("formats", argv, module=True)
    store = records.Store(args.results, KEY_FIELDS)
    print(f"$ {command}", flush=True)
    if args.part in ("bytes", "all"):
        part_bytes(args, store, command)
    if args.part in ("xnnpack", "all"):
        part_xnnpack(args, store, command)
    if args.part in ("shrink", "all"):
        part_shrink(args, store, command)


if __name__ == "__main__":
    main()
