"""A tiny "translation" task with real ambiguity: spelling numbers in English words, and BLEU.

Notebook 5.4 (beam search, Sutskever et al., 2014) needs a sequence-to-sequence task where a
source has several correct outputs of different probabilities, so that the most likely output is
not always found greedily. ``1234`` may be written

    twelve hundred thirty-four                      0.40 x ...
    one thousand two hundred thirty-four            0.35 x ...
    one thousand, two hundred thirty-four           0.25 x ...

and independently with "and" before the last two digits (p = 0.3: "... hundred and thirty-four")
and a hyphen or a space inside compound tens (0.7 / 0.3: "thirty-four" / "thirty four"). The
distribution over outputs is known exactly (:func:`variants`), so we can say how probable an
output really is. Greedy decoding of a perfect model already fails here: after "o" (one
thousand ..., 0.6 in all) it must choose between two continuations of 0.35 and 0.25, while the
single most likely spelling starts with "t" (twelve hundred ..., 0.4).

Lines read ``1234=twelve hundred thirty-four`` followed by a newline (the end of sequence); a
decoder-only LM learns them, and decoding starts after ``=``.

BLEU: K. Papineni, S. Roukos, T. Ward, W.-J. Zhu, *BLEU: a Method for Automatic Evaluation of
Machine Translation*, ACL 2002, sec. 2: the geometric mean of the corpus-level modified n-gram
precisions p_1..p_4 times the brevity penalty BP = min(1, exp(1 - r / c)).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence

ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
#: Probabilities of the three forms of a number with thousands and hundreds (1234).
FORMS = {"hundreds": 0.40, "thousand": 0.35, "thousand,": 0.25}
P_AND = 0.3  # "... hundred and thirty-four"
P_HYPHEN = 0.7  # "thirty-four" rather than "thirty four"
LOW, HIGH = 1, 9999  # the numbers of the task
#: The characters of the task (digits, '=', letters, ' ', '-', ',', newline).
ALPHABET = sorted(set("0123456789=-, \n" + "".join(ONES + TENS[2:]) + "hundredthousand"))


def below_100(n: int, joiner: str) -> str:
    """0..99 in words; compound tens joined by ``joiner`` ('-' or ' ')."""
    if not 0 <= n < 100:
        raise ValueError(f"n={n!r}; allowed values: 0..99")
    if n < 20:
        return ONES[n]
    return TENS[n // 10] + (joiner + ONES[n % 10] if n % 10 else "")


def variants(n: int) -> dict[str, float]:
    """Every correct spelling of ``n`` (1..9999) with its probability (they sum to 1)."""
    if not isinstance(n, int) or not LOW <= n <= HIGH:
        raise ValueError(f"n={n!r}; allowed values: an integer in {LOW}..{HIGH}")
    t, h, r = n // 1000, n // 100 % 10, n % 100
    out: Counter[str] = Counter()
    forms = FORMS if t and h else {"plain": 1.0}
    for (form, pf), (joiner, pj), (use_and, pa) in itertools.product(
        forms.items(), (("-", P_HYPHEN), (" ", 1 - P_HYPHEN)), ((True, P_AND), (False, 1 - P_AND))
    ):
        if form == "hundreds":
            head = below_100(n // 100, joiner) + " hundred"
        else:
            parts = ([ONES[t] + " thousand"] if t else []) + ([ONES[h] + " hundred"] if h else [])
            head = (", " if form == "thousand," else " ").join(parts)
        if r and head:
            words = head + (" and " if use_and else " ") + below_100(r, joiner)
        else:
            words = head or below_100(r, joiner)
        out[words] += pf * pj * pa
    return dict(out)


def most_likely(n: int) -> str:
    """The mode of :func:`variants` (what an exact search over a perfect model returns)."""
    v = variants(n)
    return max(v, key=v.get)


def sample_spelling(n: int, rng: random.Random) -> str:
    """One spelling of ``n`` drawn from :func:`variants`."""
    v = variants(n)
    return rng.choices(list(v), weights=list(v.values()))[0]


def split_numbers(test_size: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, test) numbers: ``test_size`` held-out numbers never seen in training."""
    if not isinstance(test_size, int) or not 1 <= test_size < HIGH - LOW:
        raise ValueError(f"test_size={test_size!r}; allowed values: 1..{HIGH - LOW - 1}")
    numbers = list(range(LOW, HIGH + 1))
    random.Random(seed).shuffle(numbers)
    return sorted(numbers[test_size:]), sorted(numbers[:test_size])


def make_text(numbers: Sequence[int], n_lines: int, seed: int = 0) -> str:
    """``n_lines`` lines ``n=spelling``, each a random number of ``numbers`` with a random
    spelling drawn from its distribution (a training stream for a decoder-only LM)."""
    if not numbers or n_lines < 1:
        raise ValueError("numbers must be non-empty and n_lines >= 1")
    rng = random.Random(seed)
    lines = [f"{n}={sample_spelling(n, rng)}" for n in rng.choices(list(numbers), k=n_lines)]
    return "\n".join(lines) + "\n"


def clipped_matches(hypothesis: Sequence[str], reference: Sequence[str], n: int) -> tuple[int, int]:
    """Papineni et al. (2002), sec. 2.1: (matches, total) of the modified n-gram precision: each
    n-gram of the hypothesis counts at most as often as it occurs in the reference."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}; allowed values: an integer >= 1")
    h = Counter(tuple(hypothesis[i : i + n]) for i in range(len(hypothesis) - n + 1))
    r = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
    return sum(min(c, r[g]) for g, c in h.items()), sum(h.values())  # Count_clip, Count


def bleu_stats(hypothesis: str, reference: str, max_n: int = 4) -> list[int]:
    """The sufficient statistics of one sentence for corpus BLEU (Papineni et al., 2002):
    ``[len(hyp), len(ref), matches_1, totals_1, ..., matches_N, totals_N]`` (whitespace words).
    Corpus BLEU is a function of their sums over sentences (:func:`bleu_from_stats`), which is what
    a bootstrap over sentences resamples."""
    if not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n={max_n!r}; allowed values: an integer >= 1")
    h, r = hypothesis.split(), reference.split()
    out = [len(h), len(r)]
    for n in range(1, max_n + 1):
        out.extend(clipped_matches(h, r, n))
    return out


def bleu_from_stats(stats: Sequence[float]) -> float:
    """Corpus BLEU in 0..100 from summed :func:`bleu_stats`: ``BP * exp(mean_n log p_n)``, with
    the brevity penalty ``BP = exp(1 - r / c)`` when the hypotheses are shorter (c <= r)."""
    if len(stats) < 4 or len(stats) % 2:
        raise ValueError(f"stats has {len(stats)} entries; allowed values: 2 + 2 * max_n")
    hyp_len, ref_len = stats[0], stats[1]
    matches, totals = stats[2::2], stats[3::2]
    if min(matches) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / len(matches)
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))  # brevity
    return 100.0 * bp * math.exp(log_p)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Papineni et al. (2002): corpus BLEU in 0..100 of whitespace-split ``hypotheses`` against
    one reference each: ``BP * exp(mean_n log p_n)`` with clipped n-gram counts, no smoothing."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError("hypotheses and references must be non-empty and of the same length")
    if not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n={max_n!r}; allowed values: an integer >= 1")
    total = [0] * (2 + 2 * max_n)
    for hyp, ref in zip(hypotheses, references, strict=True):
        total = [a + b for a, b in zip(total, bleu_stats(hyp, ref, max_n), strict=True)]
    return bleu_from_stats(total)
