"""Physical layer: bit errors from an SNR, a modulation, AWGN or Rayleigh block fading and FEC;
airtime and spectral efficiency.

Instead of a fixed ``ber`` (see :mod:`channel.impairments.bit_errors`), each message's bit-error
probability follows from the link budget, and the bits are flipped by the same machinery
(payload fields, or ``whole_frame``).

SNR. ``snr_db`` is read according to ``snr_mode``:

* ``"ebn0"`` (default) — Eb/N0 per *transmitted* (coded) bit, Ec/N0: the quality of the channel.
  FEC then costs airtime, not energy per symbol;
* ``"esn0"`` — Es/N0 per symbol: Ec/N0 = Es/N0 / log2 M;
* ``"ebn0_info"`` — Eb/N0 per *information* bit (the textbook convention for comparing codes):
  Ec/N0 = R · Eb/N0 with R the code rate, so the code's redundancy also spreads the energy (a
  hard-decision repetition code then does worse than no code).

Bit-error probability per coded bit at Ec/N0 = γ (Gray mapping, coherent hard decisions), with
Q(x) = ½·erfc(x/√2):

* BPSK, QPSK:   p = Q(√(2γ))                                               (exact)
* M-QAM:        p ≈ (4/log2 M)(1 − 1/√M) · Q(√(3·log2 M·γ / (M − 1)))    (nearest neighbours,
  ``ber_formula="approximate"``, the default; exact for QPSK, within a few % of the exact Gray
  BER for 16- and 64-QAM at moderate SNR; low SNR makes it optimistic: 64-QAM at 0 dB, 0.173 vs
  0.200 exact over AWGN, 0.189 vs 0.247 averaged over Rayleigh fades);
* ``ber_formula="exact"``: the exact Gray BER of the √M-PAM on each axis,
  p = Σ_d a_d·Q(d·√(3·log2 M·γ / (M − 1))) over odd d (e.g. 16-QAM: ¼[3Q(x) + 2Q(3x) − Q(5x)]),
  with a_d counted from the Gray labels of the levels and their decision regions.

FEC (hard-decision decoding; k information bits → n coded bits, rate R = k/n):

* ``repetition3`` (1→3, majority vote): p_res = 3p² − 2p³ (exact; every information bit has
  its own three coded bits);
* ``hamming74`` (4→7, systematic, syndrome decoding, corrects one error): the block fails when
  two or more of its 7 bits are wrong, P_B = 1 − (1 − p)⁷ − 7p(1 − p)⁶, and (enumerating the
  2⁷ error patterns) the information-bit error probability is exactly
  p_res = 9p²(1−p)⁵ + 19p³(1−p)⁴ + 16p⁴(1−p)³ + 12p⁵(1−p)² + 7p⁶(1−p) + p⁷ ≈ 9p² (p ≪ 1).
  The impairment draws whole failing blocks and their error patterns, so a decoding failure
  corrupts several bits of one 4-bit group, as a real decoder does.

Channel. ``awgn``: γ fixed. ``rayleigh``: block fading — the power gain |h|² ~ Exp(1) is drawn
once per coherence block and the AWGN formula applies at γ·|h|² within it, so errors come in
bursts (a deep fade corrupts a whole block). The block lasts ``coherence_messages`` messages, or
``coherence_symbols`` symbols of the stream when that is set (the fading then runs across
message boundaries). Averaged over the fading (:func:`bit_error_probability`), uncoded:
E[Q(√(c·γ·|h|²))] = ½(1 − √(cγ / (2 + cγ))) — for BPSK ½(1 − √(γ/(1 + γ))); with FEC the
average of p_res(p(γ|h|²)) is taken numerically (a codeword sees one fade).

Airtime. A message's frame is sent as header and payload, each encoded in whole code blocks
(field mode: the header — every frame bit that is not a payload bit — is assumed protected,
only the payload fields take errors; the payload is taken to be the end of the frame, as the
latent is the last field of a NEW). Coded bits = n·⌈header/k⌉ + n·⌈payload/k⌉; symbols =
⌈coded bits / log2 M⌉; airtime = symbols / ``symbol_rate``. The bandwidth is the Nyquist
bandwidth of that symbol rate, B = ``symbol_rate`` (ideal sinc pulses; a roll-off α would need
(1 + α)·B), so spectral efficiency = information bits / (airtime · B) = information bits /
symbol, in bits/s/Hz. Two are reported: ``spectral_efficiency`` (all frame bits are the PHY's
information) and ``payload_spectral_efficiency`` (only the payload fields). With
``add_airtime_delay`` a message leaves when its last symbol is on air, and messages queue
behind each other (one transmitter). Messages this impairment does not select (``types``,
``seq_range``, ``toxicity``) bypass this PHY: no airtime, no fading steps; messages lost by the
``loss`` stage before it take no airtime either (use ``rate`` to charge every admitted message).

Reasoning capacity in bits/s/Hz. The paper's C = κ·log2(1 + η) (eq. 5) takes κ = 1 and is
dimensionless. Take κ = the spectral efficiency of the *raw latent link* — the
``payload_spectral_efficiency`` of a stream in which every frame is sent as a NEW, i.e. d·b
latent bits per ⌈coded NEW frame bits / log2 M⌉ symbols (:func:`latent_kappa`) — and
C_phys = κ·log2(1 + η) is in bits/s/Hz. This only rescales the paper's figure of merit by what
the modulation, the code and the framing deliver per Hz; it is not a Shannon capacity, and it
counts no errors (see :func:`message_error_probability` for the chance a NEW arrives intact).

Counters: ``bits_flipped``, ``messages_corrupted``, ``skipped_undecodable`` (as bit_errors);
``frame_bits``, ``payload_bits``, ``coded_bits``, ``symbols``, ``airtime_s`` (float) of the
messages it sent; ``fade_blocks`` (coherence blocks drawn) and ``deep_fade_blocks`` (those with
|h|² below ``deep_fade_db``). :meth:`Phy.state` adds the derived figures under ``"link"``.

Pure helpers for sweeps and tests: :func:`bit_error_probability`,
:func:`message_error_probability`, :func:`simulate_ber` (symbol-level Monte Carlo),
:func:`frame_symbols`, :func:`spectral_efficiency`, :func:`latent_kappa`.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field

from channel.impairments.base import ImpairmentAttributes, InFlight, bit_positions
from channel.impairments.bit_errors import PayloadBitErrors
from shared.coding.quantizer import packed_size
from shared.config import LinkConfig
from shared.protocol.messages import New, encode

Modulation = Literal["bpsk", "qpsk", "16qam", "64qam"]
ChannelModel = Literal["awgn", "rayleigh"]
Fec = Literal["none", "repetition3", "hamming74"]
SnrMode = Literal["ebn0", "esn0", "ebn0_info"]
BerFormula = Literal["approximate", "exact"]

BITS_PER_SYMBOL: dict[str, int] = {"bpsk": 1, "qpsk": 2, "16qam": 4, "64qam": 6}
FEC_BLOCK: dict[str, tuple[int, int]] = {"none": (1, 1), "repetition3": (1, 3), "hamming74": (4, 7)}


# -- closed forms ---------------------------------------------------------------------------------


def q_function(x: float) -> float:
    """Gaussian tail Q(x) = P(N(0,1) > x) = ½·erfc(x/√2)."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def _modulation(modulation: str) -> int:
    try:
        return BITS_PER_SYMBOL[modulation]
    except KeyError:
        raise ValueError(
            f"unknown modulation {modulation!r}; known: {list(BITS_PER_SYMBOL)}"
        ) from None


