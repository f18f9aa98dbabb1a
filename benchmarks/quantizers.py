"""Quantizers benchmark: the converter's sparse int8 against LiteRT's quantizer.

One trained, pruned Keras model (``--model``, a plain `.keras` file such as the
``model.keras`` that ``tf-reweight compress`` writes) on its test set
(``--dataset``), exported every way `tflite_export.export` offers for a small
file:

- ``converter_int8_sparse``: the converter's full-integer int8, sparse
  encoding, Dense weights per channel (its default);
- ``converter_int8_sparse_per_tensor``: the same, Dense weights per tensor
  (``per_channel_dense=False``);
- ``quantizer_weight_int8`` and ``quantizer_weight_int4``: LiteRT's own
  quantizer (``ai-edge-quantizer``), weight-only, dense tensors;
- ``float_dense``: the float32 file every other one is timed against.

Each record holds the file and gzip bytes, the accuracy in LiteRT on the full
test set, the argmax agreement with Keras, the surviving zero weights, the
delegate, and the median latency of single-image invokes timed in interleaved
rounds against the float file (`tflite_export.measure_pair`). Records go to
``benchmarks/results/quantizers.json`` as they are measured; a second run
skips what is there.

Example:

```
tf-reweight compress --structure litert --target 0.97 --out runs/litert
python -m benchmarks.quantizers --model runs/litert/model.keras
```
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tf_reweight as tfr  # noqa: E402
from benchmarks import records  # noqa: E402
from tflite_export import evaluate_tflite, export, measure_pair  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "quantizers.json"
KEY_FIELDS = ("model_sha256", "method", "test_samples")
#: method -> export arguments.
METHODS = {
    "float_dense": {"quantization": "none", "sparse": False},
    "converter_int8_sparse": {"quantization": "int8", "sparse": True},
    "converter_int8_sparse_per_tensor": {
        "quantization": "int8",
        "sparse": True,
        "per_channel_dense": False,
    },
    "quantizer_weight_int8": {"quantization": "weight_int8"},
    "quantizer_weight_int4": {"quantization": "weight_int4"},
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quantizers",
        description="The converter's sparse int8 against LiteRT's quantizer on "
        "one pruned model: size, accuracy in LiteRT, zeros, latency.",
    )
    p.add_argument("--model", required=True, help="a plain pruned .keras model")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"])
    p.add_argument("--data-dir", default=None, help="default $TF_REWEIGHT_DATA_DIR")
    p.add_argument("--calibration-samples", type=int, default=512)
    p.add_argument("--test-limit", type=int, default=None, help="first N images")
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--results", default=str(RESULTS))
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    model_path = Path(args.model)
    if not model_path.is_file():
        parser().error(f"--model: no such file: {args.model}")
    command = records.command("quantizers", argv, module=True)
    print(f"$ {command}", flush=True)
    store = records.Store(args.results, KEY_FIELDS)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    model = keras.saving.load_model(model_path, compile=False)
    (x_train, _), (x_test, y_test) = tfr.data.load(args.dataset, args.data_dir)
    x_test, y_test = x_test[: args.test_limit], y_test[: args.test_limit]
    measured = []
    with tempfile.TemporaryDirectory() as folder:
        float_path = str(Path(folder) / "float_dense.tflite")
        export(model, float_path, verify=False, sparse=False)
        for method, options in METHODS.items():
            key = {
                "model_sha256": digest,
                "method": method,
                "test_samples": len(x_test),
            }
            if store.has(key):
                print(f"[skip] {method}", flush=True)
                continue
            path = str(Path(folder) / f"{method}.tflite")
            report = export(
                model,
                path,
                representative_data=x_train[: args.calibration_samples],
                sample=x_test[:1000],
                **options,
            )
            (_, latency), (_, float_latency) = measure_pair(
                path, float_path, x_test[:8], rounds=args.rounds, runs=args.runs
            )
            check = report.verification
            record = {
                **key,
                "model": model_path.name,
                "dataset": args.dataset,
                "options": dict(options),
                "file_bytes": report.file_bytes,
                "gzip_bytes": report.gzip_bytes,
                "tflite_accuracy": evaluate_tflite(path, x_test, y_test),
                "argmax_agreement": check.argmax_agreement,
                "weight_count": check.weight_count,
                "zero_weights": check.zero_weights,
                "delegate": check.delegate,
                "latency_ms": round(latency, 4),
                "float_latency_ms": round(float_latency, 4),
                **records.stamp(),
                **records.versions("ai-edge-litert", "ai-edge-quantizer", "tensorflow"),
                "command": command,
            }
            store.add(record)
            measured.append(record)
            print(
                f"{method:>34}: {record['file_bytes']:>9,} B ({record['gzip_bytes']:,} "
                f"gzipped), {record['tflite_accuracy']:.2%} in LiteRT, "
                f"{check.zero_weights:,} zeros, {latency:.4f} ms (float "
                f"{float_latency:.4f} ms)",
                flush=True,
            )
    return measured


if __name__ == "__main__":
    main()
