"""Recipes built on the library: ``train`` (the one training loop: a masked model trained and
evaluated), ``sweep`` (methods x sparsities x seeds, planned, run, resumable) and ``report`` (the
table, CSV/JSON and plot of a sweep)."""
