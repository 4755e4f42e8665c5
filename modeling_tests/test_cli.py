"""The `gemma-encoder` command's error contract: `gemma-encoder <cmd>: error: ...` on stderr, exit status 2, no
traceback, and the flag named when the error is about one."""

import pytest

from gemma_encoder_hf.harness.cli import build_parser, error_message, main
from gemma_encoder_hf.harness.errors import InvalidArgumentError


def test_set_without_equals_is_reported_like_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "embedded", "out", "--set", "pooling"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "gemma-encoder convert: error: argument --set: expected KEY=VALUE (e.g. pooling=mean), got 'pooling'" in err


def test_set_values_are_parsed_as_json_when_they_parse():
    args = build_parser().parse_args(["convert", "src", "out", "--set", "pooling_k=4", "--set", "pooling=first",
                                      "--set", "classifier_hidden_size=null"])
    assert args.set == [("pooling_k", 4), ("pooling", "first"), ("classifier_hidden_size", None)]


def test_a_bad_config_value_is_an_error_line_not_a_traceback(tiny_decoder_dirs, tmp_path, capsys):
    code = main(["convert", str(tiny_decoder_dirs["gemma3"]), str(tmp_path / "out"), "--task", "classification",
                 "--set", "classifier_activation=nope"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("gemma-encoder convert: error: ") and "classifier_activation" in err
    assert not (tmp_path / "out" / "config.json").exists()


def test_argument_errors_name_the_flag_and_other_errors_do_not():
    flags = {"column": "--column"}
    assert error_message(InvalidArgumentError("column", "no such column"), flags) == "argument --column: no such column"
    assert error_message(InvalidArgumentError("other", "bad"), flags) == "bad"
    assert error_message(ValueError("plain"), flags) == "plain"
