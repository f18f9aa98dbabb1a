"""The `tflite-export` console script (over the `tflite_export` package).

Example:

```
tflite-export convert model.keras model.tflite --quantization int8 \
    --representative-npy calibration.npy
tflite-export verify model.tflite --reference model.keras --sample-npy x.npy
```

Only the report is printed: TensorFlow's and LiteRT's native log lines are
held back (`tf_reweight.core.backend_support.quiet_native_logs`); ``--verbose``
shows them, as does ``TF_CPP_MIN_LOG_LEVEL=0``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tf_reweight.cli.checks import fraction, load_keras, positive_int
from tf_reweight.core.backend_support import show_native_logs
from tflite_export.convert import CONVERTERS, QUANTIZATIONS, check_output_path, export
from tflite_export.inputs import random_sample
from tflite_export.verify import verify

_ENCODINGS = {"auto": "auto", "sparse": True, "dense": False}


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
    encoding = convert.add_mutually_exclusive_group()
    encoding.add_argument(
        "--encoding",
        choices=tuple(_ENCODINGS),
        default="auto",
        help="Weight encoding: auto (default) writes the sparse file unless it "
        "falls off XNNPACK or is slower than the dense one.",
    )
    encoding.add_argument(
        "--dense",
        dest="encoding",
        action="store_const",
        const="dense",
        help="Same as --encoding dense.",
    )
    convert.add_argument(
        "--converter",
        choices=CONVERTERS,
        default="saved_model",
        help="saved_model (default): TFLiteConverter.from_saved_model; keras: "
        "Keras' own model.export(format='litert').",
    )
    convert.add_argument(
        "--shrink", action="store_true", help="Remove zero filters first."
    )
    convert.add_argument(
        "--per-tensor-dense",
        action="store_true",
        help="Quantize Dense weights with one scale per tensor (int8, dynamic).",
    )
    convert.add_argument("--sample-npy", help=".npy array of verification inputs.")

    check = commands.add_parser("verify", help="Verify a .tflite file.")
    check.add_argument("tflite", help="The .tflite file.")
    check.add_argument("--reference", required=True, help="The .keras model.")
    check.add_argument("--sample-npy", help=".npy array of inputs to compare on.")
    check.add_argument(
        "--samples",
        type=positive_int,
        default=32,
        help="Random samples without --sample-npy.",
    )
    check.add_argument("--runs", type=positive_int, default=20, help="Timed invokes.")
    check.add_argument("--dense-reference", help="Dense float .tflite to compare.")

    for command in (convert, check):
        command.add_argument(
            "--min-agreement",
            type=fraction,
            default=0.99,
            help="Exit with status 1 below this argmax agreement (default 0.99).",
        )
        command.add_argument(
            "--verbose",
            action="store_true",
            help="Also show TensorFlow's and LiteRT's native log lines.",
        )
    return parser


def _load_npy(path: str | None, name: str) -> np.ndarray | None:
    """Loads a `.npy` array of real numbers; None for no path."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise ValueError(
            f"argument {name}: no such file. Expected a .npy array saved with "
            f"`numpy.save`. Received: {path}"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(
            f"argument {name}: {path} is not a readable .npy array ({error}). "
            "Save the inputs with `numpy.save`."
        ) from error
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise ValueError(
            f"argument {name}: expected one .npy array of real numbers. "
            f"Received: {path} holding {type(array).__name__} "
            f"{getattr(array, 'dtype', '')}".rstrip()
        )
    return array


def _check_tflite(path: str | None, name: str) -> None:
    """Checks that ``path`` (if given) is a TFLite flatbuffer ("TFL3" at byte 4)."""
    if path is None:
        return
    if not Path(path).is_file():
        raise ValueError(
            f"argument {name}: no such file. Expected an existing .tflite file. "
            f"Received: {path}"
        )
    with open(path, "rb") as f:
        header = f.read(8)
    if header[4:8] != b"TFL3":
        raise ValueError(
            f"argument {name}: {path} is not a .tflite flatbuffer (truncated or "
            "another format?). Convert the model again with `tflite-export convert`."
        )


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
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit:  # argparse has printed usage and the error
        return exit.code if isinstance(exit.code, int) else 2
    if args.verbose:
        show_native_logs()
    try:
        report, agreement = _run(args)
    except (ValueError, OSError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"tflite-export: error: {message}", file=sys.stderr)
        return 2
    print(report)
    return 0 if agreement >= args.min_agreement else 1


def _run(args):
    """Checks every argument (files first, the model last), then runs."""
    if args.command == "convert":
        try:
            check_output_path(args.output, "output")
        except ValueError as error:
            raise ValueError(f"argument output: {error}") from error
        representative = _load_npy(args.representative_npy, "--representative-npy")
        sample = _load_npy(args.sample_npy, "--sample-npy")
        report = export(
            load_keras(args.model, "model", compile=False),
            args.output,
            quantization=args.quantization,
            sparse=_ENCODINGS[args.encoding],
            representative_data=representative,
            shrink=args.shrink,
            sample=sample,
            converter=args.converter,
            per_channel_dense=not args.per_tensor_dense,
        )
        return report, report.verification.argmax_agreement
    _check_tflite(args.tflite, "tflite")
    _check_tflite(args.dense_reference, "--dense-reference")
    sample = _load_npy(args.sample_npy, "--sample-npy")
    reference = load_keras(args.reference, "--reference", compile=False)
    if sample is None:
        sample = random_sample(reference, args.samples)
    report = verify(
        args.tflite,
        reference,
        sample,
        runs=args.runs,
        dense_reference_path=args.dense_reference,
    )
    return report, report.argmax_agreement


if __name__ == "__main__":
    sys.exit(main())
