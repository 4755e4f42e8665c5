"""Hub round trip: push_to_hub to a loopback Hub with the real huggingface_hub client, reload where the package is gone.

One module-scoped Hub holds three repos built from the real Gemma 3 270M: a classifier fine-tuned a few steps on
SST-2 (attention pooling), a ranker, and a LoRA adapter trained on top of the pushed classifier. A single fresh Python
process, in which `import gemma_encoder_hf` fails, loads all three with trust_remote_code and must reproduce the
logits bit for bit.
"""

import ast
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SOURCES, random_batch, tiny_encoder_config
from hub_server import HubServer, client_pointed_at
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from tokenizers.processors import TemplateProcessing
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import gemma_encoder_hf
from gemma_encoder_hf import (
    GemmaEncoderConfig,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderModel,
    push_to_hub,
)
from gemma_encoder_hf.modeling.modeling_gemma_encoder import served_model_classes

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
PACKAGE_DIR = Path(gemma_encoder_hf.__file__).parent / "modeling"
SOURCE_FILES = ("configuration_gemma_encoder.py", "modeling_gemma_encoder.py")

CLASSIFIER_REPO = "tester/gemma3-270m-encoder-sst2"
RANKER_REPO = "tester/gemma3-270m-encoder-ranker"
LORA_REPO = "tester/gemma3-270m-encoder-sst2-lora"

# Prepended to every subprocess script: makes `gemma_encoder_hf` unimportable, as on a machine without the package.
BLOCK_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys

    class _BlockGemmaEncoderHF(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "gemma_encoder_hf":
                raise ModuleNotFoundError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, _BlockGemmaEncoderHF())
    try:
        import gemma_encoder_hf
        PACKAGE_IMPORTABLE = True
    except ModuleNotFoundError:
        PACKAGE_IMPORTABLE = False
    """
)


def tiny_config(**overrides) -> GemmaEncoderConfig:
    return tiny_encoder_config(**{"decoder_model_type": "gemma3_text", **overrides})


def read_tsv(task: str, limit: int) -> list[dict]:
    with open(DATA_ROOT / task / "train.tsv", encoding="utf-8-sig", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row for _, row in zip(range(limit), rows)]


def run_isolated(script: str, env: dict, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter where gemma_encoder_hf cannot be imported."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_PACKAGE + textwrap.dedent(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("loopback_hub")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub_env(hub, tmp_path_factory):
    """This process's huggingface_hub client pointed at the loopback Hub; the value is a subprocess environment."""
    with client_pointed_at(hub, tmp_path_factory.mktemp("hub_client")) as env:
        yield {**os.environ, **env}


# ----------------------------------------------------------------------------------------------------------------------
# auto_map and shipped files (tiny models)
# ----------------------------------------------------------------------------------------------------------------------


def _package_imports_outside_conversion(source: str) -> list[int]:
    """Lines that import gemma_encoder_hf anywhere but inside `from_decoder` and `from_pretrained`.

    The shipped files must load with torch and transformers alone. Only conversion imports the package, when it runs:
    `from_decoder` (decoder checkpoints, which a Hub user of a converted model never passes) and `from_pretrained`
    for a conversion-record folder (which only the package writes).
    """
    tree = ast.parse(source)
    allowed = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef) and function.name in ("from_decoder", "from_pretrained")
        for node in ast.walk(function)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(
            name.startswith("gemma_encoder_hf")
            for name in ([node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names])
        )
        and id(node) not in allowed
    ]


