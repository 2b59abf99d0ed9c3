"""The learned codec: frames <-> unit-norm latents (the ``z_t`` of the design's link diagram).

A codec is a named entry in :data:`CODECS` (its architecture, a :class:`CodecSpec`) plus a
weights file ``shared/codec/weights/<name>.pt`` and a card ``<name>.json`` beside it saying how
the weights were trained and what they reach (written by :mod:`experiments.training`).

:class:`Encoder` and :class:`Decoder` are the trainable ``nn.Module``s; :class:`Codec` is the
inference wrapper both ends use (eval mode, no autograd, numpy in and out). Two ends agree on a
codec by comparing :attr:`Codec.digest`, the sha256 of the weights file, in their HELLO.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared.codec.zoo import codec_card, codecs_dir
from shared.config import ConfigError
from shared.scenarios import iter_frames

__all__ = [
    "CODECS",
    "Codec",
    "CodecError",
    "CodecSpec",
    "Decoder",
    "Encoder",
    "codec_card",
    "codecs_dir",
    "codec_for",
    "load_codec",
    "save_codec",
]


class CodecError(ValueError):
    """A codec could not be found or loaded, or was given input of the wrong shape or type."""


_ACTIVATIONS = {
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
    "gelu": lambda: nn.GELU(),
}


@dataclass(frozen=True)
class CodecSpec:
    """Architecture of a codec: everything needed to build its modules before loading weights.

    The encoder halves the resolution once per entry of ``widths`` (stride-2 convolutions), so
    ``frame_size / 2**len(widths)`` is the side of the last feature map that the linear layer to
    ``latent_dim`` reads. The decoder mirrors it: a linear layer to ``dec_widths[0]`` channels at
    ``frame_size / 2**len(dec_widths)``, one 2x upsampling per further entry, and a last one to
    RGB (the ``head``).
    """

    name: str
    latent_dim: int = 64
    frame_size: int = 64
    channels: int = 3  # image channels (RGB)
    widths: tuple[int, ...] = (24, 48, 96)  # encoder channels after each stride-2 conv
    dec_widths: tuple[int, ...] = (96, 48, 24)  # decoder channels, one entry per scale
    stem_kernel: int = 3  # kernel of the first encoder conv (the others are 3x3)
    res_blocks: int = 0  # residual 3x3 conv blocks at the smallest scale (encoder and decoder)
    activation: str = "leaky_relu"  # "leaky_relu" | "gelu"
    upsample: str = "conv_transpose"  # inner upsamplings: "conv_transpose" | "pixel_shuffle"
    # Last upsampling to RGB: "shuffle3" (3x3 conv to 4*C channels, then pixel shuffle),
    # "shuffle1" (the same with a 1x1 conv) or "conv_transpose" (4x4, stride 2).
    head: str = "shuffle3"
    # Normalization after each resampling conv: "none" (the activation alone) or "gdn"
    # (generalized divisive normalization in the encoder, its inverse in the decoder).
    norm: str = "none"

    def __post_init__(self) -> None:
        for field in ("widths", "dec_widths"):
            n = len(getattr(self, field))
            side = self.frame_size >> n
            if n < 1 or side < 1 or side << n != self.frame_size:
                raise CodecError(
                    f"codec {self.name!r}: frame_size {self.frame_size} is not divisible by "
                    f"2**{n} (one halving per entry of {field})"
                )
        if self.activation not in _ACTIVATIONS:
            raise CodecError(f"codec {self.name!r}: unknown activation {self.activation!r}")
        if self.upsample not in ("pixel_shuffle", "conv_transpose"):
            raise CodecError(f"codec {self.name!r}: unknown upsample {self.upsample!r}")
        if self.head not in ("conv_transpose", "shuffle1", "shuffle3"):
            raise CodecError(f"codec {self.name!r}: unknown head {self.head!r}")
        if self.norm not in ("none", "gdn"):
            raise CodecError(f"codec {self.name!r}: unknown norm {self.norm!r}")

    @property
    def bottleneck_side(self) -> int:
        """Side of the encoder's smallest feature map (8 for 64x64 frames and three stages)."""
        return self.frame_size >> len(self.widths)

    @property
    def decoder_side(self) -> int:
        """Side of the decoder's first feature map."""
        return self.frame_size >> len(self.dec_widths)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["dec_widths"] = list(self.dec_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CodecSpec:
        return cls(**{**d, "widths": tuple(d["widths"]), "dec_widths": tuple(d["dec_widths"])})

    def nonlinearity(self, channels: int, inverse: bool = False) -> nn.Module:
        """What follows a resampling conv: the activation, or (I)GDN over ``channels``."""
        if self.norm == "gdn":
            return GDN(channels, inverse=inverse)
        return _ACTIVATIONS[self.activation]()


CODECS: dict[str, CodecSpec] = {
    # Default: 64x64 RGB -> 64-d unit-norm latent.
    "ae64": CodecSpec(name="ae64"),
    # The same network trained longer (warm-started from ae64), and larger latents from it.
    "ae64v2": CodecSpec(name="ae64v2"),
    # ae64's encoder with a decoder twice as wide, warm-started from ae64.
    "ae64w": CodecSpec(name="ae64w", dec_widths=(192, 96, 48)),
    "ae64d128": CodecSpec(name="ae64d128", latent_dim=128),
    "ae64d256": CodecSpec(name="ae64d256", latent_dim=256),
    # ae64 fine-tuned by Algorithm 1 (experiments/capacity.py) for reasoning capacity.
    "ae64cap": CodecSpec(name="ae64cap"),
    # 128x128 frames: one more stride-2 stage, so the bottleneck is 8x8 again.
    "ae128": CodecSpec(
        name="ae128",
        latent_dim=128,
        frame_size=128,
        widths=(24, 48, 96, 96),
        dec_widths=(96, 96, 48, 24),
    ),
}


class GDN(nn.Module):
    """Simplified generalized divisive normalization (Johnston et al., 2019), per pixel:
    ``y_i = x_i / (beta_i + sum_j gamma_ij |x_j|)``; the inverse (IGDN, for decoders) multiplies.

    Ballé's GDN divides by a square root of squares; the L1 form trains as well and is cheaper.
    ``beta`` and ``gamma`` are kept non-negative by storing their square roots.
    """

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_root = nn.Parameter(torch.ones(channels))
        self.gamma_root = nn.Parameter((0.1 * torch.eye(channels)).sqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        gamma = self.gamma_root.square().view(c, c, 1, 1)
        norm = F.conv2d(x.abs(), gamma, self.beta_root.square() + 1e-6)
        return x * norm if self.inverse else x / norm


class _ResBlock(nn.Module):
    def __init__(self, ch: int, act: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), _ACTIVATIONS[act](), nn.Conv2d(ch, ch, 3, padding=1)
        )
        self.act = _ACTIVATIONS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class Encoder(nn.Module):
    """Strided conv net: (B, C, S, S) in [0, 1] -> (B, d) with unit L2 norm."""

    def __init__(self, spec: CodecSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = spec.channels
        for i, w in enumerate(spec.widths):
            k = spec.stem_kernel if i == 0 else 3
            layers += [nn.Conv2d(ch, w, k, stride=2, padding=(k - 1) // 2), spec.nonlinearity(w)]
            ch = w
        layers += [_ResBlock(ch, spec.activation) for _ in range(spec.res_blocks)]
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(ch * spec.bottleneck_side**2, spec.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.project(self.features(x).flatten(1))
        return F.normalize(z, dim=1)


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`: (B, d) unit-norm latents -> (B, C, S, S) in [0, 1]."""

    def __init__(self, spec: CodecSpec) -> None:
        super().__init__()
        self.side = spec.decoder_side
        self.top = spec.dec_widths[0]
        # Unit-norm inputs have entries of size ~1/sqrt(d); rescale them to ~1 for the linear.
        self.input_scale = float(spec.latent_dim) ** 0.5
        self.expand = nn.Linear(spec.latent_dim, self.top * self.side**2)
        layers: list[nn.Module] = [_ACTIVATIONS[spec.activation]()]
        layers += [_ResBlock(self.top, spec.activation) for _ in range(spec.res_blocks)]
        ch = self.top
        for out in spec.dec_widths[1:]:
            if spec.upsample == "pixel_shuffle":
                layers += [nn.Conv2d(ch, out * 4, 3, padding=1), nn.PixelShuffle(2)]
            else:
                layers.append(nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1))
            layers.append(spec.nonlinearity(out, inverse=True))
            ch = out
        c = spec.channels
        if spec.head == "conv_transpose":
            layers.append(nn.ConvTranspose2d(ch, c, 4, stride=2, padding=1))
        else:
            k = 1 if spec.head == "shuffle1" else 3
            layers += [nn.Conv2d(ch, c * 4, k, padding=k // 2), nn.PixelShuffle(2)]
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.expand(z * self.input_scale).view(z.shape[0], self.top, self.side, self.side)
        return torch.sigmoid(self.features(h))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Codec:
    """Inference wrapper: uint8 frames <-> float32 unit-norm latents, in eval mode, no grad.

    Outputs are always batched: one frame (S, S, 3) encodes to (1, d), one latent (d,) decodes
    to (1, S, S, 3). Calls from several threads are serialized by a lock, because the input and
    output buffers are preallocated.
    """

    def __init__(self, spec: CodecSpec, weights_path: Path) -> None:
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise CodecError(f"weights for codec {spec.name!r} not found at {weights_path}")
        try:
            blob = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or foreign file
            raise CodecError(f"cannot read weights {weights_path}: {exc}") from exc
        if not isinstance(blob, dict) or "spec" not in blob or "state_dict" not in blob:
            raise CodecError(f"weights {weights_path} lack the 'spec'/'state_dict' entries")
        try:
            stored = CodecSpec.from_dict(blob["spec"])
        except (TypeError, KeyError) as exc:
            raise CodecError(f"weights {weights_path} carry an unreadable spec: {exc}") from exc
        if stored != spec:
            diff = ", ".join(
                f"{k}: {v!r} != {getattr(spec, k)!r}"
                for k, v in vars(stored).items()
                if v != getattr(spec, k)
            )
            raise CodecError(f"weights {weights_path} were trained for another spec ({diff})")
        self.spec = spec
        self.name = spec.name
        self.latent_dim = spec.latent_dim
        self.frame_size = spec.frame_size
        self.weights_path = weights_path
        self.digest = _sha256(weights_path)
        self.encoder = Encoder(spec).eval()
        self.decoder = Decoder(spec).eval()
        try:
            self.encoder.load_state_dict(_strip(blob["state_dict"], "encoder."))
            self.decoder.load_state_dict(_strip(blob["state_dict"], "decoder."))
        except RuntimeError as exc:
            raise CodecError(
                f"weights {weights_path} do not fit codec {spec.name!r}: {exc}"
            ) from exc
        # Channels-last: ~20 % faster convolutions on CPU, and a frame's HWC bytes map onto the
        # input buffer (and the output onto HWC) without a transposing copy.
        cl = torch.channels_last
        self.encoder.to(memory_format=cl).requires_grad_(False)
        self.decoder.to(memory_format=cl).requires_grad_(False)
        s, c = spec.frame_size, spec.channels
        self._frame_shape = (s, s, c)
        self._x = torch.empty(1, c, s, s).contiguous(memory_format=cl)  # reused by every encode
        self._z = torch.empty(1, spec.latent_dim)  # one latent, reused by every decode
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Codec({self.name!r}, d={self.latent_dim}, S={self.frame_size}, {self.digest[:12]})"

    # Both loops below run the networks on ONE frame / latent at a time. The Tx encodes frames
    # one by one as they arrive, and the in-process simulator (which may batch a whole clip) must
    # reach the very same link decisions, so a frame's latent must be bit-identical whether it is
    # encoded alone or inside a batch. Batched convolutions/GEMMs may pick other kernels or
    # summation orders and differ in the last bits, which can flip a hit/miss at the threshold.

    def source_frames(self, source: str, n_frames: int | None, seed: int) -> Iterator[np.ndarray]:
        """The frames of ``source`` as this codec takes them: square, ``frame_size`` px."""
        return iter_frames(source, n_frames, self.frame_size, seed)

    def encode_frame(self, frame: np.ndarray) -> np.ndarray:
        """What the link carries for one frame: its (d,) latent."""
        return self.encode(frame)[0]

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (N, S, S, 3) or (S, S, 3) -> float32 latents (N, d), unit L2 norm."""
        frames = np.ascontiguousarray(frames)  # torch.from_numpy needs positive strides
        if frames.dtype != np.uint8:
            raise CodecError(f"codec {self.name!r}: frames must be uint8, got {frames.dtype}")
        if frames.shape == self._frame_shape:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != self._frame_shape:
            raise CodecError(
                f"codec {self.name!r}: expected frames of shape (N, {self.frame_size}, "
                f"{self.frame_size}, {self.spec.channels}) or {self._frame_shape}, got "
                f"{frames.shape}; resize frames to {self.frame_size}x{self.frame_size} first"
            )
        out = np.empty((frames.shape[0], self.latent_dim), dtype=np.float32)
        out_t = torch.from_numpy(out)
        with self._lock, torch.inference_mode():
            x = self._x
            for i in range(frames.shape[0]):
                x[0].copy_(torch.from_numpy(frames[i]).permute(2, 0, 1)).mul_(1.0 / 255.0)
                out_t[i] = self.encoder(x)[0]
        return out

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """float32 latents (N, d) or (d,) -> uint8 frames (N, S, S, 3), rounded and clipped."""
        latents = np.ascontiguousarray(latents)
        if latents.dtype != np.float32:
            if not np.issubdtype(latents.dtype, np.floating):
                raise CodecError(
                    f"codec {self.name!r}: latents must be float32, got {latents.dtype}"
                )
            latents = latents.astype(np.float32)
        if latents.shape == (self.latent_dim,):
            latents = latents[None]
        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise CodecError(
                f"codec {self.name!r}: expected latents of shape (N, {self.latent_dim}) or "
                f"({self.latent_dim},), got {latents.shape}"
            )
        if not np.isfinite(latents).all():
            raise CodecError(f"codec {self.name!r}: latents contain NaN or inf")
        s = self.frame_size
        out = np.empty((latents.shape[0], s, s, self.spec.channels), dtype=np.uint8)
        out_t = torch.from_numpy(out)
        with self._lock, torch.inference_mode():
            z = self._z
            for i in range(latents.shape[0]):
                z.copy_(torch.from_numpy(latents[i : i + 1]))
                y = self.decoder(z)[0].mul_(255.0).round_().clamp_(0.0, 255.0)
                out_t[i].copy_(y.permute(1, 2, 0))  # float -> uint8 cast on copy
        return out


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def save_codec(spec: CodecSpec, encoder: Encoder, decoder: Decoder, path: Path) -> Path:
    """Write weights as the loader reads them: the spec and a float16 state_dict.

    float16 halves the file (a d = 256 codec is 6.6 MB instead of 13) and costs nothing visible:
    the loader widens every tensor to float32, and a card's PSNRs are measured on the stored file.
    """
    state = {
        f"{prefix}.{k}": v.detach().cpu().half().contiguous()
        for prefix, module in (("encoder", encoder), ("decoder", decoder))
        for k, v in module.state_dict().items()
    }
    torch.save({"spec": spec.to_dict(), "state_dict": state}, path)
    return path


def load_codec(name: str = "ae64", weights_dir: Path | None = None) -> Codec:
    """Load codec ``name`` from ``<weights_dir or codecs_dir()>/<name>.pt``."""
    spec = CODECS.get(name)
    if spec is None:
        raise CodecError(f"unknown codec {name!r}; known codecs: {sorted(CODECS)}")
    path = Path(weights_dir if weights_dir is not None else codecs_dir()) / f"{name}.pt"
    if not path.is_file():
        raise CodecError(f"weights for codec {name!r} not found at {path}")
    return Codec(spec, path)


def codec_for(config, codec: Codec | None = None) -> Codec:
    """The codec a link configuration names (or ``codec``), checked against its latent_dim."""
    codec = codec or load_codec(config.codec)
    if codec.latent_dim != config.latent_dim:
        raise ConfigError(
            f"latent_dim={config.latent_dim} but codec {codec.name!r} makes "
            f"{codec.latent_dim}-d latents; set --latent-dim {codec.latent_dim}"
        )
    return codec
