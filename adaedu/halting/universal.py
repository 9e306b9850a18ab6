"""Universal Transformer encoder with per-position ACT, a vanilla baseline, and algorithmic tasks.

M. Dehghani, S. Gouws, O. Vinyals, J. Uszkoreit, L. Kaiser, *Universal Transformers*, ICLR 2019
(arXiv:1807.03819). One transformer layer (self-attention + transition function) is applied
recurrently to all positions at once (sec. 2.1). Before every step a *coordinate embedding*
``P^t`` is added, the sum of a sinusoidal embedding of the position i and one of the step t:

    P^t_{i,2j}   = sin(i / 10000^{2j/d}) + sin(t / 10000^{2j/d})
    P^t_{i,2j+1} = cos(i / 10000^{2j/d}) + cos(t / 10000^{2j/d})
    A^t = LayerNorm((H^{t-1} + P^t) + MultiHeadSelfAttention(H^{t-1} + P^t))
    H^t = LayerNorm(A^t + Transition(A^t))

Dynamic halting (sec. 2.2) is Adaptive Computation Time (A. Graves, *Adaptive Computation Time
for Recurrent Neural Networks*, arXiv:1603.08983, 2016, eq. 3-14) run **separately for every
position**: each position has its own halting probability, halts once the running sum would pass
``1 - eps``, spends its remainder R on the last step, and from then on its state is copied through
unchanged while the other positions keep updating (and keep attending to it). The output of a
position is the ACT mean of its states, weighted by the halting probabilities; the ponder cost
``N + R`` (Graves eq. 11) is added to the loss.

The encoder here is bidirectional (no causal mask): every position attends to every other one.
Shapes: B batch, T positions, D = d_model, H heads, Dh = D / H.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Special tokens of the algorithmic tasks; the symbols are FIRST_SYMBOL, FIRST_SYMBOL + 1, ...
BOS, EOS, FIRST_SYMBOL = 0, 1, 2
IGNORE = -100  # target of the BOS/EOS markers: not scored
TASKS = ("copy", "reverse")
HALT_FROM = ("updated", "input")  # the state the halting unit reads (see UniversalTransformer)


def sinusoid(values: Tensor, d_model: int) -> Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017, sec. 3.5) of ``values`` (any shape) -> (..., D):
    feature 2j is ``sin(v / 10000^{2j/D})``, feature 2j+1 is ``cos(v / 10000^{2j/D})``."""
    if d_model % 2:
        raise ValueError(f"d_model={d_model}; allowed values: an even number")
    j = torch.arange(d_model // 2, device=values.device, dtype=torch.float32)
    angles = values.float()[..., None] / 10000.0 ** (2 * j / d_model)  # v / 10000^{2j/d}
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # interleave sin, cos


def coordinate_embedding(positions: Tensor, step: int, d_model: int) -> Tensor:
    """P^t of Dehghani et al. (sec. 2.1): position embedding + time-step embedding, (B, T, D)."""
    if step < 0:
        raise ValueError(f"step={step}; allowed values: an integer >= 0")
    time = torch.full((1, 1), float(step), device=positions.device)
    return sinusoid(positions, d_model) + sinusoid(time, d_model)  # sin(i/..) + sin(t/..)


class EncoderLayer(nn.Module):
    """One post-LayerNorm transformer encoder layer, as in the UT paper (sec. 2.1): bidirectional
    multi-head self-attention, then a ReLU transition function, each with a residual connection."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads}; allowed values: a divisor of d_model={d_model}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.transition = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model)
        )

    def attention(self, x: Tensor) -> Tensor:
        """MultiHeadSelfAttention(x), no mask: softmax(Q K^T / sqrt(Dh)) V for every head."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).softmax(dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, d))

    def forward(self, x: Tensor) -> Tensor:
        a = self.norm1(x + self.attention(x))  # A^t = LayerNorm(x + MHSA(x)), x = H^{t-1} + P^t
        return self.norm2(a + self.transition(a))  # H^t = LayerNorm(A^t + Transition(A^t))


@dataclass
class PonderInfo:
    """What ACT did in one forward pass. ``steps`` (B, T): layer updates N per position (the
    step it halted at); ``remainders`` (B, T): R; ``ponder_cost``: mean of N + R (Graves eq. 11,
    only R carries a gradient); ``loop_steps``: how many times the shared layer actually ran."""

    steps: Tensor
    remainders: Tensor
    ponder_cost: Tensor
    loop_steps: int


class UniversalTransformer(nn.Module):
    """UT encoder: one shared :class:`EncoderLayer` applied up to ``max_steps`` times, with the
    coordinate embedding added at every step and per-position ACT halting (``act=True``) or a
    fixed number of ``max_steps`` steps (``act=False``). ``threshold`` is 1 - eps.

    ``halt_from`` says which state the halting unit reads at step n: ``"updated"`` (the default)
    the state *after* the step, ``p^n = sigmoid(W h^n + b)`` as in Graves (2016, eq. 6, where
    p^n is computed from the updated state s^n); ``"input"`` the state *before* it,
    ``sigmoid(W (h^{n-1} + P^n) + b)``, as in the authors' tensor2tensor code
    (``universal_transformer_util.adaptive_computation_time``: ``p`` is a dense layer of the
    step's input, the layer is applied afterwards). The paper's text does not say."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        n_heads: int = 4,
        d_ff: int = 128,
        max_steps: int = 8,
        act: bool = True,
        threshold: float = 0.99,
        halting_bias: float = 1.0,
        halt_from: str = "updated",
    ):
        super().__init__()
        if halt_from not in HALT_FROM:
            raise ValueError(f"halt_from={halt_from!r}; allowed values: {', '.join(HALT_FROM)}")
        self.halt_from = halt_from
        if max_steps < 1:
            raise ValueError(f"max_steps={max_steps}; allowed values: an integer >= 1")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold={threshold}; allowed values: 0 < threshold <= 1")
        self.d_model, self.max_steps, self.act, self.threshold = d_model, max_steps, act, threshold
        self.embed = nn.Embedding(vocab_size, d_model)
        self.layer = EncoderLayer(d_model, n_heads, d_ff)  # the ONE layer, shared by all steps
        self.halt = nn.Linear(d_model, 1)  # halting unit: p^t = sigmoid(W h + b), Graves eq. 6
        nn.init.constant_(self.halt.bias, halting_bias)  # Graves sec. 3: b = 1 at the start
        self.head = nn.Linear(d_model, vocab_size)
        self.last_ponder: PonderInfo | None = None

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """Logits (B, T, vocab) for ``tokens`` (B, T) at ``positions`` (B, T); the ACT statistics
        of the pass are left in ``self.last_ponder``."""
        h = self.embed(tokens)
        if not self.act:
            for t in range(self.max_steps):
                h = self.layer(h + coordinate_embedding(positions, t, self.d_model))
            ones = torch.full(tokens.shape, float(self.max_steps), device=tokens.device)
            zero = torch.zeros(tokens.shape, device=tokens.device)
            self.last_ponder = PonderInfo(ones, zero, ones.mean(), self.max_steps)
            return self.head(h)
        return self.head(self.act_loop(h, positions))

    def act_loop(self, h: Tensor, positions: Tensor) -> Tensor:
        """Per-position ACT (Graves 2016, eq. 3-14; Dehghani et al. sec. 2.2) around the shared
        layer. Returns the ACT-weighted output states (B, T, D)."""
        b, t, _ = h.shape
        halting = h.new_zeros(b, t)  # sum of p^1..p^n so far per position; 1 once halted
        remainders = h.new_zeros(b, t)  # R = 1 - sum_{n < N} p^n, set when a position halts
        steps = h.new_zeros(b, t)  # N: layer updates per position
        output = torch.zeros_like(h)  # y = sum_n w^n h^n
        loop_steps = 0
        for step in range(self.max_steps):
            running = halting < 1.0  # positions that have not halted yet
            if not running.any():
                break
            loop_steps += 1
            x = h + coordinate_embedding(positions, step, self.d_model)
            new = self.layer(x)
            read = new if self.halt_from == "updated" else x  # Graves eq. 6 / tensor2tensor
            p = torch.sigmoid(self.halt(read)).squeeze(-1)  # p^n per position (eq. 6)
            last = step == self.max_steps - 1  # the step cap: every running position halts
            weight, halting, halts_now = halting_step(halting, p, 0.0 if last else self.threshold)
            remainders = torch.where(halts_now, weight, remainders)  # R is the last weight
            steps = steps + running.float()  # N counts the updates actually made
            output = output + weight[..., None] * new  # eq. 10: y = sum_n w^n h^n
            h = torch.where(running[..., None], new, h)  # halted positions are copied through
        ponder = (steps + remainders).mean()  # eq. 11: rho = N + R (N has no gradient)
        self.last_ponder = PonderInfo(steps, remainders.detach(), ponder, loop_steps)
        return output


def halting_step(halting: Tensor, p: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """One ACT step for every position (Graves 2016, eq. 7-9), from ``halting`` (the running sum
    of halting probabilities, 1 for a position that has already halted) and this step's ``p``.

    A running position halts now if ``halting + p > threshold`` (threshold = 1 - eps, eq. 7); its
    weight is then the remainder ``R = 1 - halting`` (eq. 8-9); a position that keeps running gets
    weight ``p``; a halted one gets 0. Returns ``weight, new_halting, halts_now`` (all like ``p``).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold}; allowed values: 0 <= threshold <= 1")
    running = halting < 1.0
    halts_now = running & (halting + p > threshold)  # eq. 7: the first n with sum p > 1 - eps
    keeps = running & ~halts_now
    remainder = 1.0 - halting  # eq. 8: R = 1 - sum_{n < N} p^n
    weight = torch.where(halts_now, remainder, torch.where(keeps, p, torch.zeros_like(p)))
    new_halting = torch.where(halts_now, torch.ones_like(halting), halting + p * keeps)
    return weight, new_halting, halts_now