@pytest.mark.parametrize("model_class", served_model_classes(), ids=lambda cls: cls.__name__)
def test_saved_folder_has_complete_auto_map_and_source_files(model_class, tmp_path):
    model_class(tiny_config()).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    expected_seq_cls = model_class.__name__ if model_class is GemmaEncoderForRanking else None
    assert auto_map == {
        "AutoConfig": "configuration_gemma_encoder.GemmaEncoderConfig",
        "AutoModel": "modeling_gemma_encoder.GemmaEncoderModel",
        "AutoModelForMaskedLM": "modeling_gemma_encoder.GemmaEncoderForMaskedLM",
        "AutoModelForQuestionAnswering": "modeling_gemma_encoder.GemmaEncoderForQuestionAnswering",
        "AutoModelForSequenceClassification": "modeling_gemma_encoder."
        + (expected_seq_cls or "GemmaEncoderForSequenceClassification"),
        "AutoModelForTokenClassification": "modeling_gemma_encoder.GemmaEncoderForTokenClassification",
    }
    for name in SOURCE_FILES:
        shipped = (tmp_path / name).read_text()
        assert shipped == (PACKAGE_DIR / name).read_text()
        assert _package_imports_outside_conversion(shipped) == [], f"{name} imports the package"
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(tmp_path.glob("*.bin"))


def test_push_refuses_tokenizer_with_gemma_pair_template(real_encoder_dir, hub, hub_env):
    """Gemma's own template (<bos> A <bos> B) would silently feed the model pairs it was not built for."""
    tokenizer = AutoTokenizer.from_pretrained(real_encoder_dir)
    bos = tokenizer.bos_token
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    model = GemmaEncoderForSequenceClassification(tiny_config(vocab_size=tokenizer.vocab_size))
    with pytest.raises(ValueError, match="prepare_tokenizer"):
        push_to_hub(model, "tester/refused", tokenizer=tokenizer)
    assert "tester/refused" not in hub.repos


def test_loopback_hub_requires_a_token_to_write(hub, hub_env):
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").create_repo("tester/nope")
    assert err.value.response.status_code == 401


# ----------------------------------------------------------------------------------------------------------------------
# Real 270M: push, then reload in a process without the package
# ----------------------------------------------------------------------------------------------------------------------


def texts_and_pairs() -> tuple[list[str], list[list[str]]]:
    singles = [row["sentence"].strip() for row in read_tsv("sst2", 3)]
    pairs = [[row["#1 String"], row["#2 String"]] for row in read_tsv("mrpc", 2)]
    return singles, pairs


def encode(tokenizer, singles, pairs) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "single": dict(tokenizer(singles, padding=True, return_tensors="pt")),
        "pair": dict(tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")),
    }


@torch.no_grad()
def logits_of(model, batches) -> dict[str, torch.Tensor]:
    model.eval()
    return {name: model(**batch).logits for name, batch in batches.items()}


def fine_tune(model, tokenizer, rows: list[dict], steps: int, lr: float) -> None:
    """A few plain SGD steps on real labelled text: enough to move the head, pooler and (for LoRA) the adapter."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    for step in range(steps):
        batch_rows = rows[step * 4 : (step + 1) * 4]
        batch = tokenizer([r["sentence"] for r in batch_rows], padding=True, return_tensors="pt")
        labels = torch.tensor([int(r["label"]) for r in batch_rows])
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def pushed(real_encoder_dir, hub, hub_env, tmp_path_factory):
    """Push the three repos; return the reference inputs and logits computed in this process."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(real_encoder_dir)
    singles, pairs = texts_and_pairs()
    batches = encode(tokenizer, singles, pairs)
    train_rows = read_tsv("sst2", 40)[8:]
    results_file = tmp_path_factory.mktemp("results") / "sst2.json"
    results_file.write_text(
        json.dumps(
            {
                "model": CLASSIFIER_REPO,
                "task": "sst2",
                "dataset": {"name": "sst2", "split": "validation", "path": "sst2/train.tsv"},
                "metrics": {"accuracy": 0.5, "f1": 0.25},
            }
        )
    )

    classifier = GemmaEncoderForSequenceClassification.from_pretrained(
        real_encoder_dir,
        num_labels=2,
        pooling="attention",
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    classifier.model.requires_grad_(False)  # train the pooler and head only: the backbone round trip is shown anyway
    fine_tune(classifier, tokenizer, train_rows, steps=2, lr=1e-2)
    push_to_hub(
        classifier,
        CLASSIFIER_REPO,
        base_model="google/gemma-3-270m",
        results=[results_file],
        training_data=["nyu-mll/glue (sst2, 8 examples)"],
    )
    reference = {"classifier": logits_of(classifier, batches)}
    del classifier

    ranker = GemmaEncoderForRanking.from_pretrained(real_encoder_dir)
    push_to_hub(ranker, RANKER_REPO, base_model="google/gemma-3-270m")
    reference["ranker"] = logits_of(ranker, batches)
    del ranker

    # LoRA on top of the pushed classifier, loaded back from the Hub as a user would.
    base = AutoModelForSequenceClassification.from_pretrained(CLASSIFIER_REPO)
    lora = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8))
    fine_tune(lora, tokenizer, train_rows[8:], steps=1, lr=1e-2)
    lora.push_to_hub(LORA_REPO)
    reference["lora"] = logits_of(lora, batches)
    del lora, base
    return {"batches": batches, "reference": reference, "singles": singles, "pairs": pairs}


