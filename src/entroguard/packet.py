"""Wire format of entroguard: one packet carries the entropy-coded latent of one image.

The split DNN's head produces a :class:`Packet` and sends ``Packet.to_bytes()``; the server
calls :func:`parse_packet` on the received (untrusted) bytes. Pure Python + stdlib only.

Layout (multi-byte integers big-endian; *varint* = unsigned LEB128, at most 3 bytes, minimal
encoding only, so values are 0 .. 2**21 - 1)::

    offset  size  field
    0       2     magic b"EG"
    2       1     high nibble: format version (VERSION); low nibble: prior id (PRIORS)
    3       4     model fingerprint (first 4 bytes of the model's SHA-256 fingerprint)
    7       4     zlib.crc32 of every byte after this field (rest of header + strings)
    11      1-3   latent height (varint, 1 .. MAX_LATENT_SIDE)
    .       1-3   latent width  (varint, 1 .. MAX_LATENT_SIDE)
    .       1     setting (format 3 only): high nibble compute setting, low nibble rate setting
    .       12    keyed protection (format 4 only): 8-byte nonce, then a 4-byte key tag
    .       1     byte cap (format 5 only): share of the latent's symbols the head reset, 1..255
    .       1-3   length in bytes of each string (varint), STRINGS_PER_PRIOR[prior] of them
    .       ...   the strings, concatenated in order

Format versions (the high nibble of byte 2): **2** (written now): an "mshp" packet's scale
indexes and means come from the integer hyper-synthesis
(:mod:`entroguard.codec.integer_hs`), bit-identical on every machine. **1**: they came from
the float ``h_s``, which machines compute differently in the last bits, so a version-1 "mshp"
packet does not decode reliably elsewhere; it still parses, and the model refuses it with
reason ``bad_version``. Version-1 "fp" packets are coded exactly as version-2 ones and decode.

**3**: a version-2 packet plus one setting byte after the latent size, written by slimmable
heads (:mod:`entroguard.models.slimmable`): the compute setting (number of encoder members
minus one) in the high nibble and the rate setting in the low nibble. The tail decodes with
the rate setting's entropy model; packets of other models are versions 1 and 2, unchanged.

**4**: a version-2 packet plus a keyed protection's 8-byte per-packet nonce and 4-byte key tag
after the latent size (:mod:`entroguard.privacy.keyed`): the tail regenerates the protection
from the key it was given at deployment and the nonce, and refuses a packet whose tag does not
match its key. The key never travels.

**5**: a version-2 packet plus one byte after the latent size, written by a head with a hard
byte cap (:mod:`entroguard.codec.byte_cap`) for a packet it had to shrink: the share of the
latent's symbols (y, and z for "mshp") it reset to their cheapest value, in 255ths (1..255,
rounded up). The tail decodes it exactly as a version-2 packet; the byte tells the server, and
whoever reads the stream, that the packet was capped. Packets that fit the budget stay
version 2.

Every prior currently carries exactly one coder string: "fp" the rANS string of the latent y;
"mshp" a single rANS stream per image holding the hyper-latent z symbols first, then y; "q8"
(BottleFit's fixed-rate bottleneck, format 2 only) the scale and offset, then one byte per
latent element. The
per-string length list is kept so a future prior can carry several strings.

The total length must be exactly header + sum(lengths). Because varints must be minimal, the
encoding is canonical: a byte string that parses re-encodes to exactly the same bytes.
A typical packet of either prior (8x8 latent, one string of 128 .. 16383 bytes) has a 15-byte
header; the largest possible header (4096x4096 latent, a string of at least 2**14 bytes) is
18 bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_PACKET_BYTES",
    "FINGERPRINT_BYTES",
    "MAGIC",
    "MAX_LATENT_SIDE",
    "MAX_STRING_BYTES",
    "PACKET_ERROR_REASONS",
    "PRIORS",
    "READABLE_VERSIONS",
    "SETTING_VERSION",
    "KEYED_VERSION",
    "CAPPED_VERSION",
    "STRINGS_PER_PRIOR",
    "VERSION",
    "Packet",
    "PacketError",
    "header_size",
    "parse_packet",
]

VERSION: int = 2
"""Format version written in the high nibble of byte 2 (0..15) for packets without a setting."""
SETTING_VERSION: int = 3
"""Format version of packets that carry a slimmable head's setting byte."""
KEYED_VERSION: int = 4
"""Format version of packets that carry a keyed protection's nonce and key tag."""
CAPPED_VERSION: int = 5
"""Format version of packets a byte-capped head shrank (one byte: the share it reset)."""
NONCE_BYTES: int = 8
TAG_BYTES: int = 4
READABLE_VERSIONS: tuple[int, ...] = (1, 2, 3, 4, 5)
"""Format versions :func:`parse_packet` accepts (see the module docstring)."""
MAGIC: bytes = b"EG"
"""First two bytes of every packet."""
MAX_LATENT_SIDE: int = 4096
"""Largest latent height/width (in latent elements) a packet may declare."""
DEFAULT_MAX_PACKET_BYTES: int = 1 << 22
"""Default upper bound on a whole packet, in bytes (4 MiB)."""
PRIORS: dict[str, int] = {"fp": 0, "mshp": 1, "q8": 2}
"""Prior name -> prior id (low nibble of byte 2)."""
STRINGS_PER_PRIOR: dict[str, int] = {"fp": 1, "mshp": 1, "q8": 1}
"""Number of coder strings each prior carries ("fp": y; "mshp": one stream, z then y; "q8":
scale, offset and the uint8 latent)."""
FIRST_VERSION_OF: dict[str, int] = {"q8": 2}
"""The first format version of a prior that did not exist in version 1."""
FINGERPRINT_BYTES: int = 4
"""Size of the fingerprint field, in bytes."""

