"""transformers' own common model tests, vendored from the transformers 5.25.0 sdist (PyPI `transformers-5.25.0.tar.gz`).

`test_modeling_common.py` and `test_configuration_common.py` are the release's `tests/` files, unmodified, under the
Apache License 2.0 (LICENSE here, and the header of each file). The sdist does not ship the three modules they import
from sibling test packages (`tests/exporters`, `tests/generation`, `tests/utils`): the stand-ins in those folders are
ours, each says what it replaces. Refresh the two files from the sdist of the installed release when upgrading
transformers: `pip download --no-deps --no-binary :all: transformers==<version>`.

This package holds mixins, not tests: pytest does not collect it (see conftest.py); the suite that runs them is
modeling_tests/test_modeling_gemma_encoder.py.
"""
