"""Part 5 of the course: adaptive computation for black-box models (speculative sampling,
contrastive decoding, beam search, cascades of models).

Import from the modules of this package; each notebook of the part shows the ones it uses.
"""
