"""The generation worker: one thread running a batched decode loop over a ``transformers`` causal LM.

Between two decode steps the worker admits waiting requests (up to ``max_batch`` running): it prefills them together
(prompts left-padded to the longest), samples each one's first token, and joins their KV cache to the running batch.
Every step then feeds each running sequence its last token and samples the next; each token goes out as soon as its
step ends (``on_step`` gets the step's emissions, from the worker thread). Finished and cancelled sequences leave
the batch at once.

The batch's KV cache keeps every sequence's tokens contiguous at the right end, after left padding:

    row i holds n_i real tokens in the last n_i of T columns;  attention mask row i = [0] * (T - n_i) + [1] * n_i

so the mask follows from the host-side counts ``n_i`` alone, joining two batches pads the shorter cache on the left,
and when sequences leave, the columns no row uses any more (T - max n_i) are cut. The position of a sequence's next
token is n_i (its real tokens so far), passed explicitly, so padding never shifts rotary positions.

Torch releases the GIL inside its kernels, so the server's event loop keeps streaming while the worker computes.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .protocol import SamplingParams

log = logging.getLogger("bench.hfserve")
STATS_INTERVAL_S = 10.0


@dataclass(eq=False)
class Sequence:
    """One request inside the engine. ``prompt_ids`` is not padded; ``generated`` counts the tokens emitted."""

    prompt_ids: list[int]
    params: SamplingParams
    generated: int = 0
    cancelled: bool = False     # set by the server (client gone): the sequence leaves the batch before the next step
    context: Any = None         # the server's own handle (its queue), untouched here
    generator: torch.Generator | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Emission:
    """One step's output for one sequence: a token, and the finish reason when it was the last one; or an error."""

    seq: Sequence
    token_id: int | None
    finish_reason: str | None = None   # "length" | "stop" | "error"
    error: str | None = None


# ---- the KV cache, whatever the transformers version ------------------------------------------------------------

def new_cache():
    from transformers import DynamicCache
    return DynamicCache()


def cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer, each [batch, kv_heads, T, head_dim]."""
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def cache_from_layers(layers: list[tuple[torch.Tensor, torch.Tensor]]):
    cache = new_cache()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


def select_rows(cache, rows: torch.Tensor, keep_last: int):
    """The cache of batch rows `rows`, only its last `keep_last` columns."""
    return cache_from_layers([(k[rows, :, -keep_last:], v[rows, :, -keep_last:]) for k, v in cache_layers(cache)])


def join_caches(a, b):
    """Stack two batches' caches, the shorter left-padded with zeros to the longer's length."""
    out = []
    for (ka, va), (kb, vb) in zip(cache_layers(a), cache_layers(b)):
        t = max(ka.shape[2], kb.shape[2])
        out.append((torch.cat([_pad_left(ka, t), _pad_left(kb, t)]), torch.cat([_pad_left(va, t), _pad_left(vb, t)])))
    return cache_from_layers(out)


def _pad_left(x: torch.Tensor, t: int) -> torch.Tensor:
    return x if x.shape[2] == t else F.pad(x, (0, 0, t - x.shape[2], 0))


def padding_mask(counts: list[int], width: int, device) -> torch.Tensor:
    """[len(counts), width] 0/1 mask whose row i ends with counts[i] ones."""
    n = torch.tensor(counts, device=device)
    return (torch.arange(width, device=device)[None, :] >= (width - n)[:, None]).long()


def _logits_arg(model) -> dict[str, int]:
    """Ask for the last position's logits only (a prompt's full logits in float32 would be B x L x vocab x 4
    bytes: 1.5 GB for 10 prompts of 256 tokens and Qwen's 151,936 tokens), under the name this version uses."""
    import inspect
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


# ---- sampling ---------------------------------------------------------------------------------------------------

