"""Read the tensors of a `.tflite` flatbuffer: stored bytes, zeros, encodings.

A `.tflite` file is a flatbuffer (the TFLite schema): subgraphs of tensors,
each tensor pointing at a data buffer, which is empty for activations and holds
the stored values of constants (weights, biases, shapes). Buffers are stored
inline or, in files over 2 GB and in some converter outputs, at an offset into
the file. A tensor in the sparse encoding stores only its kept values plus
the encoding's index arrays; a quantized tensor carries its scales and zero
points.

`read` walks the file once into `TfliteTensor` records; `count_zero_weights`
(used by `tflite_export.verify`) and `byte_breakdown` (where a file's bytes go)
summarize them. `gzip_bytes` is the size a file takes compressed, as apps
ship it.

Example:
>>> tensors = read("model.tflite")
>>> sum(len(t.data) for t in tensors if t.rank >= 2)  # stored weight bytes
"""

from __future__ import annotations

from tf_reweight.core.backend_support import require

require(__name__, "the TFLite schema", backend=None, package="ai_edge_litert")

import dataclasses
import gzip
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

#: The NumPy dtypes of the tensor types that weights are stored in.
WEIGHT_DTYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT8: np.int8,
}
_INDEX_VECTORS = {
    schema.SparseIndexVector.Int32Vector: (schema.Int32Vector, 4),
    schema.SparseIndexVector.Uint16Vector: (schema.Uint16Vector, 2),
    schema.SparseIndexVector.Uint8Vector: (schema.Uint8Vector, 1),
}


@dataclasses.dataclass(frozen=True)
class TfliteTensor:
    """One tensor of a `.tflite` file, as stored.

    Attributes:
        name: The tensor's name.
        shape: Its dense shape.
        type: Its `schema.TensorType` code.
        data: The bytes of its buffer (empty for a non-constant tensor).
        sparse: Whether it is stored in the sparse encoding.
        index_bytes: Bytes of the sparse encoding's segment, index, traversal
            and block arrays (0 when dense).
        quant_param_bytes: Bytes of its quantization parameters (float32
            scales, int64 zero points; 0 when not quantized).
        block: The shape of one stored unit of a sparse tensor: all ones
            for single values (a compressed sparse row format), ``(1, 16)``
            for the 1x16 blocks of an int8 `FULLY_CONNECTED` weight; None
            when the tensor is stored dense.
    """

    name: str
    shape: tuple[int, ...]
    type: int
    data: bytes
    sparse: bool
    index_bytes: int
    quant_param_bytes: int
    block: tuple[int, ...] | None = None

    @property
    def rank(self) -> int:
        """The number of dimensions of the dense shape."""
        return len(self.shape)

    def values(self) -> np.ndarray | None:
        """The stored values of a float32, float16, int8 or int4 constant, else None.

        A sparse tensor's values are its kept values, not its dense array.
        Int4 values (two to a byte, the first in the low half) come back as
        int8 in [-8, 7].
        """
        if self.type == schema.TensorType.INT4 and self.data and not self.sparse:
            packed = np.frombuffer(self.data, np.uint8)
            nibbles = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(-1)
            nibbles = nibbles[: int(np.prod(self.shape))].astype(np.int8)
            return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)
        dtype = WEIGHT_DTYPES.get(self.type)
        if dtype is None or not self.data:
            return None
        return np.frombuffer(self.data, dtype)


