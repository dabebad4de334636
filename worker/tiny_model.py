"""Write a tiny random-weight Llama with a real tokenizer into the models root.

Hub weights cannot be downloaded on offline machines, so the demo, the tests and the
benchmarks build their base model here: a byte-level BPE tokenizer trained with
`tokenizers` on a small built-in corpus, a Llama-3 style chat template (with
`{% generation %}` markers so assistant spans can be found), and safetensors weights.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from worker.model_shapes import TINY

TINY_MODEL_NAME = "tiny-llama"

BOS, EOS, EOT, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|pad|>"
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
SPECIAL_TOKENS = [BOS, EOS, HEADER_START, HEADER_END, EOT, PAD]

# Llama-3 layout. Every turn ends with <|eot_id|>, which is the tokenizer's EOS, so a
# model trained on it learns to stop. The generation markers let TRL mask prompts. Tools
# as Llama 3.1 renders them: the function definitions as JSON in a system block, a call
# as {"name": ..., "parameters": ...} in the assistant's turn, a result in an ipython turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}"
    "{{ '<|start_header_id|>system<|end_header_id|>\\n\\nYou can call these functions; a call is a JSON "
    "object with name and parameters.\\n' }}"
    "{% for tool in tools %}{{ tool | tojson + '\\n' }}{% endfor %}"
    "{{ '<|eot_id|>' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% set role = 'ipython' if message['role'] == 'tool' else message['role'] %}"
    "{{ '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% set calls %}{% for call in message['tool_calls'] or [] %}"
    "{{ {'name': call['function']['name'], 'parameters': call['function']['arguments']} | tojson }}"
    "{% endfor %}{% endset %}"
    "{% generation %}{{ message['content'] + calls + '<|eot_id|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ message['content'] + '<|eot_id|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

_CORPUS = """
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
You are a helpful assistant. What is the capital of France? The capital of France is Paris.
Translate the sentence into French. Summarize the following text in one sentence.
Question: how many legs does a spider have? Answer: a spider has eight legs.
system user assistant tool function call response error status succeeded failed running queued
Fine-tuning adapts a pre-trained language model to a task with a small dataset.
Low-rank adaptation trains two small matrices beside each frozen weight matrix.
Quantization stores weights in four bits; the normal float format suits normally distributed weights.
0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = ( ) [ ] { } < > , . ; : ! ? ' " # @ % & _
پایتخت ایران تهران است. سلام دنیا! 😀 🚀 ✅ café naïve über straße 日本語 中文 русский
"""


def build_tokenizer(vocab_size: int = 768) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.strip().splitlines() * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        additional_special_tokens=[EOS, HEADER_START, HEADER_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_tiny_llama(target: Path, seed: int = 0) -> Path:
    """Write the tokenizer and a 2-layer random Llama to `target`; return it."""
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        **TINY,
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def ensure_tiny_llama(models_root: Path) -> Path:
    """Build the tiny model once; an existing complete copy is left alone."""
    target = models_root / TINY_MODEL_NAME
    if (target / "model.safetensors").exists():
        return target
    # Built beside the target and renamed into place, so a crash never leaves a
    # half-written model that looks complete.
    staging = models_root / f".{TINY_MODEL_NAME}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    build_tiny_llama(staging)
    try:
        os.rename(staging, target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target