def sample(logits: torch.Tensor, seqs: list[Sequence], eos_ids: frozenset[int], sample_vocab: int) -> list[int]:
    """Next token per row of `logits` [B, V]: only ids < `sample_vocab` (the tokenizer's; a random-weight model's
    vocabulary can be larger), EOS banned where ``generated < min_tokens``; greedy where temperature is 0, else
    softmax(logits / T) cut to the top-p mass, drawn with the sequence's own generator when it has a seed."""
    logits = logits.float()
    if sample_vocab < logits.shape[1]:
        logits[:, sample_vocab:] = float("-inf")
    banned = [i for i, s in enumerate(seqs) if s.generated < s.params.min_tokens]
    if banned and eos_ids:
        rows = torch.tensor(banned, device=logits.device)[:, None]
        logits[rows, torch.tensor(sorted(eos_ids), device=logits.device)[None, :]] = float("-inf")
    temps = [s.params.temperature for s in seqs]
    out = logits.argmax(dim=-1)
    hot = [i for i, t in enumerate(temps) if t > 0]
    if hot:
        rows = torch.tensor(hot, device=logits.device)
        t = torch.tensor([temps[i] for i in hot], device=logits.device)[:, None]
        probs = torch.softmax(logits[rows] / t, dim=-1)
        top_p = torch.tensor([seqs[i].params.top_p for i in hot], device=logits.device)
        if bool((top_p < 1).any()):
            probs = _top_p(probs, top_p)
        drawn = torch.empty(len(hot), dtype=torch.long, device=logits.device)
        plain = [j for j, i in enumerate(hot) if seqs[i].generator is None]
        if plain:
            drawn[plain] = torch.multinomial(probs[plain], 1).squeeze(1)
        for j, i in enumerate(hot):
            if seqs[i].generator is not None:
                drawn[j] = torch.multinomial(probs[j:j + 1].cpu(), 1, generator=seqs[i].generator).item()
        out[rows] = drawn
    return out.tolist()


