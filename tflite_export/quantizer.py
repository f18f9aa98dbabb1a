"""Weight-only quantization with LiteRT's own quantizer, ``ai-edge-quantizer``.

LiteRT steers quantization from the TFLite converter towards its quantizer,
which rewrites a float `.tflite` file: ``tflite_export.export(...,
quantization="weight_int8" | "weight_int4")`` converts the float model, then
quantizes every weight tensor to 8 or 4 bits here (symmetric, one scale per
output channel, so a pruned zero stays exactly 0) and dequantizes it in the
graph before its op, which computes in float32. The quantizer rewrites only
dense tensors: the file keeps its zeros but not the sparse encoding
(``sparse=True`` is refused for these modes).

The package is optional: ``pip install tf-reweight[quantizer]`` (or
``ai-edge-quantizer``); without it these modes raise a clear error.

Example:
>>> flatbuffer = quantize_flatbuffer(float_flatbuffer, bits=4)
"""

from __future__ import annotations

import importlib.util

#: The export modes of this module and their weight bits.
MODES = {"weight_int8": 8, "weight_int4": 4}


def available() -> bool:
    """Whether ``ai-edge-quantizer`` is installed."""
    return importlib.util.find_spec("ai_edge_quantizer") is not None


def require(quantization: str) -> None:
    """Raises `ValueError` when ``quantization`` needs the missing package."""
    if quantization in MODES and not available():
        raise ValueError(
            f"quantization={quantization!r} runs LiteRT's quantizer, which is not "
            "installed. Expected the package ai-edge-quantizer: `pip install "
            "tf-reweight[quantizer]`. Received: quantization="
            f"{quantization!r}"
        )


def _recipe(bits: int) -> list[dict]:
    """Weight-only, symmetric, per-channel integer weights for every op."""
    return [
        {
            "regex": ".*",
            "operation": "*",
            "algorithm_key": "min_max_uniform_quantize",
            "op_config": {
                "weight_tensor_config": {
                    "num_bits": bits,
                    "symmetric": True,
                    "granularity": "CHANNELWISE",
                    "dtype": "INT",
                },
                "compute_precision": "FLOAT",
                "explicit_dequantize": True,
                "skip_checks": False,
                "min_weight_elements": 0,
            },
        }
    ]


def quantize_flatbuffer(flatbuffer: bytes, bits: int) -> bytes:
    """Quantizes the weights of a float `.tflite` flatbuffer to ``bits`` bits.

    Args:
        flatbuffer: A float32 `.tflite` model (dense encoding).
        bits: 8 or 4.

    Returns:
        The quantized flatbuffer.
    """
    if bits not in MODES.values():
        raise ValueError(
            f"Expected bits in {sorted(MODES.values())}. Received: bits={bits!r}"
        )
    from ai_edge_quantizer import Quantizer

    result = Quantizer(bytearray(flatbuffer), _recipe(bits)).quantize(
        enable_progress_report=False
    )
    return bytes(result.quantized_model)
