"""The model card: the README.md in every model archive the service hands out, an
adapter (a job's final one or a checkpoint's) or a merged model, in the Hugging Face card
format (YAML front matter, then Markdown). It says what the model is (base model, method,
adapter settings), what it was trained on and with (the job's data statistics and
resolved hyperparameters), how it did (the final train and validation metrics), and how
to load it (PEFT and transformers as code; vLLM and llama.cpp as text).

The facts come from the job (`ModelCardFacts.of_job`), so an adapter and the model merged
from it get the same card but for `kind` and how they load."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.models import Job, JobMetric
from core.registry import HUB_ID
from core.specs import PROMPT_LEARNING, ResolvedDpoHyperparameters, ResolvedSpec

Kind = Literal["adapter", "merged"]
CARD_NAME = "README.md"
ADAPTER_NAMES = {
    "lora": "LoRA",
    "adalora": "AdaLoRA",
    "ia3": "IA³",
    "loha": "LoHa",
    "lokr": "LoKr",
    "prompt_tuning": "prompt-tuning",
    "prefix_tuning": "prefix-tuning",
    "p_tuning": "P-tuning",
    "multitask_prompt_tuning": "multitask prompt-tuning",
}
# The metrics of a job's points that say how training went, as the Results table names them.
FIGURES = {
    "loss": "loss",
    "mean_token_accuracy": "mean token accuracy",
    "rewards_accuracies": "reward accuracy",
    "rewards_margins": "reward margin",
}
# Settings of the training spec that decide where checkpoints go and how often it logs, not what is learnt.
BOOKKEEPING = {"checkpoint_steps", "keep_checkpoints", "logging_steps"}
GGUF_NOTE = (
    "The service does not convert to GGUF itself: llama.cpp's converters are scripts of its repository, "
    "not a package on PyPI (PyPI's `gguf` package only reads and writes the file format)."
)


def folder_name(model_name: str) -> str:
    """The one folder a model's archive extracts into: the model's name (`ft:base:org:
    suffix:job`, a checkpoint's `...:ckpt-step-N`) with every character a file name cannot
    safely hold (`:` on Windows and macOS, the `/` of hub ids) as `-`."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", model_name)


@dataclass(frozen=True)
class ModelCardFacts:
    """What a card says about a model a job trained."""

    # The model's name: the job's fine-tuned model (`ft:...`) or a checkpoint's.
    name: str
    job_id: str
    # The base model's public id: a hub id, or the service's name of one of its local models.
    base_model: str
    spec: ResolvedSpec
    # The job's token statistics of its training data (core.tokenization.token_counts).
    statistics: Mapping[str, Any]
    # `step` and the newest `train_*` and `valid_*` figures by then (a checkpoint's metrics).
    metrics: Mapping[str, Any]

    @classmethod
    def of_job(cls, job: Job, name: str, metrics: Mapping[str, Any]) -> ModelCardFacts:
        spec = ResolvedSpec.model_validate(job.spec)
        return cls(name, job.id, job.model, spec, job.statistics or {}, metrics)

    @property
    def folder(self) -> str:
        """The folder the model's archive extracts into."""
        return folder_name(self.name)

    @property
    def base_on_hub(self) -> bool:
        return HUB_ID.match(self.base_model) is not None


def latest_metrics(points: Iterable[JobMetric]) -> dict[str, Any]:
    """A job's final figures from its metric points, in a checkpoint's metrics' keys: the
    last step, and per split the newest value of each figure."""
    latest: dict[str, Any] = {}
    for point in sorted(points, key=lambda p: p.step):
        latest["step"] = point.step
        for figure in FIGURES:
            if (value := getattr(point, figure)) is not None:
                latest[f"{point.split}_{figure}"] = value
    return latest


def write_model_card(directory: Path, card: ModelCardFacts, kind: Kind) -> Path:
    """`directory`: the model's folder (named `card.folder`)."""
    path = directory / CARD_NAME
    path.write_text(render(card, kind))
    return path


def render(card: ModelCardFacts, kind: Kind) -> str:
    return "\n".join(
        [
            _front_matter(card, kind),
            _summary(card, kind),
            _training(card),
            _loading_adapter(card) if kind == "adapter" else _loading_merged(card),
        ]
    )


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def _table(rows: Mapping[str, Any]) -> str:
    return "| | |\n|---|---|\n" + "".join(f"| `{key}` | {_value(value)} |\n" for key, value in rows.items())


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested statistics as one table: `preference.prompt_tokens.mean`."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _front_matter(card: ModelCardFacts, kind: Kind) -> str:
    spec = card.spec
    relation = "adapter" if kind == "adapter" else "finetune"
    tags = [f"base_model:{relation}:{card.base_model}", spec.qlora.adapter.type, spec.method.type, "ftsvc"]
    if spec.qlora.quantization is not None:
        tags.append("qlora")
    if kind == "merged":
        tags.append("merged")
    return (
        "---\n"
        f"base_model: {json.dumps(card.base_model)}\n"
        f"library_name: {'peft' if kind == 'adapter' else 'transformers'}\n"
        "pipeline_tag: text-generation\n"
        "tags:\n" + "".join(f"- {json.dumps(tag)}\n" for tag in tags) + "---\n"
    )


