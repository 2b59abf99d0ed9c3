"""Token codecs: a frame of any size <-> a grid of unit-norm tokens (DESIGN "token grids").

A token codec is fully convolutional: it keeps the frame's aspect ratio and turns every
``stride`` x ``stride`` block into one ``latent_dim``-dimensional token whose unit-norm direction
is what the memory stores (the paper's latent, per block). There is no gain: the decoder reads
directions only, so a recalled prototype is all the Rx needs for a token.

Like the single-latent codecs (:mod:`shared.codec.models`), a token codec is a named entry in
:data:`TOKEN_CODECS` plus ``weights/<name>.pt`` and a card ``<name>.json`` (written by
:mod:`experiments.train_tokens`); two ends agree on it by the sha256 of its weights.
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

from shared.codec.models import codec_for
from shared.codec.zoo import codecs_dir
from shared.scenarios import DEFAULT_SHORT_SIDE, iter_working_frames, working_size

__all__ = [
    "DEFAULT_SHORT_SIDE",
    "TOKEN_CODECS",
    "TokenCodec",
    "TokenCodecSpec",
    "TokenDecoder",
    "TokenEncoder",
    "link_codec",
    "load_token_codec",
    "save_token_codec",
    "working_size",
]


class TokenCodecError(ValueError):
    """A token codec could not be loaded, or got input of the wrong shape or type."""


@dataclass(frozen=True)
class TokenCodecSpec:
    """Architecture of a token codec.

    The encoder halves the resolution once per entry of ``widths`` (so ``stride`` is
    ``2**len(widths)``), runs ``res_blocks`` residual blocks at the token scale and projects to
    ``latent_dim`` channels, normalized per position. The decoder mirrors it with pixel-shuffle
    upsampling.
    """

    name: str
    latent_dim: int = 16
    widths: tuple[int, ...] = (32, 64, 96)
    res_blocks: int = 1

    @property
    def stride(self) -> int:
        return 2 ** len(self.widths)

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d: dict) -> TokenCodecSpec:
        return cls(**{**d, "widths": tuple(d["widths"])})


TOKEN_CODECS: dict[str, TokenCodecSpec] = {
    # Stride 8, 16-d tokens: a 240x424 frame is a 30x53 grid of 1,590 tokens.
    "tok8d16": TokenCodecSpec(name="tok8d16"),
}


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(ch, ch, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class TokenEncoder(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, d, H/s, W/s), unit L2 norm along d."""

    def __init__(self, spec: TokenCodecSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for i, w in enumerate(spec.widths):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(ch, w, k, stride=2, padding=k // 2), nn.ReLU(inplace=True)]
            ch = w
        layers += [_ResBlock(ch) for _ in range(spec.res_blocks)]
        layers.append(nn.Conv2d(ch, spec.latent_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


class TokenDecoder(nn.Module):
    """(B, d, h, w) unit-norm tokens -> (B, 3, h*s, w*s) in [0, 1]."""

    def __init__(self, spec: TokenCodecSpec) -> None:
        super().__init__()
        widths = spec.widths[::-1]
        # Unit-norm tokens have entries of size ~1/sqrt(d); rescale them to ~1 for the first conv.
        self.input_scale = float(spec.latent_dim) ** 0.5
        layers: list[nn.Module] = [
            nn.Conv2d(spec.latent_dim, widths[0], 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        layers += [_ResBlock(widths[0]) for _ in range(spec.res_blocks)]
        ch = widths[0]
        for out in widths[1:]:
            layers += [nn.Conv2d(ch, out * 4, 3, padding=1), nn.PixelShuffle(2)]
            layers.append(nn.ReLU(inplace=True))
            ch = out
        layers += [nn.Conv2d(ch, 3 * 4, 3, padding=1), nn.PixelShuffle(2)]  # to RGB, no ReLU
        self.net = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(tokens * self.input_scale))


def save_token_codec(spec: TokenCodecSpec, encoder, decoder, path: Path) -> Path:
    """Write the spec and a float16 state_dict (half the file; the loader widens to float32)."""
    state = {
        f"{prefix}.{k}": v.detach().cpu().half().contiguous()
        for prefix, module in (("encoder", encoder), ("decoder", decoder))
        for k, v in module.state_dict().items()
    }
    torch.save({"spec": spec.to_dict(), "kind": "tokens", "state_dict": state}, path)
    return path


class TokenCodec:
    """Inference wrapper: uint8 frames (H, W, 3) <-> float32 token grids (H/s, W/s, d).

    One frame at a time, so a frame's tokens are bit-identical whichever process or batch
    encodes it (batched kernels may sum in another order and flip a decision at the threshold).
    """

    def __init__(self, spec: TokenCodecSpec, weights_path: Path) -> None:
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise TokenCodecError(
                f"weights for token codec {spec.name!r} not found at {weights_path}"
            )
        blob = torch.load(weights_path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("kind") != "tokens":
            raise TokenCodecError(f"{weights_path} holds no token codec")
        stored = TokenCodecSpec.from_dict(blob["spec"])
        if stored != spec:
            raise TokenCodecError(f"{weights_path} was trained for another spec: {stored}")
        self.spec = spec
        self.name = spec.name
        self.latent_dim = spec.latent_dim
        self.stride = spec.stride
        self.weights_path = weights_path
        self.digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        self.encoder = TokenEncoder(spec).eval()
        self.decoder = TokenDecoder(spec).eval()
        state = blob["state_dict"]
        for prefix, module in (("encoder.", self.encoder), ("decoder.", self.decoder)):
            module.load_state_dict(
                {k[len(prefix) :]: v.float() for k, v in state.items() if k.startswith(prefix)}
            )
            module.requires_grad_(False)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"TokenCodec({self.name!r}, d={self.latent_dim}, s={self.stride}, {self.digest[:12]})"
        )

    def working_size(self, height: int, width: int, short_side: int = DEFAULT_SHORT_SIDE):
        return working_size(height, width, self.stride, short_side)

    def source_frames(self, source: str, n_frames: int | None, seed: int) -> Iterator[np.ndarray]:
        """The frames of ``source`` as this codec takes them: at their working size."""
        return iter_working_frames(source, n_frames, self.stride, DEFAULT_SHORT_SIDE, seed)

    def encode_frame(self, frame: np.ndarray) -> np.ndarray:
        """What the link carries for one frame: its (h, w, d) token grid."""
        return self.encode(frame)

    def encode(self, frame: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3), H and W multiples of the stride -> float32 (H/s, W/s, d), unit norm."""
        frame = np.ascontiguousarray(frame)
        s = self.stride
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise TokenCodecError(
                f"token codec {self.name!r}: expected a uint8 (H, W, 3) frame, got "
                f"{frame.dtype} {frame.shape}"
            )
        if frame.shape[0] % s or frame.shape[1] % s:
            raise TokenCodecError(
                f"token codec {self.name!r}: frame {frame.shape[0]}x{frame.shape[1]} is not a "
                f"multiple of the stride {s}; bring it to its working size first "
                "(shared.scenarios.to_working_size)"
            )
        with self._lock, torch.inference_mode():
            x = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div_(255.0)
            return self.encoder(x)[0].permute(1, 2, 0).contiguous().numpy()

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """float32 (h, w, d) tokens -> uint8 (h*s, w*s, 3), rounded and clipped."""
        tokens = np.ascontiguousarray(tokens, dtype=np.float32)
        if tokens.ndim != 3 or tokens.shape[2] != self.latent_dim:
            raise TokenCodecError(
                f"token codec {self.name!r}: expected tokens (h, w, {self.latent_dim}), got "
                f"{tokens.shape}"
            )
        if not np.isfinite(tokens).all():
            raise TokenCodecError(f"token codec {self.name!r}: tokens contain NaN or inf")
        with self._lock, torch.inference_mode():
            t = torch.from_numpy(tokens).permute(2, 0, 1)[None]
            y = self.decoder(t)[0].mul_(255.0).round_().clamp_(0.0, 255.0)
            return y.permute(1, 2, 0).to(torch.uint8).contiguous().numpy()


def load_token_codec(name: str = "tok8d16", weights_dir: Path | None = None) -> TokenCodec:
    """Load token codec ``name`` from ``<weights_dir or codecs_dir()>/<name>.pt``."""
    spec = TOKEN_CODECS.get(name)
    if spec is None:
        raise TokenCodecError(f"unknown token codec {name!r}; known: {sorted(TOKEN_CODECS)}")
    path = Path(weights_dir if weights_dir is not None else codecs_dir()) / f"{name}.pt"
    return TokenCodec(spec, path)


def link_codec(config, codec=None):
    """The codec a link configuration names: a token codec for a token link, else the
    single-latent codec (checked against ``latent_dim`` either way)."""
    if not config.token_link:
        return codec_for(config, codec)
    codec = codec or load_token_codec(config.codec)
    if codec.latent_dim != config.latent_dim:
        raise TokenCodecError(
            f"latent_dim={config.latent_dim} but token codec {codec.name!r} makes "
            f"{codec.latent_dim}-d tokens; set --latent-dim {codec.latent_dim}"
        )
    return codec
