"""Reproducer (transformers' own API only): the grouped_mm experts implementation crashes on the CPU when a
row of an expert weight is not a multiple of 16 bytes, instead of falling back to another implementation.

    python docs/repro/transformers_grouped_mm_cpu_strides.py
    -> eager OK, batched_mm OK, grouped_mm RuntimeError: strides should be multiple of 16 bytes

Found by `moe-cts certify --device cpu --impl transformers-grouped_mm --profile quick` (torch 2.13.0+cpu,
transformers 5.24.0): every generated case whose H or I is not a multiple of 8 bf16/fp16 (4 fp32) elements.
Real model widths are multiples of 16 and pass; small or pruned models do not.
"""

import torch
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

torch.manual_seed(0)
for impl in ("eager", "batched_mm", "grouped_mm"):
    cfg = MixtralConfig(hidden_size=17, intermediate_size=24, num_local_experts=4, num_experts_per_tok=2)
    cfg._experts_implementation = impl
    block = MixtralSparseMoeBlock(cfg).to(torch.float32)
    try:
        with torch.no_grad():
            block(torch.randn(1, 5, 17))
        print(impl, "OK")
    except RuntimeError as err:
        print(impl, "RuntimeError:", str(err).splitlines()[0])
