"""Multi-exit networks and per-example exit policies (notebook 4.3: PaBEE and F-PaBEE).

Zhou, Xu, Ge, McAuley, Xu & Wei (2020), *BERT Loses Patience: Fast and Robust Inference with
Early Exit*, NeurIPS, https://arxiv.org/abs/2006.04152, put a classifier after every layer of a
network, train all of them together, and at inference stop as soon as the prediction has stayed
the same for ``t`` consecutive layers (the *patience*). Gao, Zhu, Gao & Yin (2023), *F-PABEE:
Flexible-patience-based Early Exiting for Single-label and Multi-label Text Classification
Tasks*, ICASSP, https://arxiv.org/abs/2305.11916, relax "the same prediction" to "similar
predicted distributions" (a divergence below a threshold).

This module, at laptop scale on sklearn's 8x8 digits:

- :class:`MultiExitMLP` a stack of residual MLP blocks with a classifier head after every block;
- :func:`pabee_loss` the training objective: heads' cross-entropies averaged with weights j;
- :class:`Patience`, :class:`EntropyThreshold`, :class:`Similarity`, :class:`FixedDepth` exit
  policies, each a small state machine applied per example, layer by layer;
- :func:`simulate_exits` applies a policy to the stored logits of every head (fast sweeps);
  :func:`early_exit_inference` really runs only the layers each example needs (same answers);
- :func:`exit_flops` compute accounting: FLOPs per example of the layers (and heads) it ran;
- :func:`head_accuracies`, :func:`overthinking_rate` the measurements of the notebook.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaedu.checks import check_int
from adaedu.compute import forward_flops
from adaedu.data import load_digits_split
from adaedu.train import History, train

# ----------------------------------------------------------------------------------------------
# Data


@dataclass
class DigitData:
    """Flattened, standardised digit images (B, 64) and labels (B,) for training and testing, and
    (when asked for) a validation split carved out of the training part."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    x_val: Tensor | None = None
    y_val: Tensor | None = None


def load_noisy_digits(
    test_fraction: float = 0.3,
    noise: float = 0.0,
    seed: int = 0,
    noise_seed: int = 1234,
    val_fraction: float = 0.0,
) -> DigitData:
    """sklearn's bundled digits (1797 images of 8x8 pixels), a stratified train/test split fixed
    by ``seed``, pixels standardised with the training part's mean and std.

    The *test* images get Gaussian noise of standard deviation ``noise`` (in those standard units),
    drawn once from ``noise_seed`` so that every run is scored on the same noisy test set. The
    training images stay clean: :func:`train_multi_exit` adds fresh noise to every batch. With
    ``val_fraction`` > 0 that share of the training part (stratified, same ``seed``) becomes a
    **validation** split with its own fixed noise (from ``noise_seed + 1``), for selecting
    thresholds; the test split is the same with or without it."""
    if noise < 0:
        raise ValueError(f"noise={noise!r}; allowed values: a standard deviation >= 0")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r}; allowed values: 0 <= fraction < 1")
    x_tr, y_tr, x_te, y_te = load_digits_split(test_fraction, seed)
    gen = torch.Generator().manual_seed(noise_seed)
    x_te = x_te + noise * torch.randn(x_te.shape, generator=gen)
    if not val_fraction:
        return DigitData(x_tr, y_tr, x_te, y_te)
    from sklearn.model_selection import train_test_split

    idx_tr, idx_val = train_test_split(
        torch.arange(len(y_tr)).numpy(),
        test_size=val_fraction,
        stratify=y_tr.numpy(),
        random_state=seed,
    )
    idx_tr, idx_val = torch.as_tensor(idx_tr), torch.as_tensor(idx_val)
    gen_val = torch.Generator().manual_seed(noise_seed + 1)
    x_val = x_tr[idx_val] + noise * torch.randn((len(idx_val), x_tr.shape[1]), generator=gen_val)
    return DigitData(x_tr[idx_tr], y_tr[idx_tr], x_te, y_te, x_val, y_tr[idx_val])


