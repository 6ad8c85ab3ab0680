"""Trainer methods that Dassl forks add and published trainer files call, so those files run unchanged.

``prograd_backward_and_update`` (BeierZhu/Prompt-align's ``Dassl.ProGrad.pytorch``, also shipped by
htyao89/KgCoOp): ProGrad's gradient projection. Read from the fork's ``dassl/engine/trainer.py``;
the other fork-only methods there (``output_test``) are called by none of the published trainers
(KgCoOp, ProGrad, MaPLe, PromptSRC, PLOT), so they are not provided.
"""
import torch


def project_gradient(grad_a, grad_b, lambda_):
    """ProGrad's rule for one parameter: remove ``lambda_`` of grad_a's component along grad_b when
    the two conflict (negative dot product); keep grad_a otherwise (also when either is zero, where
    the fork's unit vector is NaN and its comparison false)."""
    a, b = grad_a.flatten(), grad_b.flatten()
    if torch.dot(a, b) < 0:
        unit = b / torch.linalg.norm(b)
        return grad_a - lambda_ * torch.dot(a, unit) * unit.view_as(grad_a)
    return grad_a


class DasslForkMethods:
    """Mixed into ``TrainerBase``: uses its ``_models`` / ``_optims`` / ``detect_anomaly``."""

    def prograd_backward_and_update(self, loss_a, loss_b, lambda_=1, names=None):
        """Step on ``loss_a``'s gradient, minus its part against ``loss_b``'s where the two conflict.

        Per parameter, with g_a, g_b the gradients of ``loss_a`` (the task loss, which has to fall)
        and ``loss_b`` (ProGrad's KL to zero-shot CLIP, which need not) and u = g_b / |g_b|: when
        g_a . u < 0 the update uses g_a - lambda_ * (g_a . u) u, else g_a. ``loss_b`` is
        backpropagated first with the graph kept, as in the fork.

        Differs from the fork only where the fork fails: a parameter without a gradient is
        skipped (the fork raises on ``None.clone()``), and with several models each parameter is
        paired with its own ``loss_b`` gradient (the fork pairs every model's parameters with the
        first model's gradients).
        """
        names = self.get_model_names(names)
        self.model_zero_grad(names)
        self.detect_anomaly(loss_b)
        loss_b.backward(retain_graph=True)
        b_grads = {name: [None if p.grad is None else p.grad.clone() for p in self._models[name].parameters()]
                   for name in names}
        self.model_zero_grad(names)
        self.detect_anomaly(loss_a)
        loss_a.backward()
        for name in names:
            for p, b_grad in zip(self._models[name].parameters(), b_grads[name]):
                if p.grad is None or b_grad is None:
                    continue
                p.grad = project_gradient(p.grad, b_grad, lambda_)
        self.model_update(names)
