"""What every pruning method, structured pruning and the distributed driver share, written once:

- ``prunable``: which weights are prunable, and how many a sparsity keeps.
- ``model``: running any model on a batch (the model call), the first batches of the data, the
  private copy every method scores on.
- ``loss``: the loss on a batch and its gradients (:func:`~sparsepai.core.loss.loss_grads`).
- ``registry``: the method registry; ``options``: method options and argument checks.
- ``iterative``: the one iterative pruning engine; ``train``: the one training pass.

This package imports none of ``pruning``, ``structured``, ``distributed`` or ``autosparse``: they
import it. ``sparsepai.distributed`` plugs in through two hooks instead
(:func:`~sparsepai.core.model.register_copy_hook`: gradient averaging over a process group;
:func:`~sparsepai.core.loss.register_sharded_grads`: gradients of FSDP2-sharded parameters).
Thresholds are ``sparsepai.masks.threshold``, below this package.
"""
