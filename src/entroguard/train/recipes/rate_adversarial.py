"""Rate-adversarial fine-tuning: a split model trained against the rate attack itself.

Adversarial training (Madry et al. 2018) for the bit rate instead of the label. On every batch
the first ``adv_fraction`` of the images are attacked on the fly by :class:`RatePGD` against the
current weights (straight-through rounding, as the coder rounds, ``attack_steps`` steps of
``2.5 eps / attack_steps`` from a random start in the L-infinity ball of ``eps``), and the
step minimises

    CE(clean) + beta * bpp(clean) + gamma * bpp(attacked) + adv_ce * CE(attacked)

with bpp the estimated bits per input pixel (the training proxy, uniform quantisation noise)
and the entropy bottlenecks' auxiliary quantile loss on their own optimiser, as in
:mod:`entroguard.train.loop`. ``beta`` stays the source model's, so the clean operating point
is kept and ``gamma`` prices only the extra bits an attacker can add.

Every ``check_every`` steps the paper's attack (``noise_copies`` noisy copies, 20 steps) is run
on ``check_images`` training images and its inflation logged next to the straight-through
attack's, so a run shows whether the cheap training attack still finds what the measured attack
finds (:attr:`RateAdversarialHistory.checks`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from entroguard.data.imageset import ImageSet
from entroguard.device import module_device
from entroguard.models.split import SplitClassifier
from entroguard.threats.attacks.rate_pgd import RatePGD, rate_bits
from entroguard.train.loop import AuxStep, main_params


@dataclass
class RateAdversarialConfig:
    """Hyper-parameters of a rate-adversarial run (saved in the checkpoint metadata).

    ``eps`` is in [0, 1] pixel units (8/255 is the paper's budget); ``gamma`` and ``beta`` weigh
    bits per input pixel; ``beta`` None takes the source model's.
    """

    beta: float | None = None
    gamma: float = 0.2
    eps: float = 8 / 255
    attack_steps: int = 3
    adv_fraction: float = 0.5
    adv_ce: float = 1.0
    epochs: float = 1.0
    batch_size: int = 128
    lr: float = 5e-4
    aux_lr: float = 1e-2
    check_every: int = 100
    check_images: int = 32
    check_copies: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.adv_fraction <= 1:
            raise ValueError(f"adv_fraction must be in (0, 1], got {self.adv_fraction}")
        if self.gamma < 0 or self.adv_ce < 0 or self.epochs <= 0:
            raise ValueError("gamma and adv_ce must be >= 0 and epochs > 0")

    def training_attack(self) -> RatePGD:
        """The attack made on every batch: straight-through, few steps, random start."""
        return RatePGD(eps=self.eps, steps=self.attack_steps, quantization="ste",
                       step_ratio=2.5 / self.attack_steps, random_start=True)  # fmt: skip

    def check_attack(self) -> RatePGD:
        """The paper's attack (20 steps, noisy copies), run on a slice now and then."""
        return RatePGD(eps=self.eps, noise_copies=self.check_copies)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RateAdversarialHistory:
    """Running means every 50 steps, and the attack checks (inflation of estimated bits, in
    percent of the clean bits of the same images)."""

    steps: list[int] = field(default_factory=list)
    ce: list[float] = field(default_factory=list)
    bpp: list[float] = field(default_factory=list)
    bpp_attacked: list[float] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def adversarial_terms(
    model: SplitClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: RateAdversarialConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The loss terms of one batch (images (B, 3, H, W) in [0, 1]); ``loss`` is their sum."""
    n_adv = max(1, round(config.adv_fraction * images.shape[0]))
    attacked = config.training_attack()(model, images[:n_adv], generator=generator)
    pixels = images.shape[-2] * images.shape[-1]
    clean_out = model.forward_train(images, "noise", generator)
    adv_out = model.forward_train(attacked, "noise", generator)
    terms = {
        "ce": F.cross_entropy(clean_out.logits, labels),
        "bpp": clean_out.bits().mean() / pixels,
        "bpp_attacked": adv_out.bits().mean() / pixels,
        "ce_attacked": F.cross_entropy(adv_out.logits, labels[:n_adv]),
    }
    terms["loss"] = (terms["ce"] + config.beta * terms["bpp"]
                     + config.gamma * terms["bpp_attacked"]
                     + config.adv_ce * terms["ce_attacked"])  # fmt: skip
    return terms


def check_inflation(
    model: SplitClassifier, images: torch.Tensor, config: RateAdversarialConfig, seed: int
) -> dict:
    """Estimated-bit inflation (%) of ``images`` under the training attack and the paper's
    attack against the current weights (model left in eval mode)."""
    model.eval()
    with torch.no_grad():
        clean = rate_bits(model, images, "ste", torch.Generator()).mean().item()
    row = {}
    for name, attack in (("ste", config.training_attack()), ("noise", config.check_attack())):
        generator = torch.Generator(device=images.device).manual_seed(seed)
        with torch.no_grad():
            adv = rate_bits(model, attack(model, images, generator=generator), "ste", generator)
        row[f"inflation_{name}_pct"] = 100.0 * (adv.mean().item() / clean - 1.0)
    return row


def train_rate_adversarial(
    model: SplitClassifier,
    train_set: ImageSet,
    config: RateAdversarialConfig,
    *,
    progress: bool = True,
    desc: str = "rate-adversarial",
) -> RateAdversarialHistory:
    """Fine-tune ``model`` in place against the rate attack, on its device; it ends in eval mode
    with coder tables built. Deterministic for a given ``config.seed``."""
    if config.beta is None:
        raise ValueError("config.beta is None: give the source model's beta")
    generator = torch.Generator().manual_seed(config.seed)
    main = main_params(model)
    optimizer = torch.optim.AdamW(main, lr=config.lr)
    aux_step = AuxStep(model, config.aux_lr)
    total = max(1, round(config.epochs * math.ceil(len(train_set) / config.batch_size)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=total, pct_start=0.15)  # fmt: skip
    device = module_device(model)
    check_set = train_set.to_float(slice(0, config.check_images)).to(device)
    history, sums, step = RateAdversarialHistory(), torch.zeros(3), 0
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=False)
    while step < total:
        for images, labels, _ in train_set.batches(config.batch_size, shuffle=True,
                                                   generator=generator, device=device):  # fmt: skip
            if step % config.check_every == 0:
                history.checks.append({"step": step} | check_inflation(model, check_set, config,
                                                                      config.seed))  # fmt: skip
            model.train()
            terms = adversarial_terms(model, images, labels, config, generator)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(main, 5.0)
            optimizer.step()
            schedule.step()
            aux_step()
            sums += torch.tensor([terms[k].item() for k in ("ce", "bpp", "bpp_attacked")])
            step += 1
            _log(history, sums, step, total, bar)
            if step >= total:
                break
    bar.close()
    history.checks.append({"step": step} | check_inflation(model, check_set, config, config.seed))
    model.eval()
    model.prepare_coding()
    return history


def _log(history: RateAdversarialHistory, sums: torch.Tensor, step: int, total: int, bar) -> None:
    """Every 50 steps (and at the end): the running means into ``history`` and the bar."""
    if step % 50 and step != total:
        bar.update(1)
        return
    n = 50 if step % 50 == 0 else step % 50
    ce, bpp, bpp_adv = (sums / n).tolist()
    history.steps.append(step)
    history.ce.append(ce)
    history.bpp.append(bpp)
    history.bpp_attacked.append(bpp_adv)
    bar.set_postfix(ce=f"{ce:.3f}", bpp=f"{bpp:.3f}", bpp_adv=f"{bpp_adv:.3f}")
    sums.zero_()
    bar.update(1)