def _method(spec: ResolvedSpec) -> str:
    hp = spec.hparams
    return f"DPO (beta {hp.beta})" if isinstance(hp, ResolvedDpoHyperparameters) else "supervised fine-tuning"


def _summary(card: ModelCardFacts, kind: Kind) -> str:
    spec = card.spec
    adapter = ADAPTER_NAMES.get(spec.qlora.adapter.type, spec.qlora.adapter.type)
    q = spec.qlora.quantization
    on = f"the base quantized to {q.bits}-bit {q.quant_type.upper()} (QLoRA)" if q else "the unquantized base"
    trained = f"trained by {_method(spec)} on {on} by the ftsvc job `{card.job_id}`"
    what = (
        f"A {adapter} adapter for `{card.base_model}`, {trained}."
        if kind == "adapter"
        else f"`{card.base_model}` with the {adapter} adapter {trained}, merged into its weights."
    )
    where = (
        ""
        if card.base_on_hub
        else f"\n\n`{card.base_model}` is the name of a base model of the service that trained it, not a Hugging "
        "Face hub id: load the base model from your copy of it."
    )
    return f"# {card.name}\n\n{what}{where}\n"


def _training(card: ModelCardFacts) -> str:
    spec, metrics = card.spec, card.metrics
    adapter = spec.qlora.adapter.model_dump()
    settings = ", ".join(f"{key}={_value(value)}" for key, value in adapter.items() if key != "type")
    q = spec.qlora.quantization
    validation = (
        f"`{spec.validation_file}`"
        if spec.validation_file
        else f"{spec.qlora.data.validation_split:.0%} of the training file held out"
        if spec.qlora.data.validation_split
        else "none"
    )
    training = {k: v for k, v in spec.qlora.training.model_dump().items() if k not in BOOKKEEPING}
    data = spec.qlora.data
    hyperparameters = (
        spec.hparams.model_dump() | training | {"train_on_inputs": data.train_on_inputs, "packing": data.packing}
    )
    results = "".join(
        f"| {label} | {_value(metrics.get(f'train_{figure}'))} | {_value(metrics.get(f'valid_{figure}'))} |\n"
        for figure, label in FIGURES.items()
        if f"train_{figure}" in metrics or f"valid_{figure}" in metrics
    )
    return f"""## Training

| | |
|---|---|
| base model | `{card.base_model}` |
| method | `{spec.method.type}`: {_method(spec)} |
| adapter | `{adapter["type"]}`: {settings} |
| quantization | {", ".join(f"{k}={_value(v)}" for k, v in q.model_dump().items()) if q else "none"} |
| training data | `{spec.training_file}` (`{data.format}` format) |
| validation data | {validation} |
| seed | {spec.seed} |

### Data

The job's token statistics of the training data, under the base model's tokenizer:

{_table(_flat(card.statistics))}
### Hyperparameters

As the job resolved them (the learning rate is `learning_rate` × `learning_rate_multiplier`):

{_table(hyperparameters)}
### Results

At step {metrics.get("step", 0)}, the newest figures logged by then (null: none logged):

| | train | validation |
|---|---|---|
{results}"""


def _generate(card: ModelCardFacts, model: str, tokenizer: str) -> str:
    """Python that loads the tokenizer and generates with `model`."""
    if card.spec.qlora.data.format == "text":
        inputs = 'inputs = tokenizer("Once upon a time", return_tensors="pt")'
    else:
        inputs = (
            "inputs = tokenizer.apply_chat_template(\n"
            '    [{"role": "user", "content": "Hello!"}], add_generation_prompt=True, return_dict=True, '
            'return_tensors="pt"\n)'
        )
    generate = "output = model.generate(**inputs, max_new_tokens=64)"
    if tasks := card.spec.qlora.data.tasks:
        # A multitask prompt is told each input's task, by its id (tasks.json: name -> id).
        inputs += f'\ntask = json.load(open(f"{{{tokenizer}}}/tasks.json"))[{json.dumps(tasks[0])}]'
        generate = "output = model.generate(**inputs, task_ids=torch.tensor([task]), max_new_tokens=64)"
    return f"""tokenizer = AutoTokenizer.from_pretrained({tokenizer})
{model}
{inputs}
{generate}
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))"""


def _vllm_rank(r: int) -> int:
    # vLLM's max_lora_rank takes powers of two (and 320); at least 8.
    return max(8, 1 << math.ceil(math.log2(r)))


