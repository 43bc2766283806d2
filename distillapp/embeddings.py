"""Sentence embeddings of the base model, computed once per text: an on-disk cache.

Quick students, their review rounds, the label-quality run and "find more like this" all
need the frozen base model's embedding of the same pool texts; embedding 10,000 texts takes
30-60 s on a 2-core CPU, a cache lookup a fraction of a second. Keys are
sha256(model name, max_length, text); vectors live in .npz chunk files under
``default_cache_dir()`` (one directory per model and length), written whole
(a temp file, then a rename), so concurrent processes never read half a chunk.

Contextual word vectors (``ml.embed_words``: one row per word of a text, for extraction's
quick student) are cached the same way by ``embed_words_cached``, one (words, dim) array per
text, in a directory of their own per model, length, layer and way of cutting words.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from distillapp import ml

EMBED_BATCH = 64
# Texts per cache chunk file: a run stopped or killed keeps what it embedded up to the last
# full chunk.
CHUNK_TEXTS = 2048
# More chunk files than this are merged into one on the next write (each review round adds one).
MAX_CHUNKS = 32
KEY_BYTES = 32  # a sha256 digest


def embed_cached(
    texts: Sequence[str],
    *,
    model_name: str,
    max_length: int,
    cache_dir: Path | str,
    batch_size: int = EMBED_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    chunk_texts: int = CHUNK_TEXTS,
) -> np.ndarray:
    """``ml.embed_texts`` of `texts` (n, dim), embedding only texts not already in `cache_dir`.

    Keys are sha256(model_name, max_length, text); vectors live in .npz chunk files written
    whole (temp file, then rename), so concurrent runs never read half a chunk (two runs may
    both embed a text: harmless). `on_batch(done, total)` reports embedding batches of the
    missing texts; `should_stop()` is asked before each and raises ``ml.Stopped``, keeping
    what was embedded so far. A chunk is written every `chunk_texts` texts: what readers
    (``cached_vectors``) see of a run in progress.
    """
    directory = Path(cache_dir) / _digest(model_name, str(max_length)).hex()[:16]
    keys = [_digest(model_name, str(max_length), text) for text in texts]
    known = _read_chunks(directory)
    missing = list(dict.fromkeys(text for text, key in zip(texts, keys, strict=True) if key not in known))
    pending_keys: list[bytes] = []
    pending: list[np.ndarray] = []
    try:
        for batch, vectors in _batches(missing, model_name, max_length, batch_size, on_batch, should_stop):
            pending_keys += [_digest(model_name, str(max_length), text) for text in batch]
            pending.append(vectors)
            if len(pending_keys) >= chunk_texts:
                _write_chunk(directory, pending_keys, pending, known)
                pending_keys, pending = [], []
    finally:
        if pending_keys:
            _write_chunk(directory, pending_keys, pending, known)
    if not texts:
        return np.empty((0, 0), dtype=np.float32)
    return np.stack([known[key] for key in keys])


def cached_vectors(
    texts: Sequence[str], *, model_name: str, max_length: int, cache_dir: Path | str
) -> list[np.ndarray | None]:
    """The cached vector of each text, None where it has none yet. Never embeds (no model is
    loaded): what a web request may afford. The chunks read are kept per process and only
    new chunk files are read on the next call (chunks are written whole and never changed)."""
    directory = Path(cache_dir) / _digest(model_name, str(max_length)).hex()[:16]
    known = _known_here(directory)
    return [known.get(_digest(model_name, str(max_length), text)) for text in texts]


_seen_chunks: dict[Path, tuple[frozenset[str], dict[bytes, np.ndarray]]] = {}
_seen_lock = threading.Lock()


def _known_here(directory: Path) -> dict[bytes, np.ndarray]:
    """Every vector in `directory`, reading only the chunk files this process has not read.

    A merge (``_write_chunk``) replaces the files with one holding the same rows and more:
    when files read before are gone, everything is read again."""
    with _seen_lock:
        names = frozenset(path.name for path in directory.glob("chunk-*.npz"))
        seen, known = _seen_chunks.get(directory, (frozenset(), {}))
        if not seen <= names:
            seen, known = frozenset(), {}
        if names - seen:
            known = {**known, **_read_chunks(directory, names=names - seen)}
            _seen_chunks[directory] = (names, known)
        return known


def embed(
    texts: list[str],
    *,
    model_name: str,
    max_length: int,
    cache_dir: Path | None,
    batch_size: int = EMBED_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """``ml.embed_texts`` of `texts`, through the cache in `cache_dir` when one is given."""
    if cache_dir is not None:
        return embed_cached(
            texts,
            model_name=model_name,
            max_length=max_length,
            cache_dir=cache_dir,
            batch_size=batch_size,
            on_batch=on_batch,
            should_stop=should_stop,
        )
    unique = list(dict.fromkeys(texts))
    rows = {}
    for batch, vectors in _batches(unique, model_name, max_length, batch_size, on_batch, should_stop):
        rows.update(zip(batch, vectors, strict=True))
    return np.stack([rows[text] for text in texts])


def embed_words_cached(
    texts: Sequence[str],
    words: Sequence[Sequence[tuple[int, int]]],
    *,
    unit: str,
    model_name: str,
    max_length: int,
    layer: int,
    cache_dir: Path | str | None,
    batch_size: int = EMBED_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[np.ndarray]:
    """``ml.embed_words`` of `texts` (one float32 (len(words[i]), dim) array each), embedding
    only texts not already in `cache_dir` (None: no cache).

    `unit` names how `words` were cut from each text ("tokenizer", "whitespace"): it is part
    of the key, with the model, length and layer, so the caller promises that one unit always
    cuts one text into the same words. Batches, `on_batch` and `should_stop` as ``embed_cached``.
    """
    parts = (model_name, str(max_length), f"words:{unit}:layer{layer}")
    directory = Path(cache_dir) / _digest(*parts).hex()[:16] if cache_dir is not None else None
    keys = [_digest(*parts, text) for text in texts]
    known = _read_chunks(directory) if directory is not None else {}
    first = {}
    for i, key in enumerate(keys):
        if key not in known:
            first.setdefault(key, i)
    # Length-sorted (less padding), as for sentence embeddings.
    missing = sorted(first.values(), key=lambda i: len(texts[i]))
    total = -(-len(missing) // batch_size)
    pending_keys: list[bytes] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if directory is not None and pending_keys:
            _write_chunk(directory, pending_keys, pending, known, ragged=True)
        else:
            known.update(zip(pending_keys, pending, strict=True))
        pending_keys.clear()
        pending.clear()

    try:
        for number, start in enumerate(range(0, len(missing), batch_size), start=1):
            if should_stop is not None and should_stop():
                raise ml.Stopped()
            batch = missing[start : start + batch_size]
            vectors = ml.embed_words(
                [texts[i] for i in batch],
                [list(words[i]) for i in batch],
                model_name=model_name,
                batch_size=batch_size,
                max_length=max_length,
                layer=layer,
            )
            pending_keys += [keys[i] for i in batch]
            pending += vectors
            if len(pending_keys) >= CHUNK_TEXTS:
                flush()
            if on_batch is not None:
                on_batch(number, total)
    finally:
        flush()
    return [known[key] for key in keys]


def _batches(
    texts: list[str],
    model_name: str,
    max_length: int,
    batch_size: int,
    on_batch: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    # Length-sorted across all texts (embed_texts sorts only within its call): less padding.
    ordered = sorted(texts, key=len)
    total = -(-len(ordered) // batch_size)
    for number, start in enumerate(range(0, len(ordered), batch_size), start=1):
        if should_stop is not None and should_stop():
            raise ml.Stopped()
        batch = ordered[start : start + batch_size]
        yield (
            batch,
            ml.embed_texts(batch, model_name=model_name, batch_size=batch_size, max_length=max_length),
        )
        if on_batch is not None:
            on_batch(number, total)


def _digest(*parts: str) -> bytes:
    hasher = hashlib.sha256()
    for part in parts:
        encoded = part.encode()
        # Length-prefixed, so that no two different tuples hash the same bytes.
        hasher.update(len(encoded).to_bytes(8, "little"))
        hasher.update(encoded)
    return hasher.digest()


def _read_chunks(directory: Path, *, names: frozenset[str] | None = None) -> dict[bytes, np.ndarray]:
    """The vectors of every chunk file in `directory` (or of those `names`)."""
    known: dict[bytes, np.ndarray] = {}
    paths = directory.glob("chunk-*.npz") if names is None else (directory / name for name in names)
    for path in sorted(paths):
        try:
            with np.load(path) as chunk:
                vectors = chunk["vectors"]
                if "lengths" in chunk:  # word vectors: each key owns `length` consecutive rows
                    vectors = np.split(vectors, np.cumsum(chunk["lengths"])[:-1])
                known.update(zip(_keys(chunk["keys"]), vectors, strict=True))
        except FileNotFoundError:
            pass  # merged away by another process meanwhile: its rows are in the merged chunk
    return known


def _keys(stored: np.ndarray) -> list[bytes]:
    """The digests of a chunk's ``keys`` array: rows of raw bytes, or (chunks written before
    2026-11-30) "S32" strings, whose trailing NUL bytes numpy dropped and are put back here."""
    if stored.dtype.kind == "S":
        return [key.ljust(KEY_BYTES, b"\0") for key in stored.tolist()]
    return [row.tobytes() for row in stored]


def _write_chunk(
    directory: Path, keys: list[bytes], vectors: list[np.ndarray], known: dict, *, ragged: bool = False
) -> None:
    """Write `keys` and their `vectors` (batches of rows; with `ragged`, one array per key) as a
    chunk, or merge every chunk into one when there are too many."""
    if ragged:
        rows = [v.astype(np.float32) for v in vectors]
        known.update(zip(keys, rows, strict=True))
    else:
        stacked = np.concatenate(vectors).astype(np.float32)
        known.update(zip(keys, stacked, strict=True))
    directory.mkdir(parents=True, exist_ok=True)
    existing = sorted(directory.glob("chunk-*.npz"))
    if len(existing) >= MAX_CHUNKS:
        # Merge: one file with every row known (this process read them all), then drop the old.
        _save(directory, list(known), *_packed(list(known.values()), ragged))
        for path in existing:
            path.unlink(missing_ok=True)
    else:
        _save(directory, keys, *_packed(rows, True) if ragged else (stacked, None))


def _packed(values: list[np.ndarray], ragged: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if not ragged:
        return np.stack(values), None
    return np.concatenate(values), np.array([len(v) for v in values], dtype=np.int64)


def _save(directory: Path, keys: list[bytes], vectors: np.ndarray, lengths: np.ndarray | None = None) -> None:
    name = f"chunk-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
    temporary = directory / f".{name}.{os.getpid()}.tmp"
    with temporary.open("wb") as handle:
        # Raw bytes, one row of KEY_BYTES per key: numpy's "S32" strings drop trailing NUL
        # bytes, so a digest ending in 0x00 (1 text in 256) never matched again.
        raw = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        extra = {} if lengths is None else {"lengths": lengths}
        np.savez(handle, keys=raw, vectors=vectors, **extra)
    temporary.replace(directory / name)


def default_cache_dir() -> Path:
    """The app's cache directory: ``embeddings/`` in the data directory (DISTILL_DATA_DIR)."""
    from django.conf import settings

    return Path(settings.DATA_DIR) / "embeddings"
