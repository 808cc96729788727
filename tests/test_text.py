"""The text side: `data.text.TextTokenizer` (trained BPE, pretrained CLIP/T5 tokenizers) and
`nn.text.PretrainedTextEncoder` (tiny random CLIP and T5 text models saved locally)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from latentlab.data.shapes import CELLS, PALETTE, SHAPES
from latentlab.data.text import TextTokenizer
from latentlab.errors import CheckpointError, DataError, UserError
from latentlab.nn.text import PretrainedTextEncoder, masked_mean

CAPTIONS = [f"a {c} {s} at the {p}" for c in PALETTE for s in SHAPES for p in CELLS] + [
    "Two small circles,  one LARGE triangle!", "a red circle left of a blue square."]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(CAPTIONS, vocab_size=256, max_len=16)


def test_training_captions_round_trip(tok):
    ids = tok.encode_captions(CAPTIONS)
    assert ids.shape == (len(CAPTIONS), 16) and ids.dtype == torch.int64
    assert tok.decode(ids) == [" ".join(c.lower().split()) for c in CAPTIONS]
    assert (ids < tok.vocab_size).all() and (ids[:, 0] == tok.tokenizer.token_to_id("[BOS]")).all()
    assert torch.equal(tok.encode(CAPTIONS[:3]), ids[:3])
    repeated = [CAPTIONS[2], CAPTIONS[0], CAPTIONS[2], CAPTIONS[-1]]  # each encoded once
    assert torch.equal(tok.encode_captions(repeated), ids[[2, 0, 2, -1]])


def test_null_ids_are_the_begin_token_then_padding(tok):
    assert tok.pad_id == 0
    assert tok.null_ids.tolist() == [tok.tokenizer.token_to_id("[BOS]")] + [0] * 15
    prompt = tok.encode(["a red circle"])[0]  # begin token + 3 words, then padding
    assert prompt[0] == tok.null_ids[0] and (prompt[4:] == 0).all() and (prompt[:4] != 0).all()


def test_training_is_deterministic_across_processes(tok):
    """The vocabulary is numbered the same in another process (WordPiece's trainer is not)."""
    code = ("import sys, json; from latentlab.data.text import TextTokenizer; "
            "caps = json.loads(sys.stdin.read()); "
            "print(TextTokenizer.train(caps, vocab_size=256, max_len=16).tokenizer.to_str())")
    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    other = subprocess.run([sys.executable, "-c", code], input=json.dumps(CAPTIONS), env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other == tok.tokenizer.to_str()


@pytest.mark.parametrize("prompt, message", [
    ("", '--prompt "": is empty'),
    ("   ", '--prompt "": is empty'),
    ("a red zebra", '--prompt "a red zebra": the text tokenizer cannot encode the word "zebra"'),
    ("a purple circle", '--prompt "a purple circle": the word "purple" is in no training'),
    ("red " * 20, "is 21 tokens long, more than the limit of 16 tokens"),
    ("a [PAD] circle", 'holds the padding token "[PAD]"'),
])
def test_a_prompt_that_cannot_be_encoded_is_a_one_line_error(tok, prompt, message):
    with pytest.raises(UserError) as e:
        tok.encode([prompt], what="--prompt")
    text = str(e.value)
    assert message in text and text.startswith("--prompt ") and "\n" not in text


def test_which_prompt_failed_is_named(tok):
    with pytest.raises(UserError, match=r'^prompts 2 of 3 "a red zebra": '):
        tok.encode(["a red circle", "a red zebra", "a blue square"], what="prompts")
    with pytest.raises(DataError, match=r'^captions: caption 1 "a red zebra": .*"zebra"'):
        tok.encode_captions(["a red circle", "a red zebra"])
    assert tok.encode_captions(["a purple circle"]).shape == (1, 16)  # known letters, new word


def test_save_load_gives_identical_ids(tok, tmp_path):
    tok.save(tmp_path / "text")
    assert {p.name for p in (tmp_path / "text").iterdir()} == {"tokenizer.json", "text.json"}
    back = TextTokenizer.load(tmp_path / "text")
    assert torch.equal(back.encode_captions(CAPTIONS), tok.encode_captions(CAPTIONS))
    assert torch.equal(back.null_ids, tok.null_ids)
    assert (back.vocab_size, back.max_len, back.pad_id) == (tok.vocab_size, 16, 0)
    with pytest.raises(UserError, match="purple"):
        back.encode(["a purple circle"])


def test_a_damaged_or_missing_file_is_a_checkpoint_error_naming_it(tok, tmp_path):
    tok.save(tmp_path)
    text = (tmp_path / "tokenizer.json").read_text()
    (tmp_path / "tokenizer.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=r"tokenizer\.json: damaged") as e:
        TextTokenizer.load(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "text.json").unlink()
    with pytest.raises(CheckpointError, match=r"text\.json: missing"):
        TextTokenizer.load(tmp_path)


# ---------------------------------------------------------------------- pretrained (tiny, random)


def hf_tokenizer(specials: list[str], template: str) -> Tokenizer:
    """A small BPE tokenizer of the kind CLIP and T5 folders carry, with their special tokens."""
    t = Tokenizer(models.BPE(unk_token=specials[-1]))
    t.pre_tokenizer, t.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    t.train_from_iterator(CAPTIONS, trainers.BpeTrainer(vocab_size=120, special_tokens=specials,
                                                        show_progress=False))
    t.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, t.token_to_id(s)) for s in specials[:2]])
    return t


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A CLIP text model whose pad token is its end token (as in openai/clip-vit-*) and a T5
    encoder (pad 0, end "</s>", no begin token), each saved with its tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    root = tmp_path_factory.mktemp("pretrained")
    clip = hf_tokenizer(["<|startoftext|>", "<|endoftext|>"],
                        "<|startoftext|> $A <|endoftext|>")
    t5 = hf_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>")
    torch.manual_seed(0)
    made = {
        "clip": (clip, CLIPTextModel(CLIPTextConfig(
            vocab_size=clip.get_vocab_size(), hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=24,
            bos_token_id=0, eos_token_id=1, pad_token_id=1)),
            {"pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}),
        "t5": (t5, T5EncoderModel(T5Config(
            vocab_size=t5.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2,
            num_heads=4, pad_token_id=0, eos_token_id=1)),
            {"pad_token": "<pad>", "unk_token": "<unk>"}),
    }
    for name, (tokenizer, model, special) in made.items():
        model.save_pretrained(root / name)
        tokenizer.save(str(root / name / "tokenizer.json"))
        (root / name / "tokenizer_config.json").write_text(json.dumps(special))
    return {name: root / name for name in made}


def test_pretrained_tokenizers_follow_the_model_tokenizer(folders):
    clip = TextTokenizer.pretrained(folders["clip"], max_len=12)
    size = Tokenizer.from_file(str(folders["clip"] / "tokenizer.json")).get_vocab_size()
    # CLIP pads with its end token: padding gets an id of its own, past the vocabulary
    assert (clip.pad_id, clip.vocab_size) == (size, size + 1)
    assert clip.null_ids.tolist() == [0, 1] + [size] * 10
    ids = clip.encode(["a red circle"])
    assert ids[0, 0] == 0 and 1 in ids[0].tolist() and (ids < clip.vocab_size).all()
    assert clip.decode(ids) == ["a red circle"]
    t5 = TextTokenizer.pretrained(folders["t5"], max_len=12)
    assert (t5.pad_id, t5.null_ids.tolist()) == (0, [1] + [0] * 11)  # "</s>" then "<pad>"s
    with pytest.raises(UserError, match='^prompt "a red zebra": .* the word "zebra"'):
        t5.encode(["a red zebra"])
    with pytest.raises(UserError, match="more than the 24 positions"):
        TextTokenizer.pretrained(folders["clip"], max_len=30)


def test_a_folder_that_is_not_a_clip_or_t5_model_is_named(folders, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match=f"^{tmp_path}: not a CLIP or T5 text model.*'bert'"):
        TextTokenizer.pretrained(tmp_path, max_len=8)
    with pytest.raises(ValueError, match=f"^{tmp_path}: model_type 'bert'"):
        PretrainedTextEncoder.from_folder(tmp_path, 8, torch.zeros(8, dtype=torch.int64), 0)


@pytest.mark.parametrize("name", ["clip", "t5"])
def test_pretrained_encoder_is_frozen_and_reads_only_the_prompt(folders, name):
    tok = TextTokenizer.pretrained(folders[name], max_len=12)
    enc = PretrainedTextEncoder.from_folder(folders[name], 12, tok.null_ids, tok.pad_id)
    ids = torch.cat([tok.encode(["a red circle at the top left", "a blue square"]),
                     enc.null(1)])
    out = enc(ids)
    assert (enc.width, enc.max_len) == (32, 12)
    assert out.tokens.shape == (3, 12, 32) and out.pooled.shape == (3, 32)
    assert torch.equal(out.mask, ids != tok.pad_id) and out.mask.sum(1).min() >= 1
    # pooled = the mean over real tokens, computed row by row
    for b in range(3):
        assert torch.allclose(out.pooled[b], out.tokens[b, out.mask[b]].mean(0), atol=1e-6)
    assert torch.allclose(out.pooled, masked_mean(out.tokens, out.mask))
    # real positions are what the model gives for the unpadded prompt: padding is invisible
    n = int(out.mask[1].sum())
    alone = enc.model(input_ids=ids[1:2, :n]).last_hidden_state[0]
    torch.testing.assert_close(out.tokens[1, :n], alone, atol=1e-5, rtol=1e-5)
    # frozen: nothing to train, and eval mode survives the parent's train()
    torch.nn.Sequential(enc).train()
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.training and not enc.model.training
    assert "null_ids" not in enc.state_dict()


@pytest.mark.parametrize("name", ["clip", "t5"])
def test_from_config_and_state_dict_rebuild_the_encoder_exactly(folders, name):
    tok = TextTokenizer.pretrained(folders[name], max_len=12)
    enc = PretrainedTextEncoder.from_folder(folders[name], 12, tok.null_ids, tok.pad_id)
    config = json.loads(json.dumps(enc.config_dict()))  # as saved beside the weights
    again = PretrainedTextEncoder.from_config(config, 12, tok.null_ids, tok.pad_id)
    ids = tok.encode(["a green triangle at the center", "a white square"])
    assert not torch.equal(again(ids).tokens, enc(ids).tokens)  # random until loaded
    again.load_state_dict({k: v.clone() for k, v in enc.state_dict().items()})
    assert torch.equal(again(ids).tokens, enc(ids).tokens)
    assert torch.equal(again.null_ids, enc.null_ids) and not again.training