_VARINT_MAX_BYTES = 3
MAX_STRING_BYTES: int = (1 << (7 * _VARINT_MAX_BYTES)) - 1
"""Largest encodable string length, in bytes (2**21 - 1, the 3-byte varint limit)."""

_PRIOR_NAMES: dict[int, str] = {v: k for k, v in PRIORS.items()}
_CRC = struct.Struct(">I")
_FIXED_HEADER = len(MAGIC) + 1 + FINGERPRINT_BYTES + _CRC.size  # 11 bytes
_CRC_OFFSET = len(MAGIC) + 1 + FINGERPRINT_BYTES  # 7

PACKET_ERROR_REASONS: frozenset[str] = frozenset(
    {
        "empty",
        "oversized",
        "truncated",
        "bad_magic",
        "bad_version",
        "bad_prior",
        "bad_varint",
        "bad_shape",
        "length_mismatch",
        "checksum",
        "bad_setting",
        "bad_key",
        "bad_cap",
    }
)
"""Every value :attr:`PacketError.reason` can take."""

_RESEND = "the packet is corrupt or was cut in transit: resend the packet"


class PacketError(ValueError):
    """The one error :func:`parse_packet` raises for bad bytes-like input.

    ``reason`` is a short machine-readable code (one of :data:`PACKET_ERROR_REASONS`);
    ``str(e)`` is a human sentence saying what is wrong and what to do about it.
    """

    reason: str

    def __init__(self, reason: str, message: str) -> None:
        if reason not in PACKET_ERROR_REASONS:
            raise ValueError(f"unknown PacketError reason {reason!r}")
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep picklable (e.g. across multiprocessing) despite 2-arg init
        return (type(self), (self.reason, str(self)))


def _varint_len(value: int) -> int:
    """Number of bytes the minimal LEB128 encoding of ``value`` takes (value >= 0)."""
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


