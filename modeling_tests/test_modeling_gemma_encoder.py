"""transformers' own common model and config tests (ModelTesterMixin, ConfigTester) over every GemmaEncoder class,
set up the way transformers tests its in-tree encoders (tests/models/modernbert/test_modeling_modernbert.py).

The mixins come from the installed release's tests, vendored in modeling_tests/transformers_tests (see its
__init__.py). Behaviour the mixins cannot know about (packed execution, poolers, ranking losses) is tested in the
other files of this suite.
"""

import unittest
from unittest.mock import patch

import torch
from transformers.models.auto import modeling_auto
from transformers.testing_utils import require_torch, torch_device
from transformers_tests.test_configuration_common import ConfigTester
from transformers_tests.test_modeling_common import ModelTesterMixin, ids_tensor, random_attention_mask

from gemma_encoder_hf import (
    GemmaEncoderConfig,
    GemmaEncoderForMaskedLM,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderModel,
)

# ModelTesterMixin learns which class is a base model, a sequence classifier or a masked LM from transformers' static
# `*_MAPPING_NAMES` tables (to skip base models in training tests, to build labels, ...), which `AutoModel.register`
# does not fill. In-tree models are listed there; ours are added for the duration of the tests. The ranker has no
# Auto task of its own (AutoModelForSequenceClassification loads it as a one-label classifier), so its labels are made
# in `_prepare_for_class`.
TASK_TABLES = {
    "MODEL_MAPPING_NAMES": GemmaEncoderModel,
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": GemmaEncoderForSequenceClassification,
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES": GemmaEncoderForMaskedLM,
}


class GemmaEncoderModelTester:
    def __init__(
        self,
        parent,
        batch_size=13,
        seq_length=7,
        is_training=True,
        use_input_mask=True,
        use_labels=True,
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=37,
        sliding_window=4,
        max_position_embeddings=64,
        num_labels=3,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = is_training
        self.use_input_mask = use_input_mask
        self.use_labels = use_labels
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.intermediate_size = intermediate_size
        self.sliding_window = sliding_window
        self.max_position_embeddings = max_position_embeddings
        self.num_labels = num_labels

    def get_config(self) -> GemmaEncoderConfig:
        # One sliding and one full layer, a window that matters at seq_length 7; the pointwise ranking loss takes any
        # batch size (the listwise default needs whole groups of ranking_group_size).
        return GemmaEncoderConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            query_pre_attn_scalar=self.head_dim,
            intermediate_size=self.intermediate_size,
            sliding_window=self.sliding_window,
            layer_types=["sliding_attention", "full_attention"],
            max_position_embeddings=self.max_position_embeddings,
            ranking_loss="pointwise",
            pad_token_id=0,
        )

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        input_mask = random_attention_mask([self.batch_size, self.seq_length]) if self.use_input_mask else None
        sequence_labels = ids_tensor([self.batch_size], self.num_labels) if self.use_labels else None
        return self.get_config(), input_ids, input_mask, sequence_labels

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, input_mask, _ = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": input_mask}

    def create_and_check_model(self, config, input_ids, input_mask, sequence_labels):
        model = GemmaEncoderModel(config).to(torch_device).eval()
        result = model(input_ids, attention_mask=input_mask)
        self.parent.assertEqual(result.last_hidden_state.shape, (self.batch_size, self.seq_length, self.hidden_size))
        self.parent.assertEqual(result.pooler_output.shape, (self.batch_size, self.hidden_size))

    def create_and_check_for_sequence_classification(self, config, input_ids, input_mask, sequence_labels):
        config.num_labels = self.num_labels
        model = GemmaEncoderForSequenceClassification(config).to(torch_device).eval()
        result = model(input_ids, attention_mask=input_mask, labels=sequence_labels)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.num_labels))
        self.parent.assertEqual(result.loss.shape, ())

    def create_and_check_for_ranking(self, config, input_ids, input_mask, sequence_labels):
        model = GemmaEncoderForRanking(config).to(torch_device).eval()
        relevance = (sequence_labels == 0).float()
        result = model(input_ids, attention_mask=input_mask, labels=relevance)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, 1))
        self.parent.assertEqual(result.loss.shape, ())

    def create_and_check_for_masked_lm(self, config, input_ids, input_mask, sequence_labels):
        model = GemmaEncoderForMaskedLM(config).to(torch_device).eval()
        result = model(input_ids, attention_mask=input_mask)
        self.parent.assertEqual(result.logits.shape, (self.batch_size, self.seq_length, self.vocab_size))


