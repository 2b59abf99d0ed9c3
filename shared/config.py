"""One validated configuration of a link, shared by both ends.

Every field is settable by a CLI flag (``--capacity 256``) and by an environment variable with the
``HOPLINK_`` prefix (``HOPLINK_CAPACITY=256``); flags win. Two ends prove they agree by comparing
:meth:`LinkConfig.digest` in their HELLO.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from typing import Any, Literal, get_args, get_origin

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.codec.zoo import card_grid, codec_card, codec_kind
from shared.coding.quantizer import Grid
from shared.memory.adaptive import AdaptiveSimilarity, load_adaptive

MemoryKind = Literal["hopfield", "vq", "adaptive"]
TransmissionMode = Literal["index", "soft"]
EvictionPolicy = Literal["fifo", "lru", "freeze"]
DecisionRule = Literal["paper", "rdo"]
CodedCuePolicy = Literal["on_change", "every_reference"]
TokenSkipRule = Literal["sticky", "best"]
LatentGridKind = Literal["uniform", "per_dim"]
MAX_DELTA_CHOICES = 4


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


class LinkConfig(BaseSettings):
    """Parameters both ends of a link must share (the digest covers all of them)."""

    model_config = SettingsConfigDict(env_prefix="HOPLINK_", frozen=True, extra="forbid")
    # What the fields name on disk (a codec card's grid, the adaptive memory's weights), read
    # once when the configuration is built, so that no core touches a file.
    _grid: Grid = PrivateAttr(1.0)
    _similarity: AdaptiveSimilarity | None = PrivateAttr(None)
    _tokens: bool = PrivateAttr(False)

    codec: str = Field("ae64", description="name of the shipped codec (encoder/decoder weights)")
    latent_dim: int = Field(64, ge=2, le=4096, description="latent dimension d")
    bits_per_value: int = Field(8, ge=1, le=16, description="quantizer bits per latent value b")
    latent_range: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="quantizer range R: latent values in [-R, R] use the 2^b cells (1 = the "
        "paper; a codec card's fitted_latent_range spends the bits on finer cells)",
    )
    latent_grid: LatentGridKind = Field(
        "uniform",
        description="quantizer cells: uniform (every dimension on [-R, R]) or per_dim (each "
        "dimension on its own interval, fitted to the codec and read from its card)",
    )
    capacity: int = Field(256, ge=1, le=1 << 20, description="memory capacity M (prototypes)")
    beta: float = Field(20.0, gt=0, le=1e4, description="Hopfield inverse temperature β (eq. 4)")
    hopfield_steps: int = Field(1, ge=1, le=100, description="Hopfield update iterations (HEN)")
    hopfield_eps: float = Field(1e-4, gt=0, description="stop iterating when the update moves less")
    metastable_threshold: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="HEN: a recall whose state is not within this cosine of any single prototype "
        "is a meta-stable mixture and counts as a miss (0 disables)",
    )
    threshold: float = Field(0.98, ge=-1.0, le=1.0, description="hit threshold τ on cosine (eq. 1)")
    memory: MemoryKind = Field(
        "hopfield", description="memory kind: hopfield (soft), vq (hard), adaptive (A-Hop)"
    )
    transmission: TransmissionMode = Field(
        "index", description="index: send the best reference; soft: top-k references + weights"
    )
    top_k: int = Field(4, ge=1, le=64, description="references sent per hit in soft mode")
    weight_bits: int = Field(4, ge=1, le=16, description="bits per soft weight")
    cue_bits: int = Field(32, ge=0, le=64, description="SimHash cue length K (0 disables cues)")
    cue_tolerance: int = Field(3, ge=0, le=64, description="cue Hamming tolerance t")
    eviction: EvictionPolicy = Field(
        "fifo", description="at capacity: fifo/lru overwrite a slot, freeze stops adding"
    )
    seed: int = Field(0, ge=0, description="seed of the cue hyperplanes and of impairments")
    # Beyond the paper (shared/coding/rdo.py, entropy.py): all off by default = paper-faithful.
    decision: DecisionRule = Field(
        "paper",
        description="frame decision: paper (hit iff similarity ≥ τ) or rdo (min D + λ·R)",
    )
    rdo_lambda: float = Field(
        1e-4, ge=0.0, le=1e3, description="λ of the rdo decision, distortion (1 − cos) per bit"
    )
    delta: bool = Field(
        False, description="on a miss, also offer the residual to the recalled prototype (DELTA)"
    )
    delta_bits: str = Field(
        "2,3,4", description="bits per dimension b′ a DELTA residual may use (comma-separated)"
    )
    entropy_coding: bool = Field(
        False, description="send each frame's symbols range-coded with adaptive models (CODED)"
    )
    entropy_reset: int = Field(
        30, ge=1, le=1 << 16, description="entropy models reset every this many frames (by seq)"
    )
    coded_cue: CodedCuePolicy = Field(
        "on_change",
        description="entropy-coded links: send a reference's cue on_change (when it is not the "
        "previous frame's) or with every_reference",
    )

    token_skip: TokenSkipRule = Field(
        "sticky",
        description="token links: a hit token is a SKIP when its position's previous prototype "
        "still passes τ (sticky) or only when it is also the best recall (best, eq. 1 verbatim)",
    )

    @field_validator("delta_bits")
    @classmethod
    def _canonical_delta_bits(cls, value: str) -> str:
        """Canonical form ("4, 2,3" → "2,3,4"): equal sets give equal digests."""
        try:
            return ",".join(str(w) for w in sorted({int(p) for p in value.split(",") if p.strip()}))
        except ValueError:
            raise ValueError(f"must be comma-separated integers, got {value!r}") from None

    @model_validator(mode="after")
    def _consistent(self) -> LinkConfig:
        if self.cue_tolerance > self.cue_bits:
            raise ValueError(
                f"cue_tolerance ({self.cue_tolerance}) must not exceed cue_bits ({self.cue_bits})"
            )
        if self.memory == "vq" and self.transmission == "soft":
            raise ValueError("memory=vq has no soft recall: use transmission=index")
        if self.transmission == "soft" and self.top_k > self.capacity:
            raise ValueError(f"top_k ({self.top_k}) must not exceed capacity ({self.capacity})")
        if self.uses_link_tools and self.transmission != "index":
            raise ValueError("decision=rdo, delta and entropy_coding send one reference: use index")
        if self.delta:
            self.delta_bit_set  # noqa: B018 (validates the widths against b)
        self._grid = self.latent_range
        if self.latent_grid == "per_dim":
            if self.latent_range != 1.0:
                raise ValueError("latent_range sets the uniform grid: leave it at 1 with per_dim")
            grid = self._grid = card_grid(self.codec)
            if grid.dim != self.latent_dim:
                raise ValueError(
                    f"latent_grid=per_dim: codec {self.codec!r}'s grid has {grid.dim} "
                    f"dimensions but latent_dim={self.latent_dim}"
                )
        if self.memory == "adaptive":
            self._similarity = load_adaptive(self.latent_dim)
        self._tokens = codec_kind(self.codec) == "tokens"
        if self._tokens and (
            self.transmission != "index" or self.decision != "paper" or self.delta
        ):
            raise ValueError(
                f"codec {self.codec!r} makes token grids: its link sends one index per token "
                "(transmission=index, decision=paper, no delta); every token frame is range-coded"
            )
        return self

    def quantizer_grid(self) -> Grid:
        """What quantize/dequantize take: the range R, or the codec's per-dimension grid."""
        return self._grid

    def adaptive_similarity(self) -> AdaptiveSimilarity:
        """The adaptive memory's learned similarity (memory=adaptive only)."""
        if self._similarity is None:
            raise ValueError(f"memory={self.memory!r} has no adaptive similarity")
        return self._similarity

    @property
    def token_link(self) -> bool:
        """True when the codec makes a grid of tokens per frame (shared/coding/tokens.py)."""
        return self._tokens

    @property
    def uses_link_tools(self) -> bool:
        """True when any tool beyond the paper is on (rdo decision, DELTA, entropy coding)."""
        return self.decision != "paper" or self.delta or self.entropy_coding

    @property
    def delta_bit_set(self) -> tuple[int, ...]:
        """The sorted residual widths b′ of ``delta_bits``; each in [2, b − 1]."""
        widths = [int(part) for part in self.delta_bits.split(",") if part]
        if not 1 <= len(widths) <= MAX_DELTA_CHOICES:
            raise ValueError(f"delta_bits needs 1 to {MAX_DELTA_CHOICES} widths, got {widths}")
        if not all(1 < w < self.bits_per_value for w in widths):
            raise ValueError(
                f"delta_bits {widths}: each b′ must lie in [2, bits_per_value − 1 = "
                f"{self.bits_per_value - 1}]"
            )
        return tuple(widths)

    @property
    def index_bits(self) -> int:
        """⌈log2 M⌉ bits of one reference (eq. 3); at least one bit."""
        return max(1, math.ceil(math.log2(self.capacity)))

    def digest(self) -> str:
        """Stable sha256 of every field, in canonical JSON (sorted keys), and of a per_dim
        grid's intervals (two ends whose cards differ must not pass HELLO)."""
        fields = self.model_dump(mode="json")
        if self.latent_grid == "per_dim":
            fields["latent_grid_digest"] = self.quantizer_grid().digest()
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def replace(self, **changes: Any) -> LinkConfig:
        """A validated copy with some fields changed (environment variables not re-read)."""
        return build_config({**self.model_dump(), **changes}, read_env=False)


