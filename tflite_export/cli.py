"""The `tflite-export` console script.

Example:

```
tflite-export convert model.keras model.tflite --quantization int8 \
    --representative-npy calibration.npy
tflite-export verify model.tflite --reference model.keras --sample-npy x.npy
```
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np

from tflite_export.convert import QUANTIZATIONS, export
from tflite_export.verify import random_sample, verify


def _load_model(path: str) -> keras.Model:
    """Loads a `.keras` file, with tf_reweight's custom layers registered."""
    try:
        import tf_reweight  # noqa: F401
    except ImportError:
        pass
    return keras.saving.load_model(path, compile=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tflite-export", description="Convert and verify TFLite models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="Convert a .keras model.")
    convert.add_argument("model", help="Input .keras file.")
    convert.add_argument("output", help="Output .tflite file.")
    convert.add_argument("--quantization", choices=QUANTIZATIONS, default="none")
    convert.add_argument(
        "--representative-npy",
        help=".npy array of calibration inputs (required for int8).",
    )
    convert.add_argument(
        "--dense", action="store_true", help="Do not use the sparse encoding."
    )
    convert.add_argument(
        "--shrink", action="store_true", help="Remove zero filters first."
    )
    convert.add_argument("--sample-npy", help=".npy array of verification inputs.")

    check = commands.add_parser("verify", help="Verify a .tflite file.")
    check.add_argument("tflite", help="The .tflite file.")
    check.add_argument("--reference", required=True, help="The .keras model.")
    check.add_argument("--sample-npy", help=".npy array of inputs to compare on.")
    check.add_argument(
        "--samples", type=int, default=32, help="Random samples without --sample-npy."
    )
    check.add_argument("--runs", type=int, default=20, help="Timed invokes.")
    check.add_argument("--dense-reference", help="Dense float .tflite to compare.")

    for command in (convert, check):
        command.add_argument(
            "--min-agreement",
            type=float,
            default=0.99,
            help="Exit with status 1 below this argmax agreement (default 0.99).",
        )
    return parser


def _load_npy(path: str | None) -> np.ndarray | None:
    return None if path is None else np.load(path)


def main(argv: list[str] | None = None) -> int:
    """Runs `tflite-export convert` or `tflite-export verify`.

    Args:
        argv: Command-line arguments without the program name; defaults to
            `sys.argv[1:]`.

    Returns:
        0 on success, 1 when the argmax agreement is below `--min-agreement`,
        2 on invalid input.

    Example:

    ```python
    main(["verify", "model.tflite", "--reference", "model.keras"])
    ```
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "convert":
            report = export(
                _load_model(args.model),
                args.output,
                quantization=args.quantization,
                sparse=not args.dense,
                representative_data=_load_npy(args.representative_npy),
                shrink=args.shrink,
                sample=_load_npy(args.sample_npy),
            )
            agreement = report.verification.argmax_agreement
        else:
            reference = _load_model(args.reference)
            sample = _load_npy(args.sample_npy)
            if sample is None:
                sample = random_sample(reference, args.samples)
            report = verify(
                args.tflite,
                reference,
                sample,
                runs=args.runs,
                dense_reference_path=args.dense_reference,
            )
            agreement = report.argmax_agreement
    except (ValueError, OSError) as error:
        print(f"tflite-export: error: {error}", file=sys.stderr)
        return 2
    print(report)
    return 0 if agreement >= args.min_agreement else 1


if __name__ == "__main__":
    sys.exit(main())
