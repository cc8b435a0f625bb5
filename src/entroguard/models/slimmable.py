"""Slimmable split heads: one resident model, compute and bytes switched at run time.

Two knobs, after Assine et al. (2023):

* **compute**: the head's ``g_a`` is an ensemble of ``members`` small analysis transforms and
  the latent is the mean of the first ``m`` of them, so device time grows with ``m``. We chose
  the member form over width slicing because each member is an ordinary module (no sliced
  weights, no private BatchNorm statistics per width: GDN has no running statistics to keep
  apart) and because it is the form of the published system whose device timings we compare
  with;
* **bytes**: the codec is a :class:`~entroguard.codec.rate_switched.RateSwitchedCodec`, one
  learned gain, inverse gain and entropy model per rate setting.

``set_mode(members, rate)`` switches both in place. Packets carry the setting (format 3) and
the tail decodes any rate setting with the same weights, whatever mode the head is in.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from entroguard.codec.rate_switched import RateSwitchedCodec
from entroguard.errors import InputError, ModelMismatchError
from entroguard.models.split import EncodedBatch, SplitClassifier
from entroguard.packet import Packet, PacketError

SLIM_OPTIONS = {"members": 4, "rate_settings": 4, "member_hidden": 32}
"""Options a slimmable head adds to its architecture's (members, rate settings, member width)."""


class MemberEncoder(nn.Module):
    """``g_a`` as an ensemble: the latent is the mean of the first :attr:`active` members."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not 1 <= len(members) <= 16:
            raise ValueError(f"1..16 members (the packet's compute nibble), got {len(members)}")
        self.members = nn.ModuleList(members)
        self.active = len(members)

    def forward(self, x: Tensor) -> Tensor:
        out = self.members[0](x)
        for member in self.members[1 : self.active]:
            out = out + member(x)
        return out / self.active


class SlimmableSplitClassifier(SplitClassifier):
    """A :class:`SplitClassifier` whose head switches compute and rate settings in place.

    A setting is ``(members, rate)``: ``members`` in 1..M encoder members, ``rate`` in
    0..R-1 (0 sends the fewest bytes). The model starts at the largest setting ``(M, R-1)``.
    """

    encoder: MemberEncoder
    codec: RateSwitchedCodec
    slimmable = True

    @property
    def settings(self) -> list[tuple[int, int]]:
        """Every trained setting ``(members, rate)``, smallest first."""
        members = range(1, len(self.encoder.members) + 1)
        return [(m, r) for m in members for r in range(self.codec.settings)]

    @property
    def largest(self) -> tuple[int, int]:
        return len(self.encoder.members), self.codec.settings - 1

    @property
    def mode(self) -> tuple[int, int]:
        """The setting the head codes with now, ``(members, rate)``."""
        return self.encoder.active, self.codec.rate

    def check_setting(self, members: int, rate: int) -> tuple[int, int]:
        """``(members, rate)`` if trained, else ``InputError`` listing what is."""
        if (members, rate) not in self.settings:
            m, r = self.largest
            raise InputError(
                f"setting (members={members!r}, rate={rate!r}) is not one this model was "
                f"trained for: members 1..{m}, rate 0..{r}"
            )
        return members, rate

    def set_mode(self, members: int, rate: int) -> None:
        """Switch the head to ``(members, rate)`` in place (no reload, no new tensors)."""
        self.encoder.active, self.codec.rate = self.check_setting(members, rate)

    def packets(self, encoded: EncodedBatch) -> list[bytes]:
        fp, (m, r) = self.fingerprint_bytes, self.mode
        return [
            Packet(self.spec.prior, fp, encoded.latent_hw, tuple(s), setting=(m - 1, r)).to_bytes()
            for s in encoded.strings
        ]

    def _check_packet(self, packet: Packet, index: int) -> None:
        super()._check_packet(packet, index)
        if packet.setting is None:
            raise ModelMismatchError(
                f"packet {index} carries no setting (format {packet.version}): it was not coded "
                "by a slimmable head; send it to the model that coded it"
            )
        members, rate = packet.setting[0] + 1, packet.setting[1]
        if (members, rate) not in self.settings:
            raise PacketError(
                "bad_setting",
                f"packet {index} was coded at setting (members={members}, rate={rate}), which "
                f"this model was not trained for (members 1..{self.largest[0]}, rate "
                f"0..{self.largest[1]}): the packet is corrupt or comes from another head",
            )

    def decompress(self, encoded: EncodedBatch) -> Tensor:
        if encoded.settings is None:
            return self.codec.decompress(encoded.strings, encoded.latent_hw)
        rates = [rate for _, rate in encoded.settings]
        return self.codec.decompress_settings(encoded.strings, encoded.latent_hw, rates)


def parse_setting_suffix(text: str) -> tuple[int, int]:
    """``"m2,r1"`` -> ``(2, 1)``; ``InputError`` for anything else."""
    try:
        m_part, r_part = text.split(",")
        if not (m_part.startswith("m") and r_part.startswith("r")):
            raise ValueError
        return int(m_part[1:]), int(r_part[1:])
    except ValueError:
        raise InputError(
            f"bad setting {text!r}: write it as m<members>,r<rate>, e.g. resnet_s-slim-mshp@m2,r1"
        ) from None


SETTING_MARK = "@"
"""Separates a model name from a setting: ``resnet_s-slim-mshp@m2,r1``."""


def split_setting_name(name: str) -> tuple[str, tuple[int, int] | None]:
    """``"resnet_s-slim-mshp@m2,r1"`` -> ``("resnet_s-slim-mshp", (2, 1))``; no mark: None."""
    base, mark, suffix = str(name).partition(SETTING_MARK)
    return (base, parse_setting_suffix(suffix)) if mark else (base, None)


def setting_name(base: str, setting: tuple[int, int]) -> str:
    """The name of ``base`` at ``setting``: ``resnet_s-slim-mshp@m2,r1``."""
    return f"{base}{SETTING_MARK}m{setting[0]},r{setting[1]}"


def apply_setting(model: SplitClassifier, setting: tuple[int, int] | None, name: str) -> None:
    """Put a loaded model at ``setting`` (None: leave it); ``InputError`` for a plain model."""
    if setting is None:
        return
    if not isinstance(model, SlimmableSplitClassifier):
        raise InputError(f"{name}: only slimmable models take a setting ({SETTING_MARK}m<members>"
                         ",r<rate>); drop it for this model")  # fmt: skip
    model.set_mode(*setting)


def setting_clean_stats(metadata: dict) -> dict[tuple[int, int], dict]:
    """Each setting's clean payload statistics from a slimmable checkpoint's metadata."""
    return {
        (int(row["members"]), int(row["rate"])): row["clean_payload"]
        for row in metadata.get("settings", [])
        if "clean_payload" in row
    }