def build_config(values: dict[str, Any] | None = None, *, read_env: bool = True) -> LinkConfig:
    """Validate ``values`` (over environment variables when ``read_env``) into a LinkConfig.

    A codec's card may name ``link_defaults`` (a token codec's d, b, M and τ differ from the
    paper's): they fill the fields that neither ``values`` nor an environment variable set.
    """
    values = {k: v for k, v in (values or {}).items() if v is not None}
    env = os.environ if read_env else {}
    codec = (
        values.get("codec") or env.get("HOPLINK_CODEC") or LinkConfig.model_fields["codec"].default
    )
    for name, value in codec_card(codec).get("link_defaults", {}).items():
        if name not in values and f"HOPLINK_{name.upper()}" not in env:
            values[name] = value
    try:
        if read_env:
            return LinkConfig(**values)
        return LinkConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{field}: {err['msg']} (got {err.get('input')!r})")
    return "invalid link configuration: " + "; ".join(parts)


_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


def _switch_value(text: str) -> bool:
    """A boolean flag's optional value: ``--delta`` alone is true; ``--delta false`` still works."""
    word = text.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per LinkConfig field; defaults stay None so env/defaults apply.

    A boolean field is a switch: ``--delta`` turns it on, ``--no-delta`` off, and the older
    ``--delta true`` / ``--delta false`` still parse.
    """
    group = parser.add_argument_group("link configuration (also HOPLINK_<FIELD> env vars)")
    for name, field in LinkConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": name, "default": None}
        if field.annotation is bool:
            kwargs.update(nargs="?", const=True, type=_switch_value, metavar="true|false")
            default = "on" if field.default else "off"
            switch = f"a switch; --no-{flag[2:]} turns it off; default {default}"
            group.add_argument(flag, help=f"{field.description} ({switch})", **kwargs)
            group.add_argument(
                "--no-" + name.replace("_", "-"),
                dest=name,
                action="store_false",
                default=None,
                help=argparse.SUPPRESS,
            )
            continue
        if get_origin(field.annotation) is Literal:
            kwargs["choices"] = get_args(field.annotation)
        elif field.annotation in (int, float):
            kwargs["type"] = field.annotation
        kwargs["help"] = f"{field.description} (default {field.default})"
        group.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace) -> LinkConfig:
    return build_config({name: getattr(args, name, None) for name in LinkConfig.model_fields})
