# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""The training and evaluation harness: data readers, Trainer fine-tuning, the adaptation stage, evaluation and the
`gemma-encoder` command line. It needs the `train` extra (datasets, scikit-learn, ranx, ...); the model code and the
integrations do not.
"""
