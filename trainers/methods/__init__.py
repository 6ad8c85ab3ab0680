"""The math of the comparison methods as pure functions on tensors (no trainer, no config).

One module per method: ``prompt_ensemble`` (CoOp's ZeroshotCLIP2 and Tip-Adapter's classifier),
``linear_probe`` (CoOp's lpclip protocol), ``clip_adapter`` (CLIP-Adapter's residual MLP) and
``tip_adapter`` (Tip-Adapter's cache model and its alpha/beta search). The trainers in
``trainers/`` wire them to CLIP and the feature cache; the tests check them on their own.
"""
