"""Part 4 of the course: early exit and halting (ACT, PonderNet, Universal Transformer, PaBEE).

Import from the modules of this package; each notebook of the part shows the ones it uses.
"""
