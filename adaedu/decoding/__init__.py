"""Part 5 of the course: adaptive computation for black-box models. Import from the modules:

- :mod:`adaedu.decoding.sampling`     temperature, top-k and nucleus sampling with the KV cache;
- :mod:`adaedu.decoding.speculative`  speculative sampling, exactness test, online distillation (5.2);
- :mod:`adaedu.decoding.ngram`        count-based n-gram models: exact toy targets, lookup drafts (5.2);
- :mod:`adaedu.decoding.contrastive`  contrastive decoding (5.1);
- :mod:`adaedu.decoding.beam`         beam search with length normalisation (5.4);
- :mod:`adaedu.decoding.spelling`     the number-spelling task and BLEU (5.4);
- :mod:`adaedu.decoding.cascade`      FrugalGPT-style cascades with learned scorers (5.3);
- :mod:`adaedu.decoding.experiments`  the notebooks' experiment helpers.
"""