# ----------------------------------------------------------------------------------------------
# The model


class Block(nn.Module):
    """One pre-norm residual MLP block: ``h + W2 gelu(W1 norm(h))``."""

    def __init__(self, d: int, expansion: int = 2, dropout: float = 0.0):
        super().__init__()
        check_int("d", d)
        check_int("expansion", expansion)
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, expansion * d)
        self.down = nn.Linear(expansion * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.drop(self.down(F.gelu(self.up(self.norm(h)))))


class Head(nn.Module):
    """An internal classifier: layer norm, then a linear map to class logits."""

    def __init__(self, d: int, n_classes: int):
        super().__init__()
        check_int("d", d)
        check_int("n_classes", n_classes, minimum=2)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, n_classes)

    def forward(self, h: Tensor) -> Tensor:
        return self.out(self.norm(h))


class MultiExitMLP(nn.Module):
    """An input projection, ``n_layers`` residual MLP blocks, and a classifier after each block
    (PaBEE's internal classifiers C_1..C_n, Zhou et al. 2020, Sec. 3 and Fig. 1).

    ``forward(x)`` runs every layer and returns the logits of every head, shape
    ``(n_layers, batch, n_classes)``; ``embed``, ``blocks[i]`` and ``heads[i]`` can also be run
    one at a time (see :func:`early_exit_inference`)."""

    def __init__(
        self,
        in_features: int = 64,
        d: int = 64,
        n_layers: int = 12,
        n_classes: int = 10,
        expansion: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        for name, value in (("in_features", in_features), ("d", d), ("n_layers", n_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; allowed values: an integer >= 1")
        if not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes={n_classes!r}; allowed values: an integer >= 2")
        self.n_layers = n_layers
        self.embed = nn.Linear(in_features, d)
        self.blocks = nn.ModuleList(Block(d, expansion, dropout) for _ in range(n_layers))
        self.heads = nn.ModuleList(Head(d, n_classes) for _ in range(n_layers))

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        logits = []
        for block, head in zip(self.blocks, self.heads, strict=True):
            h = block(h)
            logits.append(head(h))
        return torch.stack(logits)


def pabee_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """PaBEE's training objective: the heads' cross-entropies averaged with weights j,

    L = sum_j j * L_j / sum_j j,   j = 1..n (deeper heads count more; Zhou et al. 2020, Sec. 3,
    and their code), with ``logits`` of shape (n_layers, batch, n_classes)."""
    if logits.dim() != 3 or logits.shape[1] != labels.shape[0]:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} and labels shape {tuple(labels.shape)}; "
            "allowed: logits (n_layers, batch, n_classes) with labels (batch,)"
        )
    n = logits.shape[0]
    per_head = torch.stack([F.cross_entropy(logits[j], labels) for j in range(n)])  # L_j
    weights = torch.arange(1, n + 1, dtype=per_head.dtype, device=per_head.device)  # j
    return (weights * per_head).sum() / weights.sum()


def train_multi_exit(
    model: MultiExitMLP,
    data: DigitData,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    noise: float = 0.0,
    seed: int = 0,
) -> History:
    """Train all heads together on :func:`pabee_loss` with AdamW and a cosine learning-rate
    decay; mini-batches drawn without replacement, reshuffled every epoch from ``seed``. With
    ``noise`` > 0, fresh Gaussian pixel noise of that standard deviation is added to every batch
    (so the network cannot memorise one fixed noisy copy of the training images)."""
    if noise < 0:
        raise ValueError(f"noise={noise!r}; allowed values: a standard deviation >= 0")
    n = len(data.y_train)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size={batch_size!r}; allowed values: 1..{n}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}; allowed values: an integer >= 1")
    device = next(model.parameters()).device
    x, y = data.x_train.to(device), data.y_train.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    order: list[Tensor] = []

    def next_batch(step: int) -> tuple[Tensor, Tensor]:
        for group in optimizer.param_groups:  # cosine decay from lr to 0
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        if not order:
            order.extend(torch.randperm(n, generator=gen).split(batch_size)[: n // batch_size])
        idx = order.pop(0).to(device)
        xb = x[idx]
        if noise > 0:
            xb = xb + noise * torch.randn(xb.shape, generator=gen).to(device)
        return xb, y[idx]

    return train(
        model,
        lambda m, batch: pabee_loss(m(batch[0]), batch[1]),
        next_batch,
        steps=steps,
        optimizer=optimizer,
        log_every=max(1, steps // 50),
        progress=False,
    )


@torch.no_grad()
def all_head_logits(model: MultiExitMLP, x: Tensor) -> Tensor:
    """Logits of every head on ``x`` (n_layers, batch, n_classes), in eval mode, on the CPU."""
    if x.dim() != 2 or x.shape[1] != model.embed.in_features:
        raise ValueError(
            f"x has shape {tuple(x.shape)}; allowed: (batch, {model.embed.in_features})"
        )
    was_training = model.training
    model.eval()
    out = model(x.to(next(model.parameters()).device)).cpu()
    model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------------
# Exit policies: per-example state machines, called once per layer


def entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of softmax(logits) over the last dimension."""
    if not logits.is_floating_point():
        raise TypeError(f"logits has dtype {logits.dtype}; allowed: a floating-point tensor")
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def divergence(p_logits: Tensor, q_logits: Tensor, kind: str = "js") -> Tensor:
    """Divergence between the class distributions of two heads, per example (nats):
    ``"kl"``: KL(p || q); ``"js"``: Jensen-Shannon, (KL(p||m) + KL(q||m)) / 2 with m = (p+q)/2,
    symmetric and at most log 2."""
    if q_logits.shape != p_logits.shape:
        raise ValueError(
            f"q_logits shape {tuple(q_logits.shape)}; allowed: p_logits' shape "
            f"{tuple(p_logits.shape)}"
        )
    logp, logq = F.log_softmax(p_logits, -1), F.log_softmax(q_logits, -1)
    if kind == "kl":
        return (logp.exp() * (logp - logq)).sum(-1)
    if kind == "js":
        logm = torch.logaddexp(logp, logq) - math.log(2.0)
        return 0.5 * ((logp.exp() * (logp - logm)).sum(-1) + (logq.exp() * (logq - logm)).sum(-1))
    raise ValueError(f"kind={kind!r}; allowed values: 'kl', 'js'")


class ExitPolicy:
    """An exit rule. ``start(n)`` gives the state of ``n`` examples before layer 1;
    ``step(state, prev_logits, logits)`` sees the examples' logits at the current layer (and at
    the previous one, None at layer 1) and returns ``(exit_now, new_state)``. Examples that never
    exit leave at the last layer."""

    def start(self, n: int) -> Tensor:
        return torch.zeros(n, dtype=torch.long)

    def step(self, state: Tensor, prev: Tensor | None, logits: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


@dataclass
class Patience(ExitPolicy):
    """PaBEE (Zhou et al. 2020, Sec. 3): a counter of consecutive layers whose prediction equals
    the previous layer's,

        cnt_i = cnt_{i-1} + 1  if argmax C_i = argmax C_{i-1},  else 0,

    and the example exits at the first layer where cnt_i = t (so at layer t + 1 at the earliest)."""

    t: int

    def __post_init__(self):
        if not isinstance(self.t, int) or self.t < 1:
            raise ValueError(f"t={self.t!r}; allowed values: an integer >= 1")

    def step(self, state: Tensor, prev: Tensor | None, logits: Tensor) -> tuple[Tensor, Tensor]:
        if prev is None:
            cnt = torch.zeros_like(state)
        else:
            same = logits.argmax(-1) == prev.argmax(-1)
            cnt = torch.where(same, state + 1, torch.zeros_like(state))
        return cnt >= self.t, cnt


@dataclass
class EntropyThreshold(ExitPolicy):
    """DeeBERT-style confidence exit (Xin et al. 2020): leave at the first layer whose predicted
    distribution has entropy below ``threshold`` nats (max entropy of 10 classes: log 10)."""

    threshold: float

    def __post_init__(self):
        if not self.threshold >= 0:
            raise ValueError(f"threshold={self.threshold!r}; allowed values: >= 0 (nats)")

    def step(self, state: Tensor, prev: Tensor | None, logits: Tensor) -> tuple[Tensor, Tensor]:
        return entropy(logits) < self.threshold, state


@dataclass
class Similarity(ExitPolicy):
    """F-PaBEE-style exit (Gao et al. 2023): count consecutive layers whose predicted
    distribution is *similar* to the previous layer's (divergence below ``threshold``) and leave
    when the count reaches ``t``. With threshold -> 0 this demands identical distributions; large
    thresholds exit at layer t + 1. (F-PaBEE's best variant, "JSKD", is not reproduced exactly.)"""

    threshold: float
    t: int = 1
    kind: str = "js"

    def __post_init__(self):
        if not self.threshold >= 0:
            raise ValueError(f"threshold={self.threshold!r}; allowed values: >= 0 (nats)")
        if not isinstance(self.t, int) or self.t < 1:
            raise ValueError(f"t={self.t!r}; allowed values: an integer >= 1")
        if self.kind not in ("kl", "js"):
            raise ValueError(f"kind={self.kind!r}; allowed values: 'kl', 'js'")

    def step(self, state: Tensor, prev: Tensor | None, logits: Tensor) -> tuple[Tensor, Tensor]:
        if prev is None:
            cnt = torch.zeros_like(state)
        else:
            similar = divergence(logits, prev, self.kind) < self.threshold
            cnt = torch.where(similar, state + 1, torch.zeros_like(state))
        return cnt >= self.t, cnt


@dataclass
class FixedDepth(ExitPolicy):
    """The static baseline: every example leaves at layer ``layer`` (1-based)."""

    layer: int

    def __post_init__(self):
        if not isinstance(self.layer, int) or self.layer < 1:
            raise ValueError(f"layer={self.layer!r}; allowed values: an integer >= 1")

    def step(self, state: Tensor, prev: Tensor | None, logits: Tensor) -> tuple[Tensor, Tensor]:
        state = state + 1  # layers run so far
        return state >= self.layer, state


@dataclass
class ExitResult:
    """What an exit policy did: per example the exit layer (1-based), the prediction of the head
    it left at, and whether that prediction was right (when labels were given)."""

    exit_layer: Tensor
    prediction: Tensor
    correct: Tensor | None = None

    @property
    def accuracy(self) -> float:
        if self.correct is None:
            raise ValueError("no labels were given, so there is no accuracy")
        return float(self.correct.float().mean())

    @property
    def mean_layers(self) -> float:
        return float(self.exit_layer.float().mean())


def simulate_exits(logits: Tensor, policy: ExitPolicy, labels: Tensor | None = None) -> ExitResult:
    """Apply ``policy`` to the stored logits of every head, shape (n_layers, batch, n_classes):
    the same decisions as :func:`early_exit_inference`, without re-running the network (each
    example's exit depends only on its own heads)."""
    if logits.dim() != 3:
        raise ValueError(f"logits shape {tuple(logits.shape)}; allowed: (n_layers, batch, classes)")
    n_layers, batch, _ = logits.shape
    state = policy.start(batch)
    exit_layer = torch.full((batch,), n_layers, dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool)
    prev = None
    for i in range(n_layers):
        leave, state = policy.step(state, prev, logits[i])
        exit_layer = torch.where(leave & ~done, torch.full_like(exit_layer, i + 1), exit_layer)
        done |= leave
        prev = logits[i]
    prediction = logits[exit_layer - 1, torch.arange(batch)].argmax(-1)
    correct = None if labels is None else prediction == labels
    return ExitResult(exit_layer, prediction, correct)


@torch.no_grad()
def early_exit_inference(
    model: MultiExitMLP, x: Tensor, policy: ExitPolicy, labels: Tensor | None = None
) -> ExitResult:
    """Real early exit: run layer by layer on the examples still *active* only, apply ``policy``
    to their heads, and drop the ones that leave, so their remaining layers are never computed."""
    if not isinstance(policy, ExitPolicy):
        raise TypeError(f"policy={policy!r}; allowed values: an ExitPolicy (e.g. Patience(t))")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = x.shape[0]
    state = policy.start(batch)
    exit_layer = torch.full((batch,), model.n_layers, dtype=torch.long)
    prediction = torch.zeros(batch, dtype=torch.long)
    active = torch.arange(batch)
    h = model.embed(x.to(device))
    prev: Tensor | None = None
    for i, (block, head) in enumerate(zip(model.blocks, model.heads, strict=True)):
        h = block(h)
        logits = head(h).cpu()
        leave, state_active = policy.step(state[active], prev, logits)
        state[active] = state_active
        if i == model.n_layers - 1:
            leave = torch.ones_like(leave)
        prediction[active[leave]] = logits[leave].argmax(-1)
        exit_layer[active[leave]] = i + 1
        keep = ~leave
        active, h, prev = active[keep], h[keep.to(h.device)], logits[keep]
        if len(active) == 0:
            break
    model.train(was_training)
    correct = None if labels is None else prediction == labels
    return ExitResult(exit_layer, prediction, correct)


# ----------------------------------------------------------------------------------------------
# Compute accounting and measurements


def layer_flops(model: MultiExitMLP) -> tuple[float, Tensor]:
    """FLOPs per example of the input projection, and of each layer *with its head* (every layer
    an example runs is followed by its classifier, which the exit rule needs), measured with
    :func:`adaedu.compute.forward_flops` on the modules themselves."""
    if not isinstance(model, MultiExitMLP):
        raise TypeError(f"model is a {type(model).__name__}; allowed: a MultiExitMLP")
    device = next(model.parameters()).device
    x = torch.zeros(1, model.embed.in_features, device=device)
    h = torch.zeros(1, model.embed.out_features, device=device)
    embed = forward_flops(model.embed, x)
    pairs = zip(model.blocks, model.heads, strict=True)
    per_layer = [forward_flops(block, h) + forward_flops(head, h) for block, head in pairs]
    return embed, torch.tensor(per_layer, dtype=torch.float64)


def exit_flops(model: MultiExitMLP, exit_layer: Tensor) -> Tensor:
    """FLOPs spent on each example that left at ``exit_layer`` (1-based): the input projection
    plus layers and heads 1..exit_layer."""
    if exit_layer.numel() and (exit_layer.min() < 1 or exit_layer.max() > model.n_layers):
        raise ValueError(f"exit_layer values must lie in 1..{model.n_layers}")
    embed, per_layer = layer_flops(model)
    cumulative = embed + per_layer.cumsum(0)
    return cumulative[exit_layer - 1]


def _check_head_logits(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 3 or labels.shape != logits.shape[1:2]:
        raise ValueError(
            f"logits shape {tuple(logits.shape)} and labels shape {tuple(labels.shape)}; "
            "allowed: logits (n_layers, batch, n_classes) with labels (batch,)"
        )


def head_accuracies(logits: Tensor, labels: Tensor) -> Tensor:
    """Accuracy of each head on its own (the static truncation curve), shape (n_layers,)."""
    _check_head_logits(logits, labels)
    return (logits.argmax(-1) == labels).float().mean(-1)


def overthinking_mask(logits: Tensor, labels: Tensor) -> Tensor:
    """Examples that the last head gets wrong although some earlier head got them right
    ("overthinking", Kaya et al. 2019, as discussed by Zhou et al. 2020), shape (batch,)."""
    _check_head_logits(logits, labels)
    correct = logits.argmax(-1) == labels  # (n_layers, batch)
    return ~correct[-1] & correct[:-1].any(0)


def overthinking_rate(logits: Tensor, labels: Tensor) -> float:
    """Fraction of all examples where some earlier head was right and the last head wrong."""
    return float(overthinking_mask(logits, labels).float().mean())


def sweep(logits: Tensor, labels: Tensor, policies: list[ExitPolicy]) -> Tensor:
    """(accuracy, mean layers run) of each policy, shape (len(policies), 2)."""
    if not policies:
        raise ValueError("policies is empty; allowed values: one or more ExitPolicy objects")
    rows = []
    for policy in policies:
        r = simulate_exits(logits, policy, labels)
        rows.append((r.accuracy, r.mean_layers))
    return torch.tensor(rows)


# ----------------------------------------------------------------------------------------------
# The notebook's experiment


def select_on_validation(
    val_logits: Tensor, val_labels: Tensor, policies: list[ExitPolicy], tolerance: float = 0.003
) -> int:
    """Index of the policy to use, chosen on the **validation** split only: among the policies
    whose validation accuracy is at least the last head's minus ``tolerance`` (a fraction, 0.003
    = 0.3 points), the one that runs the fewest mean layers (ties: the earlier in the list); if
    none qualifies, the most accurate one."""
    if not policies:
        raise ValueError("policies is empty; allowed values: one or more ExitPolicy objects")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance={tolerance!r}; allowed values: 0 <= tolerance < 1")
    rows = sweep(val_logits, val_labels, policies)  # (policies, 2): accuracy, mean layers
    last = float(head_accuracies(val_logits, val_labels)[-1])
    ok = rows[:, 0] >= last - tolerance - 1e-9
    if ok.any():
        layers = torch.where(ok, rows[:, 1], torch.full_like(rows[:, 1], float("inf")))
        return int(layers.argmin())
    return int(rows[:, 0].argmax())


def static_exit_accuracy(head_acc: Tensor, mean_layers: float) -> float:
    """Accuracy of the **static** exit that runs ``mean_layers`` layers on average: every example
    leaves at the same depth; a fractional depth m is the static policy that sends a share
    ``m - floor(m)`` of the examples to head ``floor(m) + 1`` and the rest to head ``floor(m)``,
    whose expected accuracy interpolates the two heads' accuracies linearly. ``head_acc`` is
    :func:`head_accuracies` (n_layers,); ``mean_layers`` lies in 1..n_layers."""
    n = head_acc.shape[0]
    if not 1.0 <= mean_layers <= n:
        raise ValueError(f"mean_layers={mean_layers!r}; allowed values: 1 <= mean_layers <= {n}")
    k = min(int(math.floor(mean_layers)), n - 1) if n > 1 else 1
    frac = mean_layers - k
    lower = float(head_acc[k - 1])
    upper = float(head_acc[min(k, n - 1)])
    return (1 - frac) * lower + frac * upper


@dataclass
class SeedRun:
    """One trained multi-exit network: its seed, the model, every head's test logits, the
    training history, and every head's validation logits (when the data has a validation
    split)."""

    seed: int
    model: MultiExitMLP
    logits: Tensor
    history: History
    val_logits: Tensor | None = None


def run_seeds(
    data: DigitData,
    seeds: list[int] | range,
    *,
    d: int,
    n_layers: int,
    steps: int,
    noise: float,
    lr: float = 3e-3,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> list[SeedRun]:
    """Train one :class:`MultiExitMLP` per seed (the seed fixes the initial weights, the batch
    order and the training noise; the data split is the same for all) and keep its test logits."""
    from adaedu.device import seed_everything

    runs = []
    for seed in seeds:
        seed_everything(seed)
        model = MultiExitMLP(in_features=data.x_train.shape[1], d=d, n_layers=n_layers).to(device)
        history = train_multi_exit(
            model, data, steps=steps, batch_size=batch_size, lr=lr, noise=noise, seed=seed
        )
        val = None if data.x_val is None else all_head_logits(model, data.x_val)
        runs.append(SeedRun(seed, model, all_head_logits(model, data.x_test), history, val))
    return runs


def sweep_runs(runs: list[SeedRun], labels: Tensor, policies: list[ExitPolicy]) -> Tensor:
    """(accuracy, mean layers run) of every policy on every run: shape (runs, policies, 2)."""
    return torch.stack([sweep(run.logits, labels, policies) for run in runs])