class VanillaEncoder(nn.Module):
    """The baseline: ``n_layers`` encoder layers with their own weights (untied), fixed depth,
    the sinusoidal position embedding added once at the input (Vaswani et al. 2017)."""

    def __init__(
        self, vocab_size: int, d_model: int = 64, n_heads: int = 4, d_ff: int = 128, n_layers=4
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers={n_layers}; allowed values: an integer >= 1")
        self.d_model, self.n_layers = d_model, n_layers
        self.embed = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.head = nn.Linear(d_model, vocab_size)
        self.last_ponder: PonderInfo | None = None

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        h = self.embed(tokens) + sinusoid(positions, self.d_model)
        for layer in self.layers:
            h = layer(h)
        n = torch.full(tokens.shape, float(self.n_layers), device=tokens.device)
        self.last_ponder = PonderInfo(n, torch.zeros_like(n), n.mean(), self.n_layers)
        return self.head(h)


# --- the algorithmic tasks -------------------------------------------------------------------


def algorithmic_batch(
    task: str,
    batch_size: int,
    length: int,
    n_symbols: int,
    generator: torch.Generator,
    max_position: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """A batch of ``copy`` or ``reverse`` examples: ``tokens, positions, targets``, each (B, L+2).

    Tokens are ``BOS x_1 .. x_L EOS`` with random symbols; the target at the slot of x_i is x_i
    (copy) or x_{L+1-i} (reverse); BOS and EOS are not scored (IGNORE). Positions start at a random
    offset in ``0 .. max_position - (L+2)`` per example (0 when ``max_position`` is 0): the UT
    paper trains its algorithmic tasks with randomised position offsets, so that every absolute
    position is seen in training even when the sequences are short.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}; allowed values: {', '.join(TASKS)}")
    if length < 1 or n_symbols < 2 or batch_size < 1:
        raise ValueError(
            f"length={length}, n_symbols={n_symbols}, batch_size={batch_size}; allowed values: "
            "length >= 1, n_symbols >= 2, batch_size >= 1"
        )
    if max_position and max_position < length + 2:
        raise ValueError(f"max_position={max_position}; allowed values: 0 or >= length + 2")
    x = torch.randint(n_symbols, (batch_size, length), generator=generator) + FIRST_SYMBOL
    marker = torch.full((batch_size, 1), BOS)
    tokens = torch.cat((marker, x, marker + EOS - BOS), dim=1)
    y = x if task == "copy" else x.flip(1)
    ignore = torch.full((batch_size, 1), IGNORE)
    targets = torch.cat((ignore, y, ignore), dim=1)
    span = max(max_position - (length + 2), 0) + 1
    offset = torch.randint(span, (batch_size, 1), generator=generator)
    positions = offset + torch.arange(length + 2)
    return tokens, positions, targets


def sequence_loss(
    model: nn.Module, batch: tuple[Tensor, Tensor, Tensor], ponder_weight: float = 0.0
) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy over the scored slots + ``ponder_weight`` * ponder cost (Graves eq. 12)."""
    tokens, positions, targets = batch
    logits = model(tokens, positions)
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
    ponder = model.last_ponder.ponder_cost
    loss = ce + ponder_weight * ponder if ponder_weight else ce
    return loss, {"ce": ce.item(), "ponder": float(ponder.detach())}


def train_algorithmic(
    model: nn.Module,
    task: str,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    train_lengths: tuple[int, int] = (1, 12),
    n_symbols: int = 8,
    max_position: int = 64,
    ponder_weight: float = 0.01,
    seed: int = 0,
):
    """Train on lengths drawn uniformly from ``train_lengths`` (one length per batch) with Adam;
    returns the :class:`adaedu.train.History`."""
    from adaedu.train import train

    lo, hi = train_lengths
    if not 1 <= lo <= hi:
        raise ValueError(f"train_lengths={train_lengths}; allowed values: 1 <= min <= max")
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device

    def batch(_step: int) -> tuple[Tensor, Tensor, Tensor]:
        length = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        b = algorithmic_batch(task, batch_size, length, n_symbols, gen, max_position)
        return tuple(t.to(device) for t in b)

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def loss_fn(m: nn.Module, b: tuple) -> tuple[Tensor, dict[str, float]]:
        return sequence_loss(m, b, ponder_weight)

    return train(
        model, loss_fn, batch, steps=steps, optimizer=optimizer, log_every=10, progress=False
    )


@dataclass
class TrainToBar:
    """What :func:`train_to_bar` did: the training ``history``, the held-out checks
    ``checks`` (a list of ``(step, in-range char accuracy)``), the ``steps`` trained, whether the
    ``bar`` was ``reached``, and the training ``seconds``."""

    history: object
    checks: list[tuple[int, float]]
    steps: int
    reached: bool
    bar: float
    seconds: float

    @property
    def final_accuracy(self) -> float:
        return self.checks[-1][1] if self.checks else float("nan")


def train_to_bar(
    model: nn.Module,
    task: str,
    *,
    bar: float = 0.98,
    check_every: int = 250,
    max_steps: int,
    val_lengths: list[int] | None = None,
    n_val: int = 128,
    val_seed: int = 2,
    batch_size: int = 64,
    lr: float = 1e-3,
    train_lengths: tuple[int, int] = (1, 12),
    n_symbols: int = 8,
    max_position: int = 64,
    ponder_weight: float = 0.01,
    seed: int = 0,
) -> TrainToBar:
    """Train like :func:`train_algorithmic`, but check the held-out **in-range** character
    accuracy every ``check_every`` steps (fresh strings of ``val_lengths``, default 2..max
    training length, drawn from ``val_seed``, not the test seed) and stop at the first check that
    reaches ``bar``, or after ``max_steps``. The validation strings are a separate split: the
    test lengths are never looked at during training."""
    from adaedu.train import train

    if not 0.0 < bar <= 1.0:
        raise ValueError(f"bar={bar}; allowed values: 0 < bar <= 1")
    if check_every < 1 or max_steps < check_every:
        raise ValueError(
            f"check_every={check_every}, max_steps={max_steps}; allowed values: "
            "1 <= check_every <= max_steps"
        )
    lo, hi = train_lengths
    if not 1 <= lo <= hi:
        raise ValueError(f"train_lengths={train_lengths}; allowed values: 1 <= min <= max")
    lengths = val_lengths or list(range(max(lo, 2), hi + 1))
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    checks: list[tuple[int, float]] = []

    def batch(_step: int) -> tuple[Tensor, Tensor, Tensor]:
        length = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        b = algorithmic_batch(task, batch_size, length, n_symbols, gen, max_position)
        return tuple(t.to(device) for t in b)

    def stop(history) -> bool:
        step = history.steps[-1]
        if step % check_every and step != max_steps:
            return False
        res = evaluate_lengths(model, task, lengths, n_val, n_symbols, seed=val_seed)
        checks.append((step, sum(r.char_acc for r in res) / len(res)))
        return checks[-1][1] >= bar

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = train(
        model,
        lambda m, b: sequence_loss(m, b, ponder_weight),
        batch,
        steps=max_steps,
        optimizer=optimizer,
        log_every=10 if check_every % 10 == 0 else 1,
        stop=stop,
        progress=False,
    )
    done = history.steps[-1] if history.steps else 0
    reached = bool(checks) and checks[-1][1] >= bar
    return TrainToBar(history, checks, done, reached, bar, history.seconds)


def sequence_accuracy(logits: Tensor, targets: Tensor) -> tuple[float, float]:
    """``(char_acc, seq_acc)``: the fraction of scored slots predicted right, and the fraction of
    sequences with every scored slot right. Slots whose target is IGNORE are not scored."""
    if logits.dim() != 3 or targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets shape {tuple(targets.shape)}, logits shape {tuple(logits.shape)}; "
            "allowed: targets (B, T) and logits (B, T, V)"
        )
    scored = targets != IGNORE
    right = (logits.argmax(-1) == targets) | ~scored
    return right[scored].float().mean().item(), right.all(dim=1).float().mean().item()


@dataclass
class LengthResult:
    """Accuracy and compute at one test length: ``char_acc`` (fraction of symbols right),
    ``seq_acc`` (fraction of sequences entirely right), ``mean_steps`` (layer updates per
    position), ``loop_steps`` (times the layer ran), ``steps`` (B, L+2) per-position updates."""

    length: int
    char_acc: float
    seq_acc: float
    mean_steps: float
    loop_steps: int
    steps: Tensor


@torch.no_grad()
def evaluate_lengths(
    model: nn.Module,
    task: str,
    lengths: list[int],
    n_examples: int = 256,
    n_symbols: int = 8,
    seed: int = 1,
) -> list[LengthResult]:
    """Test ``model`` on fresh sequences of each length, positions starting at 0."""
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results = []
    for length in lengths:
        tokens, positions, targets = algorithmic_batch(task, n_examples, length, n_symbols, gen)
        logits = model(tokens.to(device), positions.to(device)).cpu()
        char_acc, seq_acc = sequence_accuracy(logits, targets)
        info = model.last_ponder
        results.append(
            LengthResult(
                length=length,
                char_acc=char_acc,
                seq_acc=seq_acc,
                mean_steps=info.steps.cpu()[:, 1:-1].mean().item(),
                loop_steps=info.loop_steps,
                steps=info.steps.cpu(),
            )
        )
    model.train(was_training)
    return results


def set_threshold(model: UniversalTransformer, threshold: float) -> None:
    """Change the halting threshold 1 - eps of a trained UT (for the explorer)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold}; allowed values: 0 < threshold <= 1")
    model.threshold = threshold
