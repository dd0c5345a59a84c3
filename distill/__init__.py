"""Distillation recipe for lipforce: procedural talking faces with exact ground truth, and measures.

Modules (nothing is imported here, so ``import distill.faces`` needs no torch):

- ``distill.speech``: espeak-ng speech at 16 kHz with the synthesizer's own phoneme timing;
- ``distill.visemes``: phonemes -> per-frame mouth parameters with coarticulation;
- ``distill.faces``: identities, head motion, the face renderer, source/target pairs;
- ``distill.data``: seeded train / held-out clips and pairs;
- ``distill.metrics``: PSNR / SSIM in and out of the mouth region, mouth-gap measurement;
- ``distill.syncnet``: the SyncNet-style sync scorer (torch); ``python -m distill.make_scorer``
  trains and evaluates it.

See ``distill/README.md``.
"""
