"""nnU-Net v2 model settings without torch (:mod:`inference.nnunet.config`).

The torch half, which loads and runs a model, is :mod:`inference.predictor`; nothing in this
package imports torch or nnunetv2.
"""
