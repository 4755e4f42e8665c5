"""A character-level tokenizer (printable ASCII + Gemma's special tokens) for tests whose behaviour does not depend
on Gemma's real 262k-token vocabulary: distinct texts stay distinct, and saving / loading it takes milliseconds
instead of the tens of seconds the real tokenizer.json costs on a loaded machine.
"""

from tokenizers import Tokenizer, models, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def char_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """`<bos> text` for one text and `<bos> text <eos> text_pair` for a pair, as `prepare_tokenizer` sets up Gemma's."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + [chr(c) for c in range(32, 127)])}
    # BPE without merges splits every text into single characters.
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <eos> $B", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", model_max_length=model_max_length,
    )