def test_pushed_repos_hold_weights_code_tokenizer_and_card(pushed, hub):
    files = set(hub.repos[CLASSIFIER_REPO].resolve("main").files)
    assert {
        "config.json",
        "model.safetensors",
        *SOURCE_FILES,
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } <= files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth"))]
    assert hub.repos[CLASSIFIER_REPO].resolve("main").files["model.safetensors"].lfs

    api = HfApi()
    config = json.loads(Path(api.hf_hub_download(CLASSIFIER_REPO, "config.json")).read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].endswith("GemmaEncoderForSequenceClassification")
    ranker_config = json.loads(Path(api.hf_hub_download(RANKER_REPO, "config.json")).read_text())
    assert ranker_config["auto_map"]["AutoModelForSequenceClassification"].endswith("GemmaEncoderForRanking")
    assert ranker_config["auto_map"]["AutoModel"].endswith("GemmaEncoderModel")

    card = Path(api.hf_hub_download(CLASSIFIER_REPO, "README.md")).read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["base_model"] == "google/gemma-3-270m"
    assert metadata["license"] == "gemma"
    metrics = metadata["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in metrics} == {"accuracy": 0.5, "f1": 0.25}
    assert "attention pooling" in card and "Gemma Terms of Use" in card
    assert hub.unhandled == []


def test_reload_without_package_reproduces_logits(pushed, hub, hub_env, tmp_path):
    torch.save(pushed["batches"], tmp_path / "batches.pt")
    script = f"""
    import json, torch
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    singles, pairs = json.loads({json.dumps(json.dumps([pushed["singles"], pushed["pairs"]]))})
    tokenizer = AutoTokenizer.from_pretrained({CLASSIFIER_REPO!r}, trust_remote_code=True)
    batches = {{
        "single": dict(tokenizer(singles, padding=True, return_tensors="pt")),
        "pair": dict(tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")),
    }}
    out = {{"package_importable": PACKAGE_IMPORTABLE, "batches": batches, "logits": {{}}, "classes": {{}}}}

    def run(name, model):
        model.eval()
        out["classes"][name] = type(model).__module__ + "." + type(model).__name__
        with torch.no_grad():
            out["logits"][name] = {{key: model(**batch).logits for key, batch in batches.items()}}

    run("classifier", AutoModelForSequenceClassification.from_pretrained({CLASSIFIER_REPO!r}, trust_remote_code=True))
    ranker = AutoModelForSequenceClassification.from_pretrained({RANKER_REPO!r}, trust_remote_code=True)
    run("ranker", ranker)
    ranker.save_pretrained({str(tmp_path / "resaved")!r})  # saved again by the remote code alone
    del ranker
    lora = AutoPeftModelForSequenceClassification.from_pretrained({LORA_REPO!r}, trust_remote_code=True)
    out["classes"]["lora_base"] = type(lora.get_base_model()).__module__
    run("lora", lora)
    out["loaded_modules"] = sorted(m for m in sys.modules if m.startswith("gemma_encoder_hf"))
    torch.save(out, {str(tmp_path / "out.pt")!r})
    """
    run_isolated(script, hub_env, tmp_path)
    out = torch.load(tmp_path / "out.pt")

    assert out["package_importable"] is False and out["loaded_modules"] == []
    for name, batch in pushed["batches"].items():  # the pushed tokenizer keeps the pair template
        assert torch.equal(out["batches"][name]["input_ids"], batch["input_ids"])
        assert torch.equal(out["batches"][name]["attention_mask"], batch["attention_mask"])
    assert out["classes"]["classifier"].startswith("transformers_modules.")
    assert out["classes"]["classifier"].endswith("modeling_gemma_encoder.GemmaEncoderForSequenceClassification")
    assert out["classes"]["ranker"].endswith("modeling_gemma_encoder.GemmaEncoderForRanking")
    assert out["classes"]["lora_base"].startswith("transformers_modules.")
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())["auto_map"]
    assert resaved["AutoModelForSequenceClassification"] == "modeling_gemma_encoder.GemmaEncoderForRanking"
    assert set(resaved) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForMaskedLM",
        "AutoModelForQuestionAnswering",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
    }
    pushed_files = hub.repos[RANKER_REPO].resolve("main").files
    for name in SOURCE_FILES:
        assert (tmp_path / "resaved" / name).read_bytes() == pushed_files[name].content
    for name, reference in pushed["reference"].items():
        for key, logits in reference.items():
            assert torch.equal(out["logits"][name][key], logits), f"{name}/{key} logits differ after the round trip"
    # The adapter changed the classifier: reproducing its logits means the LoRA weights, pooler and head came back.
    assert not torch.equal(pushed["reference"]["lora"]["single"], pushed["reference"]["classifier"]["single"])


