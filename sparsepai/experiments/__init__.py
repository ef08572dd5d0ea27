"""The lab: what the project's benchmarks and the ``sparsepai`` command line run, outside the
stable API (``sparsepai.__all__``) and free to change.

- ``train``: training and evaluating a masked network (:func:`~sparsepai.experiments.train.train`,
  over the one training pass ``sparsepai.core.train.train_pass``).
- ``sweep``: methods x sparsities x seeds, planned, run, resumable; ``report``: its table,
  CSV/JSON and plot; ``slim_line``: the demo's dense-against-slim line.
- ``data``: datasets by name (digits embedded, MNIST, CIFAR, TinyImageNet from files).
- ``models``: the architectures of the pruning-at-initialization literature, by name.
"""
