"""Rate PGD through a known defence (the attacker differentiates the defence too)."""

from __future__ import annotations

import torch
from torch import Tensor

from entroguard.defenses import check_defense_name
from entroguard.models.split import SplitClassifier
from entroguard.threats.attacks.rate_pgd import RatePGD, rate_bits


class RatePGDThrough(RatePGD):
    """Rate PGD on the rate of the DEFENDED image: the loss is the estimated bits of
    ``defense.differentiable(model, x_adv)``, so the attacker maximises what the coder pays
    after the defence has run (a white-box adaptive attack in the sense of Athalye et al.
    2018, "Obfuscated gradients give a false sense of security").

    The gradient through the defence is exact for differentiable defences (``object_tv``,
    ``tv``, ``lowpass``, ``gaussian_blur``: their unrolled or linear computation) and BPDA
    (identity backward) for ``jpeg``. For a randomised defence the loss is averaged over
    ``eot_samples`` draws (Expectation over Transformation), taken from the attack's
    generator (``object_tv`` with ``jitter`` or ``dither`` is randomised); a deterministic
    defence gets one sample whatever ``eot_samples`` says.

    Args:
        eps, and by keyword steps, step_ratio, norm, quantization, noise_copies, random_start,
            alpha: as
            :class:`~entroguard.threats.attacks.RatePGD`.
        defense: the defence's name (``entroguard.defenses.known_defenses()``).
        defense_params: the defence's hyper-parameters (as it is deployed).
        eot_samples: draws of the defence's randomness per step (randomised defences only).

    Example::

        >>> attack = RatePGDThrough(8 / 255, defense="object_tv")
        >>> x_adv = attack(model, images)
        >>> model.compress(attack.defense(model, x_adv)).payload_bytes()
    """

    name = "rate_pgd_through"
    hparams = (*RatePGD.hparams, "adapts_to", "defense_params", "eot_samples")

    def __init__(
        self,
        eps: float = 8 / 255,
        *,
        defense: str = "object_tv",
        defense_params: dict | None = None,
        eot_samples: int = 1,
        **rate_pgd: object,
    ) -> None:
        from entroguard.defenses import build_defense

        super().__init__(eps, **rate_pgd)  # steps, step_ratio, norm, ...: RatePGD's
        if int(eot_samples) != eot_samples or eot_samples < 1:
            raise ValueError(f"eot_samples must be a positive integer, got {eot_samples}")
        if defense_params is not None and not isinstance(defense_params, dict):
            raise ValueError(f"defense_params must be a mapping, got {defense_params!r}")
        self.adapts_to = check_defense_name(defense)
        self.defense_params = dict(defense_params or {})
        self.defense = build_defense(defense, **self.defense_params)
        self.eot_samples = int(eot_samples) if self.defense.randomized else 1

    def loss(
        self,
        model: SplitClassifier,
        x: Tensor,
        labels: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        """Mean estimated bits per image of the defended images (EOT mean if randomised)."""
        total = x.new_zeros(())
        for _ in range(self.eot_samples):
            defended = self.defense.differentiable(model, x, generator)
            total = (
                total
                + rate_bits(model, defended, self.quantization, generator, self.noise_copies).mean()
            )
        return total / self.eot_samples
