"""Load a shipped model, code images into packets, decode them, attack and count the bytes."""

import torch

import entroguard
from entroguard.data import load_dataset
from entroguard.measure import measure_batch
from entroguard.threats.attacks import RatePGD

model = entroguard.load("resnet_s-mshp-beta0.01")
test = load_dataset("fashion-mnist", "test")
images, labels = test.to_float(slice(0, 16)), test.labels[:16]
attacked = RatePGD(eps=8 / 255, steps=5, noise_copies=4)(model, images, generator=torch.Generator())
for name, x in (("clean", images), ("rate_pgd 8/255", attacked)):
    print(name, measure_batch(model, x, labels).summary())