def test_every_backbone_round_trips_through_the_hub_without_the_package(tiny_decoder_dirs, hub, hub_env, tmp_path):
    """A classifier converted from each kind of source (Gemma 1-4, Gemma 4 MoE, T5Gemma, T5Gemma 2, EmbeddingGemma 2),
    pushed and loaded back with trust_remote_code where the package cannot be imported, gives the same logits: the
    modeling file that travels to the Hub carries every backbone's layers."""
    input_ids, attention_mask = random_batch(128, batch=3, seq=12)
    reference = {}
    for kind in SOURCES:
        torch.manual_seed(0)
        model = GemmaEncoderForSequenceClassification.from_decoder(tiny_decoder_dirs[kind], num_labels=2).eval()
        model.push_to_hub(f"tester/tiny-{kind}")
        with torch.no_grad():
            reference[kind] = model(input_ids=input_ids, attention_mask=attention_mask).logits
    torch.save({"input_ids": input_ids, "attention_mask": attention_mask}, tmp_path / "batch.pt")
    script = f"""
    import torch
    from transformers import AutoModelForSequenceClassification

    batch = torch.load({str(tmp_path / "batch.pt")!r})
    out = {{"package_importable": PACKAGE_IMPORTABLE, "logits": {{}}, "classes": {{}}}}
    for kind in {list(SOURCES)!r}:
        model = AutoModelForSequenceClassification.from_pretrained(f"tester/tiny-{{kind}}", trust_remote_code=True)
        out["classes"][kind] = type(model).__module__
        with torch.no_grad():
            out["logits"][kind] = model.eval()(**batch).logits
    torch.save(out, {str(tmp_path / "out.pt")!r})
    """
    run_isolated(script, hub_env, tmp_path)
    out = torch.load(tmp_path / "out.pt")
    assert out["package_importable"] is False
    for kind in SOURCES:
        assert out["classes"][kind].startswith("transformers_modules."), kind
        assert torch.equal(out["logits"][kind], reference[kind]), kind


# ----------------------------------------------------------------------------------------------------------------------
# The README's first snippet, and a decoder that is a Hub id (tiny models)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_decoder_with_tokenizer(tiny_decoder_dirs, tmp_path_factory) -> Path:
    """The tiny Gemma 3 decoder folder with the (raw, `<bos> A <bos> B`) Gemma tokenizer of its GGUF twin beside it,
    as a decoder repo on the Hub holds."""
    import shutil

    from transformers import GemmaTokenizer

    from conftest import write_tiny_gemma3_gguf

    root = tmp_path_factory.mktemp("decoder_with_tokenizer")
    write_tiny_gemma3_gguf(tiny_decoder_dirs["gemma3"], root / "tiny.gguf")
    folder = Path(shutil.copytree(tiny_decoder_dirs["gemma3"], root / "decoder"))
    GemmaTokenizer.from_pretrained(str(root), gguf_file="tiny.gguf").save_pretrained(folder)
    return folder


