"""The two networks we serve.

Both take pixels in [0,1] (white digit on black, as in MNIST), normalise inside the network, and
return every layer's activation by name, so the exported graph can offer each one as an output.
"""

from __future__ import annotations

import torch
from torch import nn

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class Normalize(nn.Module):
    """(x - mean) / std with MNIST's statistics, inside the graph: clients send raw pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(MNIST_MEAN))
        self.register_buffer("std", torch.tensor(MNIST_STD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """5x5 convolution without padding (each side loses 2 pixels), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=5, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ConvNet(nn.Module):
    """Six 5x5 convolutions, 28→24→20→16→12→8→4 with 20,20,50,50,50,50 maps, then 800→500→10.

    Batch norm after each convolution replaces the conv bias (and folds back into the conv weights
    at export); dropout regularises the two dense layers. The layer geometry is the plain one.
    """

    architecture = "6x conv5x5 (20,20,50,50,50,50; 28-24-20-16-12-8-4) + BN + ReLU, 800-500-10"
    layer_names = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1")
    connections: tuple[tuple[str, str], ...] = ()  # its dense weights are too many to draw
    channels = (20, 20, 50, 50, 50, 50)

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        self.normalize = Normalize()
        c_in = 1
        convs = []
        for c_out in self.channels:
            convs.append(conv_block(c_in, c_out))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.drop1 = nn.Dropout(dropout)
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.drop2 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(500, 10)

    def layers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every named activation, then `logits`."""
        out: dict[str, torch.Tensor] = {}
        h = self.normalize(x)
        for i, conv in enumerate(self.convs, start=1):
            h = conv(h)
            out[f"conv{i}"] = h
        h = torch.relu(self.fc1(self.drop1(h.flatten(1))))
        out["fc1"] = h
        out["logits"] = self.fc2(self.drop2(h))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)["logits"]


class MLP(nn.Module):
    """784 → 16 → 16 → 10 with sigmoid activations: 13,002 parameters."""

    architecture = "784-16-16-10 fully connected, sigmoid"
    layer_names = ("hidden1", "hidden2")
    # (source, target) pairs whose weights the manifest carries, for the playground to draw.
    connections = (("hidden1", "hidden2"), ("hidden2", "output"))

    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.hidden1 = nn.Linear(784, 16)
        self.hidden2 = nn.Linear(16, 16)
        self.output = nn.Linear(16, 10)

    def layers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h1 = torch.sigmoid(self.hidden1(self.normalize(x).flatten(1)))
        h2 = torch.sigmoid(self.hidden2(h1))
        return {"hidden1": h1, "hidden2": h2, "logits": self.output(h2)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)["logits"]


MODELS: dict[str, type[ConvNet] | type[MLP]] = {"convnet": ConvNet, "mlp": MLP}


def build(name: str) -> ConvNet | MLP:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name]()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Exported(nn.Module):
    """The serving graph: probabilities, logits, not_digit, then `layer.<name>` for each layer.

    `temperature` scales the logits so the probabilities are calibrated (fitted on validation
    data; `logits` is output already divided by it). With `not_digit` = (feature, weight, bias)
    the score is sigmoid(weight * feature + bias) on the raw logits, where feature is `energy`
    (-logsumexp) or `log_rest` (log(1 - max softmax)), as chosen and fitted on validation data
    after outlier exposure; without, the score is 1 - max probability. A `scorer`
    (`training.score.LayerScore`) computes it from the layers and the input instead.
    """

    def __init__(
        self,
        model: ConvNet | MLP,
        temperature: float = 1.0,
        not_digit: tuple[str, float, float] | None = None,
        scorer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.scorer = scorer
        self.feature, weight, bias = not_digit or ("", 0.0, 0.0)
        self.temperature: torch.Tensor
        self.weight: torch.Tensor
        self.bias: torch.Tensor
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.register_buffer("weight", torch.tensor(float(weight)))
        self.register_buffer("bias", torch.tensor(float(bias)))

    def output_names(self) -> list[str]:
        return ["probabilities", "logits", "not_digit"] + [
            f"layer.{n}" for n in self.model.layer_names
        ]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        acts = self.model.layers(image)
        raw = acts["logits"]
        logits = raw / self.temperature
        probabilities = torch.softmax(logits, dim=1)
        if self.scorer is not None:
            not_digit = self.scorer(image, acts, raw)
        elif self.feature:
            total = torch.logsumexp(raw, dim=1)
            if self.feature == "energy":
                feature = -total
            else:  # log(1 - max softmax) = logsumexp(all but the top logit) - logsumexp(all)
                top = torch.nn.functional.one_hot(raw.argmax(dim=1), raw.shape[1]).bool()
                feature = torch.logsumexp(raw.masked_fill(top, float("-inf")), dim=1) - total
            not_digit = torch.sigmoid(self.weight * feature + self.bias)
        else:
            not_digit = 1.0 - probabilities.max(dim=1).values
        layers = (acts[n] for n in self.model.layer_names)
        return (probabilities, logits, not_digit, *layers)