def _encode_varint(value: int, out: bytearray) -> None:
    """Append the minimal unsigned LEB128 encoding of ``value`` (0 .. MAX_STRING_BYTES)."""
    if not 0 <= value <= MAX_STRING_BYTES:
        raise ValueError(f"varint value {value} outside 0..{MAX_STRING_BYTES}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_prior(prior: object) -> str:
    if not isinstance(prior, str) or prior not in PRIORS:
        raise ValueError(f"unknown prior {prior!r}: use one of {sorted(PRIORS)}")
    return prior


def _check_latent_hw(latent_hw: object) -> tuple[int, int]:
    if (
        not isinstance(latent_hw, (tuple, list))
        or len(latent_hw) != 2
        or not all(_is_int(s) for s in latent_hw)
    ):
        raise ValueError(f"latent_hw must be a pair of ints (H, W), got {latent_hw!r}")
    h, w = latent_hw
    if not (1 <= h <= MAX_LATENT_SIDE and 1 <= w <= MAX_LATENT_SIDE):
        raise ValueError(
            f"latent size {h}x{w} out of range: each side must be in 1..{MAX_LATENT_SIDE} "
            "latent elements; downscale or tile the input image"
        )
    return (h, w)


def _check_setting(setting: object) -> tuple[int, int] | None:
    if setting is None:
        return None
    if (
        not isinstance(setting, (tuple, list))
        or len(setting) != 2
        or not all(_is_int(v) and 0 <= v <= 15 for v in setting)
    ):
        raise ValueError(
            f"setting must be a pair of ints in 0..15 (compute, rate), got {setting!r}"
        )
    return (setting[0], setting[1])


def _check_keyed(keyed: object) -> tuple[bytes, bytes] | None:
    if keyed is None:
        return None
    if not isinstance(keyed, (tuple, list)) or len(keyed) != 2:
        raise ValueError(f"keyed must be a (nonce, tag) pair of bytes, got {keyed!r}")
    nonce, tag = _as_bytes(keyed[0], "nonce"), _as_bytes(keyed[1], "tag")
    if len(nonce) != NONCE_BYTES or len(tag) != TAG_BYTES:
        raise ValueError(f"keyed needs a {NONCE_BYTES}-byte nonce and a {TAG_BYTES}-byte tag")
    return nonce, tag


def _check_capped(capped: object) -> int | None:
    if capped is None:
        return None
    if not _is_int(capped) or not 1 <= capped <= 255:
        raise ValueError(f"capped must be the reset share in 255ths, 1..255, got {capped!r}")
    return capped


def _check_lengths(prior: str, lengths: Sequence[int]) -> None:
    expected = STRINGS_PER_PRIOR[prior]
    if len(lengths) != expected:
        raise ValueError(
            f"prior {prior!r} carries {expected} string(s), got {len(lengths)}: "
            "pass the coder strings of the prior in order (one string for 'fp' and 'mshp')"
        )
    for i, n in enumerate(lengths):
        if not _is_int(n) or not 0 <= n <= MAX_STRING_BYTES:
            raise ValueError(
                f"string {i} length {n!r} not encodable: must be an int in "
                f"0..{MAX_STRING_BYTES} bytes; lower the bit rate or the input resolution"
            )


def header_size(prior: str, latent_hw: tuple[int, int], lengths: Sequence[int]) -> int:
    """Size in bytes of the header of a packet (everything except the strings).

    ``lengths`` are the string lengths in bytes, one per string of ``prior``.
    Raises ValueError for an unknown prior, a bad shape or wrong/unencodable lengths.
    """
    prior = _check_prior(prior)
    h, w = _check_latent_hw(latent_hw)
    lengths = list(lengths)
    _check_lengths(prior, lengths)
    return _FIXED_HEADER + _varint_len(h) + _varint_len(w) + sum(_varint_len(n) for n in lengths)


def _as_bytes(value: object, what: str) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise ValueError(f"{what} must be bytes, got {type(value).__name__}")


@dataclass(frozen=True)
class Packet:
    """One image's entropy-coded latent, as sent from the head to the server.

    Attributes:
        prior: entropy model, "fp" (factorized prior) or "mshp" (mean-scale hyperprior).
        fingerprint: exactly 4 bytes identifying the model (opaque here).
        latent_hw: latent spatial size (H, W) in latent elements, each 1..MAX_LATENT_SIDE.
        strings: coder output, STRINGS_PER_PRIOR[prior] strings in order (one for both
            priors: the y string for "fp"; for "mshp" one stream with z first, then y);
            each at most MAX_STRING_BYTES bytes.
        setting: ``(compute, rate)`` setting of a slimmable head, each 0..15, or None.
        keyed: ``(nonce, tag)`` of a keyed protection (8 and 4 bytes), or None.
        capped: share of the latent's symbols a byte-capped head reset, in 255ths (1..255),
            or None for a packet that was not capped.
        version: wire format version, one of READABLE_VERSIONS (default: SETTING_VERSION
            with a setting, KEYED_VERSION with ``keyed``, CAPPED_VERSION with ``capped``, else
            VERSION); a setting needs format 3 and format 3 a setting, ``keyed`` format 4 and
            format 4 ``keyed``, ``capped`` format 5 and format 5 ``capped``.

    Bytes-like fields are normalised to ``bytes`` and sequences to tuples. Invalid values
    raise ValueError.
    """

    prior: str
    fingerprint: bytes
    latent_hw: tuple[int, int]
    strings: tuple[bytes, ...]
    version: int | None = None
    setting: tuple[int, int] | None = None
    keyed: tuple[bytes, bytes] | None = None
    capped: int | None = None

    def __post_init__(self) -> None:
        prior = _check_prior(self.prior)
        setting, keyed = _check_setting(self.setting), _check_keyed(self.keyed)
        capped = _check_capped(self.capped)
        version = self.version
        if version is None:
            version = SETTING_VERSION if setting else KEYED_VERSION if keyed else \
                CAPPED_VERSION if capped else VERSION  # fmt: skip
        if not _is_int(version) or version not in READABLE_VERSIONS:
            raise ValueError(f"packet version must be one of {READABLE_VERSIONS}, got {version!r}")
        for field_name, value, owner in (("a setting", setting, SETTING_VERSION),
                                         ("a keyed nonce", keyed, KEYED_VERSION),
                                         ("a cap byte", capped, CAPPED_VERSION)):  # fmt: skip
            if (value is not None) != (version == owner):
                raise ValueError(
                    f"packet format {version} {'cannot carry' if value else 'needs'} "
                    f"{field_name}: only format {owner} packets carry one"
                )
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "setting", setting)
        object.__setattr__(self, "keyed", keyed)
        object.__setattr__(self, "capped", capped)
        fingerprint = _as_bytes(self.fingerprint, "fingerprint")
        if len(fingerprint) != FINGERPRINT_BYTES:
            raise ValueError(
                f"fingerprint must be exactly {FINGERPRINT_BYTES} bytes, got {len(fingerprint)}: "
                "pass the first 4 bytes of the model's SHA-256 fingerprint"
            )
        latent_hw = _check_latent_hw(self.latent_hw)
        if isinstance(self.strings, (bytes, bytearray, memoryview, str)) or not isinstance(
            self.strings, (tuple, list)
        ):
            raise ValueError(
                f"strings must be a tuple of bytes (one per coder string), "
                f"got {type(self.strings).__name__}"
            )
        strings = tuple(_as_bytes(s, f"strings[{i}]") for i, s in enumerate(self.strings))
        _check_lengths(prior, [len(s) for s in strings])
        object.__setattr__(self, "fingerprint", fingerprint)
        object.__setattr__(self, "latent_hw", latent_hw)
        object.__setattr__(self, "strings", strings)

    @property
    def payload_bytes(self) -> int:
        """Total size of the coder strings, in bytes."""
        return sum(len(s) for s in self.strings)

    @property
    def header_bytes(self) -> int:
        """Size of the header, in bytes (``len(self.to_bytes()) - self.payload_bytes``)."""
        size = header_size(self.prior, self.latent_hw, [len(s) for s in self.strings])
        extra = (self.setting is not None) + (self.capped is not None)
        return size + extra + (NONCE_BYTES + TAG_BYTES) * bool(self.keyed)

    @property
    def total_bytes(self) -> int:
        """Size of the whole encoded packet, in bytes."""
        return self.header_bytes + self.payload_bytes

    def to_bytes(self) -> bytes:
        """Encode the packet to its canonical wire form (see module docstring)."""
        body = bytearray()
        _encode_varint(self.latent_hw[0], body)
        _encode_varint(self.latent_hw[1], body)
        if self.setting is not None:
            body.append((self.setting[0] << 4) | self.setting[1])
        if self.keyed is not None:
            body += self.keyed[0] + self.keyed[1]
        if self.capped is not None:
            body.append(self.capped)
        for s in self.strings:
            _encode_varint(len(s), body)
        for s in self.strings:
            body += s
        head = bytearray(MAGIC)
        head.append((self.version << 4) | PRIORS[self.prior])
        head += self.fingerprint
        head += _CRC.pack(zlib.crc32(body))
        return bytes(head + body)