def _top_p(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (the most likely one always)."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the tokens more likely than this one
    sorted_p[before >= top_p[:, None]] = 0
    return torch.zeros_like(probs).scatter_(1, order, sorted_p)


# ---- the worker -------------------------------------------------------------------------------------------------

class Engine:
    """``submit()`` sequences from any thread; ``on_step(emissions)`` is called from the worker thread after the
    prefill of newcomers and after every decode step."""

    def __init__(self, model, *, device: torch.device | str, max_batch: int, eos_ids: frozenset[int],
                 sample_vocab: int, pad_id: int, on_step: Callable[[list[Emission]], None],
                 max_prefill_tokens: int = 16384):
        self.model = model
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.eos_ids = eos_ids
        self.sample_vocab = sample_vocab
        self.pad_id = pad_id
        self.on_step = on_step
        self.max_prefill_tokens = max_prefill_tokens
        self._pending: deque[Sequence] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="hfserve-engine", daemon=True)
        # the running batch: sequences, their cached real-token counts n_i, last tokens, and the cache
        self._seqs: list[Sequence] = []
        self._counts: list[int] = []
        self._last: list[int] = []
        self._cache = None
        self._stats = {"steps": 0, "tokens": 0, "since": time.monotonic()}
        self._logits_arg = _logits_arg(model)

    # -- from any thread ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout_s)

    def submit(self, seq: Sequence) -> None:
        if seq.params.seed is not None:
            seq.generator = torch.Generator().manual_seed(seq.params.seed)
        with self._cv:
            self._pending.append(seq)
            self._cv.notify()

    @property
    def running(self) -> int:
        return len(self._seqs)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    # -- the worker thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                newcomers = self._take(block=not self._seqs)
                if newcomers is None:
                    return
                try:
                    if newcomers:
                        self._admit(newcomers)
                    if self._seqs:
                        self._step()
                except Exception as e:  # a failed step fails its requests, not the server
                    log.exception("generation step failed")
                    failed = newcomers + [s for s in self._seqs if s not in newcomers]
                    self._reset()
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()  # after an out-of-memory error, give the cache back
                    self.on_step([Emission(s, None, "error", f"{type(e).__name__}: {e}") for s in failed])
                self._log_stats()

    def _take(self, block: bool) -> list[Sequence] | None:
        """Waiting sequences that fit in the batch (all of them when none runs, within the prefill budget); None
        once stopping."""
        with self._cv:
            while block and not self._pending and not self._stopping:
                self._cv.wait()
            if self._stopping:
                return None
            taken: list[Sequence] = []
            longest = 0
            while self._pending and len(self._seqs) + len(taken) < self.max_batch:
                seq = self._pending[0]
                if seq.cancelled:
                    self._pending.popleft()
                    continue
                longest_then = max(longest, len(seq.prompt_ids))
                if taken and longest_then * (len(taken) + 1) > self.max_prefill_tokens:
                    break
                taken.append(self._pending.popleft())
                longest = longest_then
            return taken

    def _admit(self, seqs: list[Sequence]) -> None:
        """Prefill `seqs` together, emit their first tokens, and join the unfinished ones to the running batch."""
        lens = [len(s.prompt_ids) for s in seqs]
        width = max(lens)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - lens[i]:] = torch.tensor(s.prompt_ids, dtype=torch.long)
        mask = padding_mask(lens, width, "cpu")
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = new_cache()
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                         **self._logits_arg)
        tokens = sample(out.logits[:, -1, :], seqs, self.eos_ids, self.sample_vocab)
        emissions, keep = self._finish(seqs, tokens)
        self.on_step(emissions)
        if not keep:
            return
        cache = out.past_key_values
        if len(keep) < len(seqs):
            cache = select_rows(cache, torch.tensor(keep, device=self.device), max(lens[i] for i in keep))
        new_seqs = [seqs[i] for i in keep]
        if self._cache is None:
            self._cache = cache
        else:
            self._cache = join_caches(self._cache, cache)
        self._seqs += new_seqs
        self._counts += [lens[i] for i in keep]
        self._last += [tokens[i] for i in keep]

    def _step(self) -> None:
        """One decode step for every running sequence."""
        if any(s.cancelled for s in self._seqs):
            self._drop([i for i, s in enumerate(self._seqs) if s.cancelled])
            if not self._seqs:
                return
        width = cache_layers(self._cache)[0][0].shape[2] + 1
        out = self.model(input_ids=torch.tensor(self._last, device=self.device)[:, None],
                         attention_mask=padding_mask([n + 1 for n in self._counts], width, self.device),
                         position_ids=torch.tensor(self._counts, device=self.device)[:, None],
                         past_key_values=self._cache, use_cache=True, **self._logits_arg)
        self._cache = out.past_key_values
        self._counts = [n + 1 for n in self._counts]
        tokens = sample(out.logits[:, -1, :], self._seqs, self.eos_ids, self.sample_vocab)
        self._stats["steps"] += 1
        emissions, keep = self._finish(self._seqs, tokens)
        self._last = tokens
        self.on_step(emissions)
        if len(keep) < len(self._seqs):
            self._drop([i for i in range(len(self._seqs)) if i not in set(keep)])

    def _finish(self, seqs: list[Sequence], tokens: list[int]) -> tuple[list[Emission], list[int]]:
        """Count each sequence's new token; its emission (with the finish reason if it was the last) and the
        indices of the sequences that go on."""
        emissions, keep = [], []
        for i, (s, tok) in enumerate(zip(seqs, tokens)):
            s.generated += 1
            finish = None
            if s.generated >= s.params.max_tokens:
                finish = "length"
            elif tok in self.eos_ids and not s.params.ignore_eos:
                finish = "stop"
            emissions.append(Emission(s, tok, finish))
            if finish is None and not s.cancelled:
                keep.append(i)
        self._stats["tokens"] += len(tokens)
        return emissions, keep

    def _drop(self, rows: list[int]) -> None:
        gone = set(rows)
        keep = [i for i in range(len(self._seqs)) if i not in gone]
        if not keep:
            self._reset()
            return
        self._seqs = [self._seqs[i] for i in keep]
        self._counts = [self._counts[i] for i in keep]
        self._last = [self._last[i] for i in keep]
        self._cache = select_rows(self._cache, torch.tensor(keep, device=self.device), max(self._counts))

    def _reset(self) -> None:
        self._seqs, self._counts, self._last, self._cache = [], [], [], None

    def _log_stats(self) -> None:
        now = time.monotonic()
        elapsed = now - self._stats["since"]
        if elapsed < STATS_INTERVAL_S:
            return
        log.info("running %d, waiting %d, %.1f generated tokens/s, %.1f steps/s", len(self._seqs),
                 len(self._pending), self._stats["tokens"] / elapsed, self._stats["steps"] / elapsed)
        self._stats = {"steps": 0, "tokens": 0, "since": now}
