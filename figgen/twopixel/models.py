"""Classifiers of the two-pixel world: small torch MLPs trained full-batch on a few points.

A model takes images scaled to [0, 1]^2 (grey levels / 255) and returns logits [B, 2]
(column 0 = cat, 1 = dog), so the attack library applies to it unchanged. Many models of one
architecture train at once as a stack (one batched matrix product per layer); each member is
initialised from its own seed and has its own loss, and Adam works elementwise, so a member
trains exactly as it would alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from figgen.twopixel.world import PIXEL_MAX
from pelican_figgen.harness import progress


@dataclass(frozen=True)
class MLPSpec:
    """An MLP architecture and its training: width, depth, activation, first-layer scale."""

    width: int = 32
    depth: int = 2
    activation: str = "tanh"  # relu | tanh | gelu | sin
    scale: float = 1.0  # multiplies the first layer's initial weights: larger = wigglier
    steps: int = 400
    lr: float = 0.01

    def describe(self) -> str:
        """A short human-readable name, e.g. 'MLP 2x32 tanh'."""
        name = f"MLP {self.depth}x{self.width} {self.activation}"
        return name if self.scale == 1.0 else f"{name}, input scale {self.scale:g}"

    def label(self) -> str:
        """A legend-sized name, e.g. '2x32 relu, scale 3'."""
        return self.describe().removeprefix("MLP ").replace("input scale", "scale")


class Sine(nn.Module):
    """sin(x) as a layer: a periodic activation, as in SIREN networks."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply sin elementwise."""
        return torch.sin(x)


class Centre(nn.Module):
    """Map [0, 1] inputs to [-1, 1], so the model sees centred inputs."""

    def forward(self, x: Tensor) -> Tensor:
        """Return 2x - 1."""
        return 2.0 * x - 1.0


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sin": Sine}


def make_mlp(spec: MLPSpec, seed: int) -> nn.Sequential:
    """A freshly initialised MLP for spec, its weights drawn from a generator seeded with seed."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [2] + [spec.width] * spec.depth
    layers: list[nn.Module] = [Centre()]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[spec.activation]()]
    layers.append(nn.Linear(sizes[-1], 2))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for layer in linears(model):
            bound = 1.0 / layer.in_features**0.5  # PyTorch's default uniform range
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.uniform_(-bound, bound, generator=gen)
        first = linears(model)[0]
        first.weight.mul_(spec.scale)
        first.bias.mul_(spec.scale)
    return model


def linears(model: nn.Sequential) -> list[nn.Linear]:
    """The Linear layers of an MLP, input first."""
    return [m for m in model if isinstance(m, nn.Linear)]


def to_input(points: np.ndarray | Tensor, device: torch.device | str = "cpu") -> Tensor:
    """Grey-level points [N, 2] as model inputs in [0, 1], float32 on device."""
    return torch.as_tensor(points, dtype=torch.float32, device=device) / PIXEL_MAX  # [N, 2]


def stacked_logits(
    weights: list[Tensor], biases: list[Tensor], act: nn.Module, x: Tensor
) -> Tensor:
    """Logits [M, N, 2] of M stacked MLPs (weights [M, in, out], biases [M, out]) at x [N, 2]."""
    h = Centre()(x).expand(len(weights[0]), -1, -1)  # [M, N, 2]
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.baddbmm(b.unsqueeze(1), h, w)  # [M, N, out]
        h = act(h) if i < len(weights) - 1 else h
    return h  # [M, N, 2]


class Adam:
    """Adam (Kingma and Ba 2014), elementwise, written out: torch.optim takes a second to import."""

    def __init__(
        self,
        params: list[Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: tuple[Tensor, ...]) -> None:
        """Move every parameter one step against its gradient."""
        (b1, b2), self.t = self.betas, self.t + 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


def fit_many(
    spec: MLPSpec, seeds: list[int], points: np.ndarray, labels: np.ndarray
) -> list[nn.Sequential]:
    """One model of architecture spec per seed, each trained full-batch (Adam) on the points."""
    members = [make_mlp(spec, s) for s in seeds]
    layers = [linears(m) for m in members]
    depth = range(len(layers[0]))
    weights = [torch.stack([ls[i].weight.T for ls in layers]) for i in depth]  # [M, in, out] each
    biases = [torch.stack([ls[i].bias for ls in layers]) for i in depth]  # [M, out] each
    params = [p.detach().clone().requires_grad_(True) for p in weights + biases]  # leaves
    weights, biases = params[: len(weights)], params[len(weights) :]
    x = to_input(points)  # [N, 2]
    y = torch.as_tensor(labels, dtype=torch.long).repeat(len(seeds))  # [M * N]
    act = ACTIVATIONS[spec.activation]()
    adam = Adam(params, spec.lr)
    # A bar in the build while the models train: the slowest part of the two-pixel figures.
    for _ in progress(range(spec.steps), description=f"training {len(seeds)} x {spec.label()}"):
        logits = stacked_logits(weights, biases, act, x)  # [M, N, 2]
        # Sum of the members' mean losses: each member's gradient is its own.
        loss = F.cross_entropy(logits.reshape(-1, 2), y, reduction="sum") / len(points)
        adam.step(torch.autograd.grad(loss, params))
    with torch.no_grad():
        for m, ls in enumerate(layers):
            for layer, w, b in zip(ls, weights, biases, strict=True):
                layer.weight.copy_(w[m].T)
                layer.bias.copy_(b[m])
    for member in members:
        member.eval().requires_grad_(False)  # from here on only attacked and plotted
    return members


def fit(spec: MLPSpec, seed: int, points: np.ndarray, labels: np.ndarray) -> nn.Sequential:
    """A model of architecture spec, initialised from seed and trained on the points."""
    return fit_many(spec, [seed], points, labels)[0]


@torch.no_grad()
def cat_probability(model: nn.Module, points: np.ndarray, batch: int = 32768) -> np.ndarray:
    """The model's probability of cat at each grey-level point [N, 2] -> [N]."""
    device = next(model.parameters()).device
    x = to_input(points, device)  # [N, 2]
    out = [F.softmax(model(chunk), dim=1)[:, 0] for chunk in x.split(batch)]  # [b] each
    return torch.cat(out).cpu().numpy().astype(np.float64)  # [N]


def predict(model: nn.Module, points: np.ndarray) -> np.ndarray:
    """The model's class (CAT = 0, DOG = 1) at each grey-level point [N, 2] -> [N]."""
    return np.where(cat_probability(model, points) > 0.5, 0, 1)  # [N]