def _loading_adapter(card: ModelCardFacts) -> str:
    spec, folder, base = card.spec, card.folder, card.base_model
    adapter: Any = spec.qlora.adapter
    where = "from the Hugging Face hub" if card.base_on_hub else "replace with the path of your copy of it"
    load = "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model), adapter)"
    resolves = "its hub id resolves" if card.base_on_hub else f"`{base}` is a path to your copy of it"
    imports = "import json\n\nimport torch\n" if spec.qlora.data.tasks else ""  # a multitask prompt's task id
    peft = f"""## Loading

This folder holds the adapter (PEFT: `adapter_config.json`, `adapter_model.safetensors`) and the
tokenizer it was trained with. The snippets run in the directory the archive was extracted in.

### With PEFT

```python
{imports}from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base_model = {json.dumps(base)}  # the base model: {where}
adapter = {json.dumps(folder)}  # this folder

{_generate(card, load, "adapter")}
```

`adapter_config.json` names the base model by its public id (`base_model_name_or_path`: `{base}`),
so where {resolves}, `AutoPeftModelForCausalLM.from_pretrained(adapter)` loads both in one call.
"""
    if spec.qlora.quantization is not None:
        peft += (
            "\nThe adapter was trained on the base quantized to 4 bits; to run it on exactly those weights, load the "
            "base with the job's `BitsAndBytesConfig` (`load_in_4bit=True`, its `quant_type` and `double_quant`).\n"
        )
    if adapter.type in PROMPT_LEARNING:
        return peft + (
            f"\nA {ADAPTER_NAMES[adapter.type]} adapter runs through PEFT only: transformers' PEFT integration, "
            "vLLM and llama.cpp load adapters that change the model's layers, and it cannot be merged into the "
            "base model.\n"
        )
    peft += """
### With transformers

```python
model = AutoModelForCausalLM.from_pretrained(base_model)
model.load_adapter(adapter)  # transformers' PEFT integration: needs peft installed
```
"""
    if adapter.type != "lora" or adapter.use_dora:
        kind = "DoRA" if adapter.type == "lora" else ADAPTER_NAMES[adapter.type]
        return peft + (
            f"\n### With vLLM and llama.cpp\n\nBoth load LoRA adapters only, not {kind}: merge the adapter into "
            "the base model (peft's `merge_and_unload()`) and serve or convert the merged model.\n"
        )
    scale = (
        f"\nrsLoRA scales by alpha/√r where llama.cpp scales by alpha/r: load it with "
        f"`--lora-scaled {folder}.gguf {math.sqrt(adapter.r):.4g}` (√r) instead of `--lora`.\n"
        if adapter.use_rslora
        else ""
    )
    base_option = "" if card.base_on_hub else f" --base path/to/{base}"
    base_note = (
        "\nWithout `--base`, the script reads the base model's config from the hub under `base_model_name_or_path`.\n"
        if card.base_on_hub
        else ""
    )
    return (
        peft
        + f"""
### With vLLM

```python
from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest

adapter = {json.dumps(folder)}  # this folder
llm = LLM(model={json.dumps(base)}, enable_lora=True, max_lora_rank={_vllm_rank(adapter.r)})
outputs = llm.generate(["Hello!"], SamplingParams(max_tokens=64), lora_request=LoRARequest(adapter, 1, adapter))
```

or as a server whose requests name the model `{folder}`:
`vllm serve {base} --enable-lora --max-lora-rank {_vllm_rank(adapter.r)} --lora-modules {folder}=./{folder}`

### With llama.cpp (GGUF)

With the scripts of a llama.cpp checkout (and its `requirements.txt`), and the base model converted with
`convert_hf_to_gguf.py`:

```bash
python llama.cpp/convert_lora_to_gguf.py {folder}{base_option} --outfile {folder}.gguf
llama-cli -m {base.replace("/", "-")}.gguf --lora {folder}.gguf
```
{base_note}{scale}
{GGUF_NOTE}
"""
    )


def _loading_merged(card: ModelCardFacts) -> str:
    folder = json.dumps(card.folder)
    load = "model = AutoModelForCausalLM.from_pretrained(model_dir)"
    return f"""## Loading

This folder is a whole model (transformers: config, safetensors weights, tokenizer, chat template and
generation config), with the adapter merged into the base model's weights. The snippets run in the
directory the archive was extracted in.

### With transformers

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir = {folder}  # this folder

{_generate(card, load, "model_dir")}
```

### With vLLM

```python
from vllm import LLM, SamplingParams

outputs = LLM(model={folder}).generate(["Hello!"], SamplingParams(max_tokens=64))
```

or as a server: `vllm serve ./{card.folder}`

### With llama.cpp (GGUF)

With the scripts of a llama.cpp checkout (and its `requirements.txt`):

```bash
python llama.cpp/convert_hf_to_gguf.py {card.folder} --outfile {card.folder}.gguf
llama-cli -m {card.folder}.gguf
```

{GGUF_NOTE}
"""
