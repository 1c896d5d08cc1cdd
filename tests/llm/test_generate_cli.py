"""``edgeopt generate``: a language model artifact with its tokenizer answers a prompt on the command line."""

from __future__ import annotations

import pytest

import edgeopt.llm
from edgeopt.cli import main
from edgeopt.errors import InputError
from tests.llm.test_llm_compile import _llama, _reference

WORDS = ["<unk>", "<eos>", "user", "assistant", ":", "hello", "world", "the", "cat", "sat", "on", "mat"]
TEMPLATE = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}" \
           "{% if add_generation_prompt %}assistant : {% endif %}"


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    fast.chat_template = TEMPLATE
    return fast


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    m = _llama(seed=9, vocab_size=len(WORDS))
    tok = _tokenizer()
    lm = edgeopt.llm.compile(m, max_seq_len=32, prefill_len=(8,), tokenizer=tok)
    path = tmp_path_factory.mktemp("llm") / "tiny.edgeopt"
    lm.save(path)
    return m, tok, str(path)


def test_generate_prints_the_reply_as_it_comes(artifact, capsys):
    m, tok, path = artifact
    assert main(["generate", path, "hello world", "-n", "6", "--stats"]) == 0
    out = capsys.readouterr()
    ids = tok.apply_chat_template([{"role": "user", "content": "hello world"}], add_generation_prompt=True)
    ids = ids if isinstance(ids, list) else ids["input_ids"]
    assert ids == [2, 4, 5, 6, 3, 4]  # the stored template, rendered on the device with jinja2
    want = _reference(m, ids, 6)  # the model has no end-of-sequence token: 6 tokens
    assert out.out.strip() == tok.decode(want, skip_special_tokens=True).strip()
    assert "time to first token" in out.err and "prompt tokens" in out.err


def test_raw_prompt_and_a_model_without_tokenizer(artifact, tmp_path, capsys):
    m, tok, path = artifact
    lm = edgeopt.llm.load(path)
    assert lm.chat_ids("the cat", chat=False) == [7, 8]
    bare = tmp_path / "bare.edgeopt"
    edgeopt.llm.compile(m, max_seq_len=16, prefill_len=4).save(bare)
    with pytest.raises(InputError, match="no tokenizer"):
        edgeopt.llm.load(str(bare)).chat("hello")
    assert main(["generate", str(bare), "hello"]) == 1
    assert "no tokenizer" in capsys.readouterr().err
