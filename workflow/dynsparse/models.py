"""The FC and transformer MNIST models, built from `SparseLinear` / `DenseLinear`.

A model maps uint8 images [B, 28, 28] (or already prepared float inputs) to logits [B, 10].
`__call__(x, training, capture)`: dropout only when `training`; every sparse layer appends its
input and pre-bias output to `capture` (a list) when one is given, for the RigL dense gradient.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from dynsparse import ops
from dynsparse.blocks import IMAGE_SIDE, N_CLASSES, N_PIXELS, round_up
from dynsparse.layers import Captured, DenseLinear, SparseLinear
from dynsparse.methods import METHODS
from dynsparse.settings import FCSettings, ModelSettings, TransformerSettings

Linear = SparseLinear | DenseLinear


def block_tile_shape(block_size: int) -> tuple[int, int]:
    """(h, w): h the smallest power of two with h² ≥ bs, w = bs/h (1→1×1, 4→2×2, 8→4×2, 16→4×4)."""
    h = 1
    while h * h < block_size:
        h *= 2
    return h, block_size // h


def input_permutation(mode: str, block_size: int, seed: int) -> np.ndarray:
    """perm [784]: input column k holds original pixel perm[k]."""
    if mode == "none":
        return np.arange(N_PIXELS, dtype=np.int64)
    if mode == "random":
        return np.random.RandomState(seed).permutation(N_PIXELS).astype(np.int64)
    if mode == "block":
        h, w = block_tile_shape(block_size)
        if IMAGE_SIDE % h or IMAGE_SIDE % w:
            raise ValueError(f"block size {block_size}: tiles {h}×{w} do not divide 28")
        perm = [
            (gi * h + li) * IMAGE_SIDE + (gj * w + lj)
            for gi in range(IMAGE_SIDE // h)
            for gj in range(IMAGE_SIDE // w)
            for li in range(h)
            for lj in range(w)
        ]
        return np.asarray(perm, dtype=np.int64)
    raise ValueError(f"unknown permute_input {mode!r}")


def dropout(x: tf.Tensor, rate: float, rng: tf.random.Generator) -> tf.Tensor:
    """Inverted dropout in one native op (mask and scale fused; reproducible from the seed)."""
    return x if rate <= 0.0 else ops.dropout(x, rate, rng)


class SparseStart(NamedTuple):
    density: float
    variable_blocks: bool


def sparse_start(settings: ModelSettings, density: float) -> SparseStart:
    """How the method starts a sparse layer of target `density`: its initial density, and
    whether its block count may shrink (GMP starts dense and prunes)."""
    method = METHODS[settings.rigl.method]
    return SparseStart(method.initial_density(density), method.prunes_gradually)


def _index_rng(seed: int, layer_number: int) -> np.random.Generator:
    # One index generator per layer, so layers of equal shape do not share a pattern.
    return np.random.default_rng([seed, layer_number])


class FCModel(tf.Module):
    """784 → hidden widths (ReLU, dropout each) → 10; fc1 … fc(L+1), sparse below density 1."""

    model_name = "fc"

    def __init__(self, settings: FCSettings, dropout_rng: tf.random.Generator) -> None:
        super().__init__(name="fc")
        seed = settings.seed
        densities = settings.layer_densities()
        block_sizes = settings.layer_block_sizes()
        value_rng = np.random.default_rng(seed)
        self.layer_names = settings.layer_names
        for number, (name, (n_in, n_out)) in enumerate(settings.layer_shapes().items(), start=1):
            pooling = "NONE" if name == self.layer_names[-1] else settings.pooling
            layer = self._linear(
                name, n_in, n_out, densities[name], block_sizes[name], pooling, seed, number,
                value_rng, settings,
            )  # fmt: skip
            setattr(self, name, layer)  # fc1, fc2, ...: the checkpoint's names
        self.droprate = settings.droprate
        self.dropout_rng = dropout_rng
        self.permutation = input_permutation(settings.permute_input, settings.block_size, seed)

    @staticmethod
    def _linear(
        name: str,
        n_in: int,
        n_out: int,
        density: float,
        block_size: int,
        pooling: str,
        seed: int,
        layer_number: int,
        value_rng: np.random.Generator,
        settings: FCSettings,
    ) -> Linear:
        if density >= 1.0:
            return DenseLinear(n_in, n_out, use_bias=True, value_rng=value_rng, name=name)
        start = sparse_start(settings, density)
        return SparseLinear(
            n_in,
            n_out,
            density=start.density,
            variable_blocks=start.variable_blocks,
            block_size=block_size,
            pooling=pooling,
            use_bias=True,
            index_rng=_index_rng(seed, layer_number),
            value_rng=value_rng,
            name=name,
        )

    @property
    def layers(self) -> list[Linear]:
        return [getattr(self, name) for name in self.layer_names]

    @property
    def sparse_layers(self) -> list[SparseLinear]:
        return [layer for layer in self.layers if isinstance(layer, SparseLinear)]

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 28, 28] → uint8 [N, 784], permuted (kept uint8 to save memory)."""
        flat = images.reshape(len(images), N_PIXELS)
        return np.ascontiguousarray(flat[:, self.permutation])

    def record_extras(self) -> dict[str, np.ndarray]:
        return {"permutation": self.permutation.astype(np.int64)}

    def __call__(
        self, x: tf.Tensor, training: bool, capture: list[Captured] | None = None
    ) -> tf.Tensor:
        h = tf.cast(x, tf.float32) * (1.0 / 255.0)
        *hidden, output = self.layers
        for layer in hidden:
            h = layer(h, capture, activation="relu")
            if training:
                h = dropout(h, self.droprate, self.dropout_rng)
        return output(h, capture)


