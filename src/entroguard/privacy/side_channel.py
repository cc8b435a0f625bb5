"""Side channels of the packet itself: its length, and the bits each latent channel costs.

Anyone on the path sees a packet's length; anyone who can parse the stream (the entropy model
is public) sees how many bits each channel of the latent took.
"""

from __future__ import annotations

import torch
from torch import Tensor

from entroguard.device import module_device
from entroguard.models.split import EncodedBatch, SplitClassifier


@torch.no_grad()
def encode_all(model: SplitClassifier, coded: Tensor, batch: int = 500) -> list[EncodedBatch]:
    """Real coder output for the latents the head codes (N, C, h, w)
    (:meth:`ProtectionView.protect_all` of :func:`entroguard.privacy.points.head_latents`), in
    batches of ``batch`` images."""
    device = module_device(model)
    return [EncodedBatch(model.codec.compress(y.to(device)), tuple(y.shape[-2:]))
            for y in coded.split(batch)]  # fmt: skip


def packet_lengths(
    model: SplitClassifier, encoded: list[EncodedBatch], extra_bytes: int = 0
) -> Tensor:
    """Bytes of each image's packet, (N,) float32, from the coder output :func:`encode_all`,
    plus ``extra_bytes`` a protected packet carries (nonce and tag)."""
    sizes = [len(p) + extra_bytes for batch in encoded for p in model.packets(batch)]
    return torch.tensor(sizes, dtype=torch.float32)


@torch.no_grad()
def channel_bits(model: SplitClassifier, coded: Tensor, batch: int = 500) -> Tensor:
    """Estimated bits per latent channel (and hyper-latent channel), (N, C [+ Cz]) float32,
    of the latents the head codes (N, C, h, w)."""
    rows, device = [], module_device(model)
    for y in coded.split(batch):
        out = model.codec.likelihoods(y.to(device), "round")
        per = [-torch.log2(lik).flatten(2).sum(2) for lik in out.likelihoods.values()]
        rows.append(torch.cat(per, dim=1).float().cpu())
    return torch.cat(rows)


def length_classifier_top1(
    train_lengths: Tensor, train_labels: Tensor, test_lengths: Tensor, test_labels: Tensor
) -> float:
    """Top-1 of the best guess from the length alone: the most frequent shadow class at each
    length (the nearest seen length for one never seen); exact, no training to cut short."""
    lengths = sorted(set(train_lengths.long().tolist()))
    table = torch.tensor(lengths)
    guess = {}
    for n in lengths:
        labels = train_labels[train_lengths.long() == n]
        guess[n] = int(torch.bincount(labels).argmax())
    nearest = torch.bucketize(test_lengths.long(), table).clamp(max=len(lengths) - 1)
    left = (nearest - 1).clamp(min=0)
    closer_left = (test_lengths - table[left]).abs() < (table[nearest] - test_lengths).abs()
    picked = torch.where(closer_left, table[left], table[nearest])
    predicted = torch.tensor([guess[int(n)] for n in picked])
    return float((predicted == test_labels).float().mean())
