# The vendored files define mixins and helpers; the tests built from them live in test_modeling_gemma_encoder.py.
collect_ignore_glob = ["*.py"]