def positional_encoding(length: int, width: int) -> np.ndarray:
    """pe[pos, 2i] = sin(pos·exp(−ln(10000)·2i/E)), pe[pos, 2i+1] = cos(same)."""
    pe = np.zeros((length, width), dtype=np.float64)
    position = np.arange(length)[:, None]
    div = np.exp(-math.log(10000.0) * np.arange(0, width, 2) / width)
    pe[:, 0::2] = np.sin(position * div)
    pe[:, 1::2] = np.cos(position * div)[:, : width // 2]
    return pe.astype(np.float32)


class GroupNorm1(tf.Module):
    """GroupNorm with one group: statistics over all but the first axis, per-feature gamma, beta.

    As the original's IPU group norm: for activations [B, S, H] the mean and variance are per
    example over all tokens and features jointly; for a 2-D table [S, H], per row.
    """

    def __init__(self, width: int, name: str, epsilon: float = 1e-6) -> None:
        super().__init__(name=name)
        self.gamma = tf.Variable(tf.fill([width], 0.1), name="gamma")
        self.beta = tf.Variable(tf.zeros([width]), name="beta")
        self.epsilon = epsilon

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        # One native op each way, in the dense model as in the sparse ones (TensorFlow's moments,
        # normalisation and their gradient are ~35 small ops).
        return ops.group_norm(x, self.gamma, self.beta, self.epsilon)


def qkv_heads(
    layer: Linear, x: tf.Tensor, heads: int, head_size: int, capture: list[Captured] | None
) -> list[tf.Tensor]:
    """Q, K, V of x [B, tokens, width], each [B, heads, tokens, head_size].

    A sparse layer's native op writes that layout itself, and its gradient reads dQ, dK, dV so,
    with no transpose or stack of the 5.5 MB QKV output of the default model either way; a dense
    layer's output (and the RigL update step's, which captures the row-major pre-bias output) is
    transposed once to [3, B, heads, T, d] and unstacked (the outputs share the transpose's
    buffer; slicing instead would cost strided-slice gradients, several times the whole
    attention). The two give the same bits.
    """
    if capture is None:
        fused = layer.heads_output(x, 3, heads)
        if fused is not None:
            return fused
    qkv = layer(x, capture)
    tokens = int(qkv.shape[1])
    heads_first = tf.transpose(
        tf.reshape(qkv, [tf.shape(qkv)[0], tokens, 3, heads, head_size]), [2, 0, 3, 1, 4]
    )
    return tf.unstack(heads_first)


def multi_head_attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """softmax(Q Kᵀ / √d) V per head, for Q, K, V [B, heads, T, d]; returns [B, heads, T, d].

    The scaled softmax is one native op (and its gradient one more) in the dense model as in the
    sparse ones; the products are TensorFlow's (oneDNN) batch matmuls.
    """
    scores = tf.matmul(q, k, transpose_b=True)
    weights = ops.scaled_softmax(scores, 1.0 / math.sqrt(int(q.shape[-1])))
    return tf.matmul(weights, v)


def merged_heads_output(
    layer: Linear, attended: tf.Tensor, capture: list[Captured] | None
) -> tf.Tensor:
    """The attention's output layer on attended [B, heads, T, d]: [B, T, width].

    A sparse layer's native op reads the heads' layout itself (and its gradient writes dX so); a
    dense layer (and the RigL update step, which captures the layer's row-major input) gets the
    heads merged by a transpose first. The two give the same bits.
    """
    if capture is None:
        fused = layer.from_heads(attended)
        if fused is not None:
            return fused
    _, heads, tokens, head_size = attended.shape
    merged = tf.reshape(
        tf.transpose(attended, [0, 2, 1, 3]), [tf.shape(attended)[0], tokens, heads * head_size]
    )
    return layer(merged, capture)


ENCODER_LAYER_NAMES = ("qkv", "attention_out", "ffn1", "ffn2")


def encoder_layer_names(layer: int) -> tuple[str, ...]:
    """The linear layers of encoder layer `layer` (0-based): qkv, …, then qkv_2, … for the next."""
    suffix = "" if layer == 0 else f"_{layer + 1}"
    return tuple(name + suffix for name in ENCODER_LAYER_NAMES)


class TransformerModel(tf.Module):
    """28 row tokens → sparse embedding → `layers` pre-norm encoder layers → per-token head."""

    model_name = "transformer"

    def __init__(self, settings: TransformerSettings, dropout_rng: tf.random.Generator) -> None:
        super().__init__(name="transformer")
        seed = settings.seed
        sparsity = settings.sparsity
        block_size = settings.block_size if sparsity > 0 else 1
        pooling = settings.pooling
        self.hidden = settings.hidden_size
        self.heads = settings.heads
        self.qkv_size = settings.qkv_size
        ff_size = settings.ff_size
        self.rate = settings.dropout
        self.dropout_rng = dropout_rng
        self.input_features = IMAGE_SIDE
        self.padded_features = round_up(IMAGE_SIDE, block_size)
        self.head_width = round_up(N_CLASSES, block_size)
        attention_width = self.heads * self.qkv_size
        self.encoder_names = [encoder_layer_names(i) for i in range(settings.layers)]
        encoder_shapes = (
            (self.hidden, 3 * attention_width, False),
            (attention_width, self.hidden, False),
            (self.hidden, ff_size, True),
            (ff_size, self.hidden, True),
        )
        shapes = {"embedding": (self.padded_features, self.hidden, True)}
        for names in self.encoder_names:
            shapes.update(zip(names, encoder_shapes, strict=True))
        shapes["head"] = (self.hidden, self.head_width, False)
        self.layer_names = tuple(shapes)
        # Index generators keep the one-layer model's numbers (head is 6); later layers follow.
        numbers = {name: i for i, name in enumerate(("embedding", *self.encoder_names[0]), 1)}
        numbers["head"] = len(numbers) + 1
        for name in shapes:
            numbers.setdefault(name, len(numbers) + 1)
        value_rng = np.random.default_rng(seed)
        for name, (n_in, n_out, use_bias) in shapes.items():
            layer: Linear
            if sparsity <= 0.0:
                layer = DenseLinear(n_in, n_out, use_bias=use_bias, value_rng=value_rng, name=name)
            else:
                start = sparse_start(settings, 1.0 - sparsity)
                layer = SparseLinear(
                    n_in,
                    n_out,
                    density=start.density,
                    variable_blocks=start.variable_blocks,
                    block_size=block_size,
                    pooling=pooling,
                    use_bias=use_bias,
                    index_rng=_index_rng(seed, numbers[name]),
                    value_rng=value_rng,
                    name=name,
                )
            setattr(self, name, layer)
        self.pe_table = tf.constant(positional_encoding(IMAGE_SIDE, self.padded_features))
        self.pe_norm = GroupNorm1(self.padded_features, name="pe_norm")
        for i in range(settings.layers):
            suffix = "" if i == 0 else f"_{i + 1}"
            setattr(self, "attention_norm" + suffix, GroupNorm1(self.hidden, "attention_norm"))
            setattr(self, "ffn_norm" + suffix, GroupNorm1(self.hidden, "ffn_norm"))

    @property
    def layers(self) -> list[Linear]:
        return [getattr(self, name) for name in self.layer_names]

    @property
    def sparse_layers(self) -> list[SparseLinear]:
        return [layer for layer in self.layers if isinstance(layer, SparseLinear)]

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 28, 28] → uint8 [N, 28, padded_features] (zero-padded features)."""
        padding = self.padded_features - IMAGE_SIDE
        return np.ascontiguousarray(np.pad(images, ((0, 0), (0, 0), (0, padding))))

    def record_extras(self) -> dict[str, np.ndarray]:
        return {
            "input_features": np.array(self.input_features, dtype=np.int64),
            "padded_features": np.array(self.padded_features, dtype=np.int64),
        }

    def _dropout(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        return dropout(x, self.rate, self.dropout_rng) if training else x

    def _encoder_layer(
        self,
        x: tf.Tensor,
        linears: list[Linear],
        attention_norm: GroupNorm1,
        ffn_norm: GroupNorm1,
        training: bool,
        capture: list[Captured] | None,
    ) -> tf.Tensor:
        """One pre-norm encoder layer: attention, then the feed-forward block, each residual."""
        qkv_layer, attention_out, ffn1, ffn2 = linears
        q, k, v = qkv_heads(qkv_layer, attention_norm(x), self.heads, self.qkv_size, capture)
        attended = multi_head_attention(q, k, v)
        x = x + self._dropout(merged_heads_output(attention_out, attended, capture), training)
        hidden = self._dropout(ffn1(ffn_norm(x), capture, activation="gelu"), training)
        return x + self._dropout(ffn2(hidden, capture), training)

    def __call__(
        self, x: tf.Tensor, training: bool, capture: list[Captured] | None = None
    ) -> tf.Tensor:
        x = tf.cast(x, tf.float32) * (1.0 / 255.0)
        x = self._dropout(x + self.pe_norm(self.pe_table), training)
        x = self.embedding(x, capture)
        for i, names in enumerate(self.encoder_names):
            suffix = "" if i == 0 else f"_{i + 1}"
            x = self._encoder_layer(
                x,
                [getattr(self, name) for name in names],
                getattr(self, "attention_norm" + suffix),
                getattr(self, "ffn_norm" + suffix),
                training,
                capture,
            )
        token_logits = self.head(x, capture)[..., :N_CLASSES]
        return tf.reduce_sum(token_logits, axis=1)


MODEL_CLASSES: dict[str, type[FCModel] | type[TransformerModel]] = {
    cls.model_name: cls for cls in (FCModel, TransformerModel)
}


def build_model(
    settings: ModelSettings, dropout_rng: tf.random.Generator
) -> FCModel | TransformerModel:
    """The model of a sample (its class registered under the settings' model name)."""
    return MODEL_CLASSES[settings.model](settings, dropout_rng)  # type: ignore[arg-type]