def _fec(fec: str) -> tuple[int, int]:
    try:
        return FEC_BLOCK[fec]
    except KeyError:
        raise ValueError(f"unknown fec {fec!r}; known: {list(FEC_BLOCK)}") from None


@cache
def _ber_terms(modulation: str, formula: str = "approximate") -> tuple[tuple[float, float], ...]:
    """Terms (a, c) of p(γ) = Σ a·Q(√(c·γ)), the error probability of one coded bit at
    Ec/N0 = γ: the nearest-neighbour approximation (one term), or the exact Gray BER of the
    √M-PAM on each axis (one term per odd distance 1, 3, …, 2√M − 1 in half-spacings)."""
    m = _modulation(modulation)
    if m == 1:
        return ((1.0, 2.0),)
    size = 1 << m
    if formula == "approximate":
        return ((4.0 / m * (1.0 - 1.0 / math.sqrt(size)), 3.0 * m / (size - 1)),)
    if formula != "exact":
        raise ValueError(f"unknown ber_formula {formula!r}; known: ['approximate', 'exact']")
    per_dim = m // 2
    levels = 1 << per_dim
    gray = [i ^ (i >> 1) for i in range(levels)]
    coef = [0.0] * (2 * levels)  # coef[d]: weight of Q(d/σ), d odd (half-spacings, σ in them)
    for i in range(levels):  # sent level 2i − L + 1; region j = [2j − L, 2j − L + 2]
        for j in range(levels):
            wrong = bin(gray[i] ^ gray[j]).count("1")
            if not wrong:
                continue
            # P(region j | i) = Q((lo − a)/σ) − Q((hi − a)/σ), lo − a = 2(j − i) − 1
            edges = ((2 * (j - i) - 1, 1.0, j > 0), (2 * (j - i) + 1, -1.0, j < levels - 1))
            for d, sign, finite in edges:  # outer edges at ±∞: Q(−∞) = 1, Q(+∞) = 0
                if finite:
                    coef[abs(d)] += wrong * sign * (1.0 if d > 0 else -1.0)
    # Q(−x) = 1 − Q(x): the constants cancel (the BER vanishes at high SNR)
    scale = 1.0 / (levels * per_dim)
    return tuple((c * scale, d * d * 3.0 * m / (size - 1)) for d, c in enumerate(coef) if c != 0.0)