def _read_varint(buf: memoryview, pos: int, field: str) -> tuple[int, int]:
    """Decode a minimal <=3-byte LEB128 varint at ``pos``; return (value, new position)."""
    value = 0
    for i in range(_VARINT_MAX_BYTES):
        if pos + i >= len(buf):
            raise PacketError(
                "truncated",
                f"packet truncated inside the {field} field (byte {pos + i} of {len(buf)}): "
                f"{_RESEND}",
            )
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise PacketError(
                    "bad_varint",
                    f"non-minimal varint encoding for the {field} field at byte {pos}: {_RESEND}",
                )
            return value, pos + i + 1
    raise PacketError(
        "bad_varint",
        f"varint for the {field} field at byte {pos} is longer than {_VARINT_MAX_BYTES} bytes "
        f"(values must be < 2**{7 * _VARINT_MAX_BYTES}): {_RESEND}",
    )


def parse_packet(
    data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_PACKET_BYTES
) -> Packet:
    """Parse and validate one untrusted packet.

    Args:
        data: the received bytes. Anything that is not bytes/bytearray/memoryview raises
            TypeError; for bytes-like input the only exception raised is :class:`PacketError`.
        max_bytes: largest accepted packet size in bytes (default 4 MiB); larger input is
            rejected with reason "oversized" before anything else is looked at.

    Returns:
        The decoded :class:`Packet` (its strings are fresh ``bytes`` copies).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"parse_packet expects bytes, bytearray or memoryview, got {type(data).__name__}"
        )
    if not _is_int(max_bytes) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    with memoryview(data) as view:
        if view.nbytes == 0:
            raise PacketError(
                "empty",
                "empty packet: the client sent no bytes; send the output of Packet.to_bytes()",
            )
        if view.nbytes > max_bytes:
            raise PacketError(
                "oversized",
                f"packet is {view.nbytes} bytes, over the {max_bytes}-byte limit: lower the "
                "input resolution or bit rate, or raise max_bytes on the server",
            )
        if view.ndim == 1 and view.format == "B" and view.c_contiguous:
            return _parse(view)
        # Exotic buffer (multi-dimensional, other item format, strided): copy, bounded by
        # max_bytes, and parse the flat copy.
        with memoryview(view.tobytes()) as flat:
            return _parse(flat)


def _parse(buf: memoryview) -> Packet:
    """Parse a flat, size-checked, non-empty byte view (see :func:`parse_packet`)."""
    n = len(buf)
    head = bytes(buf[: len(MAGIC)])
    if head != MAGIC[: len(head)]:
        raise PacketError(
            "bad_magic",
            f"not an entroguard packet (starts with {head!r}, expected {MAGIC!r}): "
            "check that the client sends the output of Packet.to_bytes()",
        )
    if n < _FIXED_HEADER:
        if n > len(MAGIC):
            _check_version_prior(buf[len(MAGIC)])
        raise PacketError(
            "truncated",
            f"packet truncated: {n} bytes, but the fixed header alone is {_FIXED_HEADER} bytes: "
            f"{_RESEND}",
        )
    version, prior = _check_version_prior(buf[len(MAGIC)])
    fingerprint = bytes(buf[len(MAGIC) + 1 : _CRC_OFFSET])
    (crc,) = _CRC.unpack(buf[_CRC_OFFSET:_FIXED_HEADER])

    pos = _FIXED_HEADER
    h, pos = _read_varint(buf, pos, "latent height")
    w, pos = _read_varint(buf, pos, "latent width")
    for name, side in (("height", h), ("width", w)):
        if not 1 <= side <= MAX_LATENT_SIDE:
            raise PacketError(
                "bad_shape",
                f"latent {name} {side} out of range 1..{MAX_LATENT_SIDE}: the packet is corrupt "
                "or the image is too large; resend, or downscale the input",
            )
    setting = None
    if version == SETTING_VERSION:
        if pos >= n:
            raise PacketError("truncated", f"packet truncated before its setting byte: {_RESEND}")
        setting = (buf[pos] >> 4, buf[pos] & 0x0F)
        pos += 1
    keyed = None
    if version == KEYED_VERSION:
        if pos + NONCE_BYTES + TAG_BYTES > n:
            raise PacketError("truncated", f"packet truncated in its nonce and key tag: {_RESEND}")
        nonce_end = pos + NONCE_BYTES
        keyed = (bytes(buf[pos:nonce_end]), bytes(buf[nonce_end : nonce_end + TAG_BYTES]))
        pos = nonce_end + TAG_BYTES
    capped = None
    if version == CAPPED_VERSION:
        if pos >= n:
            raise PacketError("truncated", f"packet truncated before its cap byte: {_RESEND}")
        capped, pos = buf[pos], pos + 1
        if capped == 0:
            raise PacketError("bad_cap", f"a capped packet must reset a share of 1..255: {_RESEND}")
    lengths = []
    for i in range(STRINGS_PER_PRIOR[prior]):
        length, pos = _read_varint(buf, pos, f"string {i} length")
        lengths.append(length)

    remaining = n - pos
    declared = sum(lengths)
    if declared != remaining:
        what = "missing" if declared > remaining else "trailing"
        raise PacketError(
            "length_mismatch",
            f"string lengths declare {declared} bytes but {remaining} follow the {pos}-byte "
            f"header ({abs(declared - remaining)} bytes {what}): {_RESEND}",
        )
    if zlib.crc32(buf[_CRC_OFFSET + _CRC.size :]) != crc:
        raise PacketError(
            "checksum", "packet checksum mismatch (corrupted in transit?): resend the packet"
        )

    strings = []
    for length in lengths:
        strings.append(bytes(buf[pos : pos + length]))
        pos += length
    return Packet(prior, fingerprint, (h, w), tuple(strings), version, setting, keyed, capped)


def _check_version_prior(byte: int) -> tuple[int, str]:
    version, prior_id = byte >> 4, byte & 0x0F
    if version not in READABLE_VERSIONS:
        raise PacketError(
            "bad_version",
            f"packet format version {version} is not supported (this side reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}): run the same entroguard version on the "
            "client and the server",
        )
    if prior_id not in _PRIOR_NAMES:
        raise PacketError(
            "bad_prior",
            f"unknown prior id {prior_id} (known: "
            + ", ".join(f"{v}={k}" for k, v in sorted(PRIORS.items(), key=lambda kv: kv[1]))
            + "): client and server disagree on the model; use matching entroguard versions",
        )
    if version < FIRST_VERSION_OF.get(_PRIOR_NAMES[prior_id], 1):
        raise PacketError(
            "bad_prior",
            f"prior {_PRIOR_NAMES[prior_id]!r} does not exist in packet format {version}: the "
            "packet is corrupt or crafted; resend it",
        )
    return version, _PRIOR_NAMES[prior_id]