def test_readme_snippet_pushes_a_fresh_conversion(tiny_decoder_with_tokenizer, hub, hub_env):
    raw = AutoTokenizer.from_pretrained(tiny_decoder_with_tokenizer)
    assert raw("w", "x")["input_ids"].count(raw.bos_token_id) == 2  # the decoder's own pair template

    # As the README shows it (a local decoder folder instead of "google/gemma-2-2b").
    model = gemma_encoder_hf.GemmaEncoderForSequenceClassification.from_decoder(
        str(tiny_decoder_with_tokenizer),
        num_labels=2, pooling="mean", attention="bidirectional")
    gemma_encoder_hf.push_to_hub(model, "me/gemma2-encoder-sst2")

    pushed = AutoTokenizer.from_pretrained("me/gemma2-encoder-sst2")
    ids = pushed("w", "x")["input_ids"]
    assert ids.count(pushed.bos_token_id) == 1 and pushed.eos_token_id in ids
    assert pushed.model_max_length == 2048
    reloaded = AutoModelForSequenceClassification.from_pretrained("me/gemma2-encoder-sst2").eval()
    batch = pushed(["w x", "x"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model.eval()(**batch).logits)


def test_lora_flow_from_a_decoder_hub_id(tiny_decoder_dirs, hub, hub_env, tmp_path):
    """from_decoder("namespace/decoder") -> LoRA -> save -> AutoPeftModel reload, the decoder fetched from the Hub."""
    from peft import AutoPeftModelForSequenceClassification, LoraConfig, get_peft_model

    HfApi().create_repo("google/gemma-tiny", exist_ok=True)
    HfApi().upload_folder(repo_id="google/gemma-tiny", folder_path=str(tiny_decoder_dirs["gemma3"]))
    model = GemmaEncoderForSequenceClassification.from_decoder("google/gemma-tiny", num_labels=3, pooling="attention")
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8))
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05)
    input_ids = torch.tensor([[2, 5, 9, 11, 1], [2, 7, 8, 1, 0]])
    attention_mask = (input_ids != 0).long()
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask).logits
    model.save_pretrained(tmp_path / "adapter")

    reloaded = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "adapter").eval()
    assert reloaded.get_base_model().config.pooling == "attention"
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=input_ids, attention_mask=attention_mask).logits, expected, atol=1e-6, rtol=1e-6
        )


def test_every_source_converts_from_a_hub_id(tiny_decoder_dirs, hub, hub_env, tmp_path):
    """from_decoder("namespace/checkpoint") builds the same encoder as the local folder, for every kind of source;
    `convert` of an EmbeddingGemma 2 repo fetches its embedding projection for the Dense module."""
    import shutil

    from safetensors.torch import load_file
    from tiny_tokenizer import char_tokenizer

    from gemma_encoder_hf.integrations.conversion import convert

    for kind in SOURCES:
        folder = Path(shutil.copytree(tiny_decoder_dirs[kind], tmp_path / kind))
        char_tokenizer().save_pretrained(folder)
        HfApi().create_repo(f"google/tiny-{kind}", exist_ok=True)
        HfApi().upload_folder(repo_id=f"google/tiny-{kind}", folder_path=str(folder))
        local = GemmaEncoderModel.from_decoder(folder).state_dict()
        remote = GemmaEncoderModel.from_decoder(f"google/tiny-{kind}").state_dict()
        assert local.keys() == remote.keys(), kind
        assert all(torch.equal(local[k], remote[k]) for k in local), kind
    out = convert("google/tiny-embedding_gemma2", tmp_path / "converted")
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Dense"]
    projection = load_file(tiny_decoder_dirs["embedding_gemma2"] / "model.safetensors")
    dense = load_file(out / modules[1]["path"] / "model.safetensors")
    assert torch.equal(dense["linear.weight"], projection["language_model.embedding_projection.weight"])
