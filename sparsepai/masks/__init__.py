"""Masks: thresholding scores into keep-masks (``threshold``)."""
