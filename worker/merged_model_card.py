"""The README.md of a merged model's archive. A placeholder: the model card of adapter
and merged archives (worker.model_card) takes its place."""

from __future__ import annotations

from core.models import Merge


def model_card(merge: Merge, folder: str, dtype: str) -> str:
    return f"""# {folder}

{merge.model} (a {merge.adapter_type} adapter) merged into its base model {merge.base_model}, in {dtype}.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{folder}")
tokenizer = AutoTokenizer.from_pretrained("{folder}")
```
"""
