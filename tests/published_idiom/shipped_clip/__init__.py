"""A trainer folder's own copy of OpenAI's ``clip`` package, as MaPLe's, PromptSRC's and PLOT's repos ship
one, written for tests/test_published_idiom.py (the fixture copies it into a folder as ``clip/``).

It makes the two changes those copies make: ``build_model(state_dict, design_details)`` whose
``design_details`` changes the image tower (MaPLe, PromptSRC), and a ResNet attention pool that returns
every token (PLOT). To stay small it builds on the project's ``clip``, reached through ``importlib``
because inside a trainer folder the name ``clip`` means this package.
"""
from .clip import *  # noqa: F401,F403  (OpenAI's __init__ does the same)