def coded_bit_error_probability(
    ecn0: float, modulation: str, formula: str = "approximate"
) -> float:
    """AWGN error probability of one coded bit at Ec/N0 = ``ecn0`` (linear, not dB)."""
    return min(
        0.5,
        sum(
            a * q_function(math.sqrt(c * max(ecn0, 0.0)))
            for a, c in _ber_terms(modulation, formula)
        ),
    )


# Hamming(7,4), systematic [d1 d2 d3 d4 p1 p2 p3]: every error pattern's weight and the mask of
# information bits (bit j = d_{j+1}) left wrong after syndrome decoding.
_HAMMING_P = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.uint8)
_HAMMING_H = np.concatenate([_HAMMING_P.T, np.eye(3, dtype=np.uint8)], axis=1)  # 3×7


@cache
def _hamming_patterns() -> tuple[np.ndarray, np.ndarray]:
    """(weights, info-error masks) of the 128 error patterns (pattern bit i = coded bit i)."""
    errors = (np.arange(128)[:, None] >> np.arange(7)) & 1
    syndromes = errors @ _HAMMING_H.T % 2
    column = {tuple(_HAMMING_H[:, j]): j for j in range(7)}
    decoded = errors.copy()
    for i, s in enumerate(syndromes):
        if s.any():
            decoded[i, column[tuple(s)]] ^= 1
    masks = decoded[:, :4] @ (1 << np.arange(4))
    return errors.sum(axis=1), masks


