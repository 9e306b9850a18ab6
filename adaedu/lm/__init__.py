"""A tiny decoder-only language model, the base of the sparse-MoE and decoding chapters.

- :mod:`adaedu.lm.norm`        RMSNorm (Zhang & Sennrich, 2019);
- :mod:`adaedu.lm.rope`        rotary position embeddings (Su et al., 2021);
- :mod:`adaedu.lm.attention`   causal multi-head self-attention and the key-value cache;
- :mod:`adaedu.lm.ffn`         the pluggable FFN protocol, dense MLP and SwiGLU (Shazeer, 2020);
- :mod:`adaedu.lm.model`       :class:`TinyLMConfig`, :class:`TinyLM`, :class:`LMOutput`;
- :mod:`adaedu.lm.tokenizers`  character and byte-pair-encoding tokenizers;
- :mod:`adaedu.lm.training`    the one training loop and validation of every LM notebook
  (``train_lm``, ``evaluate_lm``, with routing statistics for MoE layers).

The text it is trained on comes from :mod:`adaedu.data` (``text_corpus``, ``char_tokenizer``);
generation with the cache is :func:`adaedu.decoding.sampling.sample`.
"""

from adaedu.lm.attention import CausalSelfAttention, KVCache, causal_mask
from adaedu.lm.ffn import FFN_KINDS, MLP, SwiGLU, default_d_ff, split_ffn_output
from adaedu.lm.model import Block, FFNFactory, LMOutput, TinyLM, TinyLMConfig, lm_loss
from adaedu.lm.norm import RMSNorm
from adaedu.lm.rope import RotaryEmbedding, apply_rotary, rotary_angles
from adaedu.lm.tokenizers import BPETokenizer, CharTokenizer, pretokenize
from adaedu.lm.training import LMEval, LMRun, evaluate_lm, train_lm, validation_batches

__all__ = [
    "FFN_KINDS",
    "MLP",
    "BPETokenizer",
    "Block",
    "CausalSelfAttention",
    "CharTokenizer",
    "FFNFactory",
    "KVCache",
    "LMEval",
    "LMOutput",
    "LMRun",
    "RMSNorm",
    "RotaryEmbedding",
    "SwiGLU",
    "TinyLM",
    "TinyLMConfig",
    "apply_rotary",
    "causal_mask",
    "default_d_ff",
    "evaluate_lm",
    "lm_loss",
    "pretokenize",
    "rotary_angles",
    "split_ffn_output",
    "train_lm",
    "validation_batches",
]