def read(path: str | Path) -> list[TfliteTensor]:
    """The tensors of every subgraph of a `.tflite` file, in file order.

    Args:
        path: A `.tflite` file.

    Returns:
        One `TfliteTensor` per tensor (a buffer shared by two tensors is listed
        with each).

    Raises:
        ValueError: If the file does not exist.

    Example:
    >>> [t.name for t in read("model.tflite") if t.sparse]
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"Expected an existing `.tflite` file. Received: path={str(path)!r}"
        )
    raw = path.read_bytes()
    model = schema.Model.GetRootAs(raw, 0)
    tensors = []
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            quant = tensor.Quantization()
            tensors.append(
                TfliteTensor(
                    name=(tensor.Name() or b"").decode(),
                    shape=tuple(int(d) for d in tensor.ShapeAsNumpy())
                    if tensor.ShapeLength()
                    else (),
                    type=tensor.Type(),
                    data=_buffer_data(raw, model.Buffers(tensor.Buffer())),
                    sparse=tensor.Sparsity() is not None,
                    index_bytes=_index_bytes(tensor.Sparsity()),
                    quant_param_bytes=0
                    if quant is None
                    else 4 * quant.ScaleLength() + 8 * quant.ZeroPointLength(),
                    block=_block(tensor.Sparsity(), tensor.ShapeLength()),
                )
            )
    return tensors


def _buffer_data(raw: bytes, buffer) -> bytes:
    if buffer.Offset() > 1:  # stored outside the flatbuffer, at an offset
        return raw[buffer.Offset() : buffer.Offset() + buffer.Size()]
    if buffer.DataLength():
        return buffer.DataAsNumpy().tobytes()
    return b""


def _block(sparsity, rank: int) -> tuple[int, ...] | None:
    """The stored unit's shape: the blocked dimensions' sizes, 1 elsewhere."""
    if sparsity is None:
        return None
    block = [1] * rank
    for i in range(sparsity.BlockMapLength()):
        block[sparsity.BlockMap(i)] = sparsity.DimMetadata(rank + i).DenseSize()
    return tuple(block)


def _index_bytes(sparsity) -> int:
    if sparsity is None:
        return 0
    total = 4 * (sparsity.TraversalOrderLength() + sparsity.BlockMapLength())
    for d in range(sparsity.DimMetadataLength()):
        dim = sparsity.DimMetadata(d)
        for kind, table in (
            (dim.ArraySegmentsType(), dim.ArraySegments()),
            (dim.ArrayIndicesType(), dim.ArrayIndices()),
        ):
            if kind in _INDEX_VECTORS and table is not None:
                vector_class, item_bytes = _INDEX_VECTORS[kind]
                vector = vector_class()
                vector.Init(table.Bytes, table.Pos)
                total += item_bytes * vector.ValuesLength()
    return total


def count_zero_weights(tflite_path: str | Path) -> tuple[int, int, int]:
    """Counts the zeros that survive in the weight tensors of a flatbuffer.

    A weight tensor is a constant tensor (one backed by a data buffer) of rank
    >= 2 stored as float32, float16, int8 or int4; rank-1 constants (biases, shapes)
    are not counted. Elements are counted at the tensor's dense shape. For an
    int8 tensor a zero is a stored value of 0: the TFLite quantization spec
    fixes the zero point of weights at 0, so this is exactly a real 0.0. A
    tensor in the sparse encoding stores every non-zero value (plus the zeros
    inside kept blocks), so its zeros are its dense size minus its stored
    non-zero values. Int4 weights (``ai-edge-quantizer``) are symmetric too.

    Args:
        tflite_path: Path of a `.tflite` file.

    Returns:
        `(weight_count, zero_weights, sparse_tensors)`.

    Example:
    >>> total, zeros, sparse = count_zero_weights("model.tflite")
    >>> print(f"{zeros / total:.1%} zeros, {sparse} sparse tensors")
    """
    total = zeros = sparse = 0
    for tensor in read(tflite_path):
        values = tensor.values()
        if values is None or tensor.rank < 2:
            continue
        dense_size = int(np.prod(tensor.shape))
        total += dense_size
        zeros += dense_size - int(np.count_nonzero(values))
        sparse += tensor.sparse
    return total, zeros, sparse


def byte_breakdown(tflite_path: str | Path) -> dict[str, int]:
    """Where the bytes of a `.tflite` file go.

    Args:
        tflite_path: Path of a `.tflite` file.

    Returns:
        A dict of byte counts: ``weight_bytes`` (constant tensors of rank >= 2:
        kernels, stored values only when sparse), ``vector_bytes`` (constant
        tensors of rank < 2: biases and shape constants), ``index_bytes`` (the
        sparse encoding's segment, index, traversal and block arrays),
        ``quant_param_bytes`` (float32 scales and int64 zero points of every
        quantized tensor) and ``other_bytes`` (the rest: operator and tensor
        tables, names, signatures, metadata, alignment). The counts add up to
        the file size.

    Example:
    >>> byte_breakdown("model.tflite")["weight_bytes"]
    """
    counts = dict.fromkeys(
        ("weight_bytes", "vector_bytes", "index_bytes", "quant_param_bytes"), 0
    )
    for tensor in read(tflite_path):
        counts["weight_bytes" if tensor.rank >= 2 else "vector_bytes"] += len(
            tensor.data
        )
        counts["quant_param_bytes"] += tensor.quant_param_bytes
        counts["index_bytes"] += tensor.index_bytes
    counts["other_bytes"] = Path(tflite_path).stat().st_size - sum(counts.values())
    return counts


def gzip_bytes(tflite_path: str | Path) -> int:
    """The size of a file compressed with gzip (level 9), as it is shipped.

    Args:
        tflite_path: Path of the `.tflite` file.

    Returns:
        The number of gzip-compressed bytes.

    Example:
    >>> gzip_bytes("model.tflite") < Path("model.tflite").stat().st_size
    True
    """
    return len(gzip.compress(Path(tflite_path).read_bytes(), compresslevel=9, mtime=0))
