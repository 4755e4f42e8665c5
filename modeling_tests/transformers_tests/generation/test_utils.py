"""Stand-in for transformers' `tests/generation/test_utils.py`, which the 5.25.0 sdist does not ship.

`test_modeling_common.py` only uses `GenerationTesterMixin` in `issubclass` checks that make a tester of a model
that can `generate` inherit the generation tests. GemmaEncoder models are encoders that cannot generate, so their
tester must not inherit it, and an empty class answers those checks the same way.
"""


class GenerationTesterMixin:
    pass