@cache
def _hamming_by_weight() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pattern indices sorted by weight, first index of each weight 0..7, info-error masks)."""
    weights, masks = _hamming_patterns()
    order = np.argsort(weights, kind="stable")
    start = np.searchsorted(weights[order], np.arange(8))
    return order, start, masks


def residual_bit_error_probability(p: Any, fec: str) -> Any:
    """Information-bit error probability after hard-decision decoding, coded-bit error ``p``
    (a float or an array)."""
    _fec(fec)
    if fec == "repetition3":
        return 3.0 * p * p - 2.0 * p**3
    if fec == "hamming74":
        q = 1.0 - p
        return (
            9 * p**2 * q**5
            + 19 * p**3 * q**4
            + 16 * p**4 * q**3
            + 12 * p**5 * q**2
            + 7 * p**6 * q
            + p**7
        )
    return p


def _hamming_block_error(p: np.ndarray, exposed: int = 4) -> np.ndarray:
    """P(a Hamming(7,4) block leaves one of its first ``exposed`` information bits wrong)."""
    weights, masks = _hamming_patterns()
    hit = (masks & ((1 << exposed) - 1)) != 0
    p = np.asarray(p, dtype=float)[..., None]
    return np.sum(hit * p**weights * (1.0 - p) ** (7 - weights), axis=-1)


def coded_ebn0(snr_db: float, modulation: str, fec: str = "none", snr_mode: str = "ebn0") -> float:
    """Ec/N0 (linear) per coded bit for an SNR given in ``snr_mode`` (module docstring)."""
    m = _modulation(modulation)
    k, n = _fec(fec)
    snr = 10.0 ** (snr_db / 10.0)
    if snr_mode == "ebn0":
        return snr
    if snr_mode == "esn0":
        return snr / m
    if snr_mode == "ebn0_info":
        return snr * k / n
    raise ValueError(f"unknown snr_mode {snr_mode!r}; known: ['ebn0', 'esn0', 'ebn0_info']")


_erfc = np.vectorize(math.erfc, otypes=[float])
# |h|² = t², t on a log grid: E[g(|h|²)] = ∫ g(t²)·2t²·e^(−t²) d(ln t), smooth at both ends, so the
# trapezoid rule converges fast; t < 1e-7 adds < 1e-14.
_LOG_T = np.linspace(math.log(1e-7), math.log(9.0), 6001)
_T2 = np.exp(2.0 * _LOG_T)
_FADE_WEIGHT = 2.0 * _T2 * np.exp(-_T2) * (_LOG_T[1] - _LOG_T[0])
_FADE_WEIGHT[[0, -1]] *= 0.5


def _fading_average(values: np.ndarray) -> float:
    """E[g(|h|²)] over |h|² ~ Exp(1), given g at the grid ``_T2``."""
    return float(np.dot(_FADE_WEIGHT, values))


def _coded_ber_array(ecn0: np.ndarray, modulation: str, formula: str) -> np.ndarray:
    """:func:`coded_bit_error_probability` over an array of Ec/N0."""
    p = sum(a * 0.5 * _erfc(np.sqrt(c * ecn0 / 2.0)) for a, c in _ber_terms(modulation, formula))
    return np.minimum(0.5, p)


@lru_cache(maxsize=4096)
def bit_error_probability(
    ebn0_db: float,
    modulation: str,
    channel: str = "awgn",
    fec: str = "none",
    *,
    snr_mode: str = "ebn0",
    ber_formula: str = "approximate",
) -> float:
    """Closed-form information-bit error probability after FEC decoding at ``ebn0_db`` (read
    per ``snr_mode``); for ``rayleigh`` the average over the fading: closed form uncoded,
    E[a·Q(√(cγ|h|²))] = a·½(1 − √(cγ/(2 + cγ))) per term, numerical with FEC."""
    gamma = coded_ebn0(ebn0_db, modulation, fec, snr_mode)
    if channel == "awgn":
        p = coded_bit_error_probability(gamma, modulation, ber_formula)
        return residual_bit_error_probability(p, fec)
    if channel != "rayleigh":
        raise ValueError(f"unknown channel {channel!r}; known: ['awgn', 'rayleigh']")
    if fec == "none":
        terms = _ber_terms(modulation, ber_formula)
        return sum(a * 0.5 * (1.0 - math.sqrt(c * gamma / (2.0 + c * gamma))) for a, c in terms)
    p = _coded_ber_array(gamma * _T2, modulation, ber_formula)
    return _fading_average(residual_bit_error_probability(p, fec))


def _message_error(payload_bits: int, p: np.ndarray, fec: str) -> np.ndarray:
    """P(some of ``payload_bits`` information bits is wrong), coded-bit error ``p``."""
    k, _ = _fec(fec)
    if fec == "hamming74":
        blocks, rest = divmod(payload_bits, k)
        log_ok = blocks * np.log1p(-_hamming_block_error(p))
        if rest:
            log_ok += np.log1p(-_hamming_block_error(p, rest))
        return -np.expm1(log_ok)
    return -np.expm1(payload_bits * np.log1p(-residual_bit_error_probability(p, fec)))


@lru_cache(maxsize=4096)
def message_error_probability(
    payload_bits: int,
    ebn0_db: float,
    modulation: str,
    channel: str = "awgn",
    fec: str = "none",
    *,
    snr_mode: str = "ebn0",
    ber_formula: str = "approximate",
) -> float:
    """P(at least one of ``payload_bits`` payload bits is wrong after decoding). For
    ``rayleigh`` the message sits in one coherence block (``coherence_messages``): the average
    over the fading of the AWGN figure — lower than 1 − (1 − BER)^N, since the errors bunch up
    in the faded messages."""
    gamma = coded_ebn0(ebn0_db, modulation, fec, snr_mode)
    if channel == "awgn":
        p = coded_bit_error_probability(gamma, modulation, ber_formula)
        return float(_message_error(payload_bits, np.asarray(p), fec))
    if channel != "rayleigh":
        raise ValueError(f"unknown channel {channel!r}; known: ['awgn', 'rayleigh']")
    p = _coded_ber_array(gamma * _T2, modulation, ber_formula)
    return _fading_average(_message_error(payload_bits, p, fec))


# -- airtime ------------------------------------------------------------------------------------


def coded_bits(info_bits: int, fec: str = "none") -> int:
    """Coded bits of ``info_bits`` information bits in whole code blocks."""
    k, n = _fec(fec)
    return n * -(-info_bits // k)


def frame_symbols(frame_bits: int, payload_bits: int, modulation: str, fec: str = "none") -> int:
    """Symbols of a frame whose header (``frame_bits − payload_bits``) and payload are coded
    separately: ⌈(coded header + coded payload) / log2 M⌉."""
    coded = coded_bits(frame_bits - payload_bits, fec) + coded_bits(payload_bits, fec)
    return -(-coded // _modulation(modulation))


def spectral_efficiency(
    info_bits: int, frame_bits: int, payload_bits: int, modulation: str, fec: str = "none"
) -> float:
    """``info_bits`` per symbol of the frame, i.e. bits/s/Hz at the Nyquist bandwidth."""
    return info_bits / frame_symbols(frame_bits, payload_bits, modulation, fec)


def latent_kappa(config: LinkConfig, modulation: str, fec: str = "none") -> float:
    """κ of the raw latent link: latent bits (d·b) per symbol of one NEW frame (bits/s/Hz),
    header in the airtime (module docstring)."""
    latent = bytes(packed_size(config.latent_dim, config.bits_per_value))
    frame = 8 * len(encode(New(seq=0, t=0.0, slot=0, latent=latent)))
    payload = config.latent_dim * config.bits_per_value
    return spectral_efficiency(payload, frame, payload, modulation, fec)


# -- Monte Carlo --------------------------------------------------------------------------------


def _gray_to_index(gray: np.ndarray) -> np.ndarray:
    index = gray.copy()
    shift = 1
    while shift < 16:
        index ^= index >> shift
        shift <<= 1
    return index


def _pam_modulate(bits: np.ndarray, per_dim: int) -> np.ndarray:
    """Gray-coded PAM amplitudes (…, −3, −1, 1, 3, …) of groups of ``per_dim`` bits (MSB first)."""
    gray = bits.reshape(-1, per_dim) @ (1 << np.arange(per_dim - 1, -1, -1))
    return 2.0 * _gray_to_index(gray) - ((1 << per_dim) - 1)


def _pam_demodulate(y: np.ndarray, per_dim: int) -> np.ndarray:
    """Hard decisions: the bits (one row per sample, MSB first) of the nearest PAM level."""
    levels = 1 << per_dim
    index = np.clip(np.rint((y + levels - 1) / 2.0), 0, levels - 1).astype(np.int64)
    gray = index ^ (index >> 1)
    return ((gray[:, None] >> np.arange(per_dim - 1, -1, -1)) & 1).astype(np.uint8)


def _encode(bits: np.ndarray, fec: str) -> np.ndarray:
    if fec == "repetition3":
        return np.repeat(bits, 3)
    if fec == "hamming74":
        data = bits.reshape(-1, 4)
        return np.concatenate([data, data @ _HAMMING_P % 2], axis=1).astype(np.uint8).ravel()
    return bits


def _decode(coded: np.ndarray, fec: str) -> np.ndarray:
    if fec == "repetition3":
        return (coded.reshape(-1, 3).sum(axis=1) >= 2).astype(np.uint8)
    if fec == "hamming74":
        words = coded.reshape(-1, 7).copy()
        syndromes = words @ _HAMMING_H.T % 2 @ np.array([1, 2, 4])
        position = np.full(8, -1)
        for j in range(7):
            position[_HAMMING_H[:, j] @ np.array([1, 2, 4])] = j
        rows = np.flatnonzero(syndromes)
        words[rows, position[syndromes[rows]]] ^= 1
        return words[:, :4].ravel()
    return coded


def simulate_ber(
    ebn0_db: float,
    modulation: str,
    channel: str = "awgn",
    fec: str = "none",
    *,
    bits: int = 200_000,
    seed: int = 0,
    snr_mode: str = "ebn0",
    coherence_symbols: int = 1,
) -> float:
    """Monte-Carlo information-bit error rate: random bits → FEC encoding → Gray mapping onto
    the unit-energy constellation → (Rayleigh: × h ~ CN(0, 1), constant over
    ``coherence_symbols`` symbols) → + complex Gaussian noise of N0 = Es/(Es/N0) → coherent
    hard decisions (perfect channel knowledge) → FEC decoding."""
    m = _modulation(modulation)
    k, _ = _fec(fec)
    rng = np.random.default_rng(seed)
    info = rng.integers(0, 2, size=bits - bits % k, dtype=np.uint8)
    coded = _encode(info, fec)
    tx_bits = np.concatenate([coded, np.zeros(-len(coded) % m, dtype=np.uint8)])
    half = max(m // 2, 1)
    scale = 1.0 if m == 1 else math.sqrt(2.0 * ((1 << m) - 1) / 3.0)  # Es = 1 after scaling
    if m == 1:
        symbols = (2.0 * tx_bits - 1.0).astype(complex)
    else:
        pairs = tx_bits.reshape(-1, 2, half)  # per symbol: in-phase bits, quadrature bits
        symbols = (_pam_modulate(pairs[:, 0], half) + 1j * _pam_modulate(pairs[:, 1], half)) / scale
    n0 = 1.0 / (m * coded_ebn0(ebn0_db, modulation, fec, snr_mode))  # Es/N0 = m·Ec/N0
    noise = rng.normal(0.0, math.sqrt(n0 / 2.0), size=(2, len(symbols))).T @ np.array([1.0, 1j])
    if channel == "awgn":
        received = symbols + noise
    elif channel == "rayleigh":
        blocks = -(-len(symbols) // coherence_symbols)
        h = rng.normal(0.0, math.sqrt(0.5), size=(blocks, 2)) @ np.array([1.0, 1j])
        h = np.repeat(h, coherence_symbols)[: len(symbols)]
        received = (h * symbols + noise) / h  # coherent: equalized with the known h
    else:
        raise ValueError(f"unknown channel {channel!r}; known: ['awgn', 'rayleigh']")
    if m == 1:
        detected = (received.real > 0).astype(np.uint8)
    else:
        received = received * scale
        detected = np.concatenate(
            [_pam_demodulate(received.real, half), _pam_demodulate(received.imag, half)], axis=1
        ).ravel()
    decoded = _decode(detected[: len(coded)], fec)
    return float(np.count_nonzero(decoded != info)) / len(info)


# -- the impairment -----------------------------------------------------------------------------


class Attributes(ImpairmentAttributes):
    model_config = ConfigDict(title="phy")

    snr_db: float = Field(
        10.0,
        ge=-30.0,
        le=60.0,
        description="SNR in dB, read per snr_mode: Eb/N0 per coded bit (ebn0), Es/N0 per symbol "
        "(esn0) or Eb/N0 per information bit (ebn0_info)",
    )
    snr_mode: SnrMode = Field(
        "ebn0",
        description="ebn0: Eb/N0 of each transmitted (coded) bit, FEC costs airtime only; "
        "esn0: Es/N0 per symbol; ebn0_info: Eb/N0 per information bit (FEC also spreads energy)",
    )
    modulation: Modulation = Field(
        "qpsk", description="Gray-mapped constellation: bpsk, qpsk, 16qam or 64qam"
    )
    ber_formula: BerFormula = Field(
        "approximate",
        description="M-QAM bit-error probability: the nearest-neighbour approximation, or the "
        "exact Gray BER (the same for bpsk and qpsk)",
    )
    channel: ChannelModel = Field(
        "awgn", description="awgn, or rayleigh block fading (|h|² ~ Exp(1) per coherence block)"
    )
    coherence_messages: int = Field(
        1, ge=1, le=1_000_000, description="rayleigh: fading constant over this many messages"
    )
    coherence_symbols: int | None = Field(
        None,
        ge=1,
        le=1_000_000_000,
        description="rayleigh: fading constant over this many symbols of the stream instead "
        "(overrides coherence_messages)",
    )
    deep_fade_db: float = Field(
        -10.0, ge=-60.0, le=0.0, description="a block with |h|² below this (dB) is a deep fade"
    )
    fec: Fec = Field(
        "none",
        description="forward error correction, hard decisions: none, repetition3 (rate 1/3, "
        "majority) or hamming74 (rate 4/7, corrects one error per block)",
    )
    symbol_rate: float = Field(
        1e6, gt=0.0, le=1e12, description="symbols per second; bandwidth = symbol_rate (Nyquist)"
    )
    add_airtime_delay: bool = Field(
        False, description="a message leaves when its last symbol is on air (one transmitter)"
    )
    whole_frame: bool = Field(
        False, description="errors over the whole msgpack frame instead of payload fields"
    )


class Phy(PayloadBitErrors):
    name = "phy"
    Attributes = Attributes
    COUNTERS = (
        *PayloadBitErrors.COUNTERS,
        "frame_bits",
        "payload_bits",
        "coded_bits",
        "symbols",
        "airtime_s",
        "fade_blocks",
        "deep_fade_blocks",
    )

    # fading and transmitter state (kept across attribute updates)
    _gain = 1.0  # |h|² of the current block
    _block = -1  # coherence_symbols: index of the current block in the symbol stream
    _left = 0  # coherence_messages: messages left in the current block
    _symbol = 0  # symbols sent so far
    _busy_until = -math.inf
    _last_airtime = 0.0

    def apply(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        a = self.attributes
        m = BITS_PER_SYMBOL[a.modulation]
        k, n = FEC_BLOCK[a.fec]
        frame_bits = 8 * len(item.data)
        exposed = self.exposed_bits(item, a.whole_frame)
        payload = exposed if not a.whole_frame else self.payload.raw_count(item)
        header_coded = coded_bits(frame_bits - (exposed or 0), a.fec)
        units = -(-(exposed or 0) // k)
        symbols = -(-(header_coded + n * units) // m)
        airtime = symbols / a.symbol_rate
        c = self.counters
        c["frame_bits"] += frame_bits
        c["payload_bits"] += payload or 0
        c["coded_bits"] += header_coded + n * units
        c["symbols"] += symbols
        c["airtime_s"] += airtime
        self._last_airtime = airtime

        gains = self._fade(rng, header_coded, units, n, m, symbols)
        self._symbol += symbols
        if units:
            gamma = coded_ebn0(a.snr_db, a.modulation, a.fec, a.snr_mode)
            positions = self._draw_errors(rng, exposed, units, gains * gamma)
            self.corrupt(item, exposed, positions, a.whole_frame)
        if a.add_airtime_delay:
            start = max(item.at, self._busy_until)
            self._busy_until = item.at = start + airtime
        return [item]

    def _fade(
        self, rng: np.random.Generator, header_coded: int, units: int, n: int, m: int, symbols: int
    ) -> np.ndarray:
        """|h|² seen by each payload code block (one value for AWGN and per-message blocks)."""
        a = self.attributes
        if a.channel == "awgn":
            return np.ones(1)
        if a.coherence_symbols is None:
            if self._left <= 0:
                self._gain = self._new_gains(rng, 1)[0]
                self._left = a.coherence_messages
            self._left -= 1
            return np.full(1, self._gain)
        length = a.coherence_symbols
        first = self._symbol // length
        last = (self._symbol + symbols - 1) // length
        fresh = self._new_gains(rng, last - max(first, self._block + 1) + 1)
        gains = fresh if first > self._block else np.concatenate([[self._gain], fresh])
        self._block, self._gain = last, float(gains[-1])
        if not units:
            return gains[:1]
        block = (self._symbol + (header_coded + n * np.arange(units)) // m) // length - first
        return gains[block]

    def _new_gains(self, rng: np.random.Generator, count: int) -> np.ndarray:
        if count <= 0:
            return np.empty(0)
        gains = rng.exponential(1.0, size=count)
        self.counters["fade_blocks"] += count
        deep = 10.0 ** (self.attributes.deep_fade_db / 10.0)
        self.counters["deep_fade_blocks"] += int(np.count_nonzero(gains < deep))
        return gains

    def _draw_errors(
        self, rng: np.random.Generator, nbits: int, units: int, ecn0: np.ndarray
    ) -> list[int]:
        """Positions (< ``nbits``) of the information bits wrong after decoding, for ``units``
        code blocks whose coded bits see Ec/N0 ``ecn0`` (one value, or one per block)."""
        a = self.attributes
        if len(ecn0) == 1:
            p = coded_bit_error_probability(float(ecn0[0]), a.modulation, a.ber_formula)
            if a.fec != "hamming74":  # independent information-bit errors
                r = residual_bit_error_probability(p, a.fec)
                flips = int(rng.binomial(nbits, r)) if r > 0.0 else 0
                return bit_positions(rng, nbits, flips) if flips else []
            p = np.full(units, p)
        else:
            p = _coded_ber_array(ecn0, a.modulation, a.ber_formula)
        if a.fec != "hamming74":
            r = 3.0 * p * p - 2.0 * p**3 if a.fec == "repetition3" else p
            return np.flatnonzero(rng.random(units) < r).tolist()
        # Hamming(7,4): which blocks fail (two or more wrong coded bits), then each failing
        # block's error weight w ≥ 2 ∝ C(7, w)·p^w·(1−p)^(7−w), then a pattern of that weight.
        fail = 1.0 - (1.0 - p) ** 7 - 7.0 * p * (1.0 - p) ** 6
        failing = np.flatnonzero(rng.random(units) < fail)
        if not len(failing):
            return []
        pf = p[failing][:, None]
        w = np.arange(2, 8)
        weights = np.array([math.comb(7, int(j)) for j in w]) * pf**w * (1.0 - pf) ** (7 - w)
        cdf = np.cumsum(weights, axis=1)
        u = rng.random(len(failing)) * cdf[:, -1]
        weight = 2 + np.minimum((cdf < u[:, None]).sum(axis=1), 5)
        by_weight, start, masks = _hamming_by_weight()
        sizes = np.array([math.comb(7, int(j)) for j in weight])
        mask = masks[by_weight[start[weight] + rng.integers(0, sizes)]]
        bits = np.flatnonzero(((mask[:, None] >> np.arange(4)) & 1).ravel())
        positions = 4 * failing[bits // 4] + bits % 4
        return positions[positions < nbits].tolist()

    def state(self) -> dict[str, Any]:
        a = self.attributes
        c = self.counters
        m = BITS_PER_SYMBOL[a.modulation]
        k, n = FEC_BLOCK[a.fec]
        gamma = coded_ebn0(a.snr_db, a.modulation, a.fec, a.snr_mode)
        symbols = c["symbols"]
        return {
            **super().state(),
            "link": {
                "bits_per_symbol": m,
                "code_rate": k / n,
                "ebn0_coded_db": 10.0 * math.log10(gamma),
                "esn0_db": 10.0 * math.log10(gamma * m),
                "bit_error_probability": bit_error_probability(
                    a.snr_db,
                    a.modulation,
                    a.channel,
                    a.fec,
                    snr_mode=a.snr_mode,
                    ber_formula=a.ber_formula,
                ),
                "last_airtime_s": self._last_airtime,
                "spectral_efficiency": c["frame_bits"] / symbols if symbols else 0.0,
                "payload_spectral_efficiency": c["payload_bits"] / symbols if symbols else 0.0,
            },
        }


__all__ = [
    "BITS_PER_SYMBOL",
    "FEC_BLOCK",
    "Attributes",
    "Phy",
    "bit_error_probability",
    "coded_bit_error_probability",
    "coded_bits",
    "coded_ebn0",
    "frame_symbols",
    "latent_kappa",
    "message_error_probability",
    "q_function",
    "residual_bit_error_probability",
    "simulate_ber",
    "spectral_efficiency",
]