@require_torch
class GemmaEncoderModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (
        GemmaEncoderModel,
        GemmaEncoderForSequenceClassification,
        GemmaEncoderForRanking,
        GemmaEncoderForMaskedLM,
    )
    # The exporter tests of ModelTesterMixin are not in the sdist (see transformers_tests/exporters); torch.export is
    # tested below.
    test_torch_exportable = True

    @classmethod
    def setUpClass(cls):
        cls._tables = [
            patch.dict(getattr(modeling_auto, table), {"gemma_encoder": model_class.__name__})
            for table, model_class in TASK_TABLES.items()
        ]
        for table in cls._tables:
            table.start()

    @classmethod
    def tearDownClass(cls):
        for table in cls._tables:
            table.stop()

    def setUp(self):
        self.model_tester = GemmaEncoderModelTester(self)
        # hidden_size=37 as transformers' own testers use: a value no head count divides.
        self.config_tester = ConfigTester(self, config_class=GemmaEncoderConfig, hidden_size=37)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is GemmaEncoderForRanking:
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, device=torch_device)
        if "labels" in inputs_dict and model_class is GemmaEncoderForMaskedLM:
            # Masked next-token prediction (the default objective) predicts a token from the one before it: the first
            # token of a text (and a token after a hole in the random masks) has no prediction, like an unmasked
            # <bos>, so it carries no label.
            real = inputs_dict["attention_mask"].bool()
            predictable = real & torch.nn.functional.pad(real[:, :-1], (1, 0), value=False)
            inputs_dict["labels"] = inputs_dict["labels"].masked_fill(~predictable, -100)
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    def test_for_sequence_classification(self):
        self.model_tester.create_and_check_for_sequence_classification(*self.model_tester.prepare_config_and_inputs())

    def test_for_ranking(self):
        self.model_tester.create_and_check_for_ranking(*self.model_tester.prepare_config_and_inputs())

    def test_for_masked_lm(self):
        self.model_tester.create_and_check_for_masked_lm(*self.model_tester.prepare_config_and_inputs())

    # ModelTesterMixin's torch.export tests live in transformers' tests/exporters, which the sdist does not ship.
    # These export every class on the padded path (packing reads the mask's values, which a graph cannot depend on;
    # under export the model takes the padded path by itself) and compare the exported program with eager.

    def _export_and_compare(self, dynamic: bool):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        # Contiguous (left-padded) masks: the inputs a tokenizer makes, which "auto" would run packed in eager.
        lengths = torch.randint(1, self.model_tester.seq_length + 1, (self.model_tester.batch_size,))
        inputs["attention_mask"] = (
            torch.arange(self.model_tester.seq_length)[None, :] >= self.model_tester.seq_length - lengths[:, None]
        ).long()
        other_shape = {
            "input_ids": ids_tensor([3, 5], self.model_tester.vocab_size),
            "attention_mask": torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]),
        }
        for model_class in self.all_model_classes:
            model = model_class(config).to(torch_device).eval()
            dynamic_shapes = None
            if dynamic:
                dims = {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
                dynamic_shapes = {"input_ids": dims, "attention_mask": dims}
            with torch.no_grad():
                program = torch.export.export(model, args=(), kwargs=inputs, dynamic_shapes=dynamic_shapes)
                for batch in [inputs, other_shape] if dynamic else [inputs]:
                    expected, actual = model(**batch), program.module()(**batch)
                    name = "last_hidden_state" if model_class is GemmaEncoderModel else "logits"
                    torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-5, msg=model_class)

    def test_torch_export_static_shapes(self):
        self._export_and_compare(dynamic=False)

    def test_torch_export_dynamic_shapes(self):
        self._export_and_compare(dynamic=True)


class GemmaEncoderRecurrentModelTester(GemmaEncoderModelTester):
    """A RecurrentGemma-style config: a recurrent (RG-LRU) layer and a local-attention layer, biased MLP and attention
    output, partial RoPE, bidirectional recurrence with a learned combination gate and separate reverse weights."""

    def get_config(self) -> GemmaEncoderConfig:
        config = super().get_config()
        config.layer_types = ["linear_attention", "sliding_attention"]
        for name, value in dict(
            lru_width=16, mlp_bias=True, attention_output_bias=True, rope_rotary_dim=4, use_sandwich_norms=False,
            recurrence_combine="gate", recurrence_reverse_weights="separate",
        ).items():  # fmt: skip
            setattr(config, name, value)
        return GemmaEncoderConfig.from_dict(config.to_dict())


@require_torch
class GemmaEncoderRecurrentModelTest(GemmaEncoderModelTest):
    def setUp(self):
        super().setUp()
        self.model_tester = GemmaEncoderRecurrentModelTester(self)

    def test_attention_outputs(self):
        """Attention probabilities come from the attention layers only (the recurrent layer has none), as transformers'
        RecurrentGemma returns them; the mixin's version expects one per layer."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        config._attn_implementation = "eager"
        for model_class in self.all_model_classes:
            model = model_class(config).to(torch_device).eval()
            with torch.no_grad():
                attentions = model(**inputs, output_attentions=True).attentions
            batch, seq = inputs["input_ids"].shape
            self.assertEqual(len(attentions), config.layer_types.count("sliding_attention"))
            self.assertEqual(attentions[0].shape, (batch, config.num_attention_heads, seq, seq))
