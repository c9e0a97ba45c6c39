"""BatchLLM's offline scheduler: global prefix sharing and throughput-oriented token batching
(Zheng et al., arXiv 2412.03594).

The whole batch is known up front, so instead of hoping an LRU prefix cache keeps shared prefixes alive, BatchLLM
plans the sharing:

1. a compact prefix tree (radix tree) over every prompt's token ids;
2. the tree is flattened to ONE shared-prefix level: each request joins at most one group, a group's members share
   its prefix, and the total saving ``sum_g (|g| - 1) * len(prefix_g)`` (the paper's reuse objective) is maximised;
   here by an exact dynamic programme over the tree (the paper merges nodes greedily towards the same objective);
   prefixes are counted in whole KV blocks, and never include a prompt's last token (it must be computed to sample);
3. groups run in order of estimated decode/prefill ratio, DESCENDING (``max_tokens`` over the prefill tokens the
   group computes): decode-heavy groups first, so that their decodes later mix with other groups' prefill chunks;
4. a group's shared prefix is prefilled ONCE as an internal request (id ``"batchllm-prefix/<n>"``, chunks never
   sample), its members' block tables start with its blocks (reference counts), and the blocks are freed as soon as
   the group's last member ends: a short prefix-KV lifetime and no LRU reuse across groups;
5. memory-centric token batching: every step, all running decodes, then prefill chunks (running prefills, then new
   requests in plan order) fill the token budget ``max_num_batched_tokens``; requests are admitted while the
   projected KV (each admitted request's blocks up to ``max_tokens``, shared blocks once) stays within
   ``kv_admission_threshold`` of the pool. As the projection covers every admitted request's whole life, running
   requests never run out of blocks (no preemption); with nothing running the threshold is waived, so that the
   queue head, which ``add_request`` checked fits the pool, is always admitted.

The horizontally fused prefix-shared attention kernel of the paper is a GPU kernel and out of scope here.
Offline use: ``add_requests(batch)`` (or ``add_request`` then ``plan()``), then step as any scheduler. Requests added
later are planned into new groups at the next step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from thrifty.serve.kv.block_manager import BlockManager
from thrifty.serve.sched.base import ScheduledChunk, Scheduler, SchedulerConfig, SchedulerOutput
from thrifty.serve.sequence import Request, RequestStatus

__all__ = [
    "BatchLLMScheduler",
    "PrefixGroup",
    "PrefixPlan",
    "PrefixTreeNode",
    "build_prefix_tree",
    "plan_prefix_groups",
]

PREFIX_ID = "batchllm-prefix/"


@dataclass
class PrefixTreeNode:
    """A node of the compact prefix tree: ``depth`` tokens from the root; ``ends`` lists the keys ending here."""

    depth: int
    children: list[PrefixTreeNode] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    parent: PrefixTreeNode | None = None
    num_leaves: int = 0


def _common_prefix_len(keys: Sequence[Sequence[int]], members: list[int], start: int) -> int:
    """Length of the common prefix of ``keys[i]`` for ``i`` in ``members`` (all known to agree before ``start``)."""
    lo = min(keys[i] for i in members)
    hi = max(keys[i] for i in members)  # the lexicographic extremes share exactly the common prefix of all
    n = min(len(lo), len(hi))
    k = start
    while k < n and lo[k] == hi[k]:
        k += 1
    return k


def build_prefix_tree(keys: Sequence[Sequence[int]]) -> list[PrefixTreeNode]:
    """Compact prefix tree of ``keys``; returns its nodes in pre-order (the root, depth 0, first)."""
    keys = [list(k) for k in keys]
    root = PrefixTreeNode(0)
    nodes = [root]
    stack: list[tuple[PrefixTreeNode, list[int]]] = [(root, list(range(len(keys))))]
    while stack:
        node, members = stack.pop()
        node.num_leaves = len(members)
        by_token: dict[int, list[int]] = {}
        for i in members:
            if len(keys[i]) == node.depth:
                node.ends.append(i)
            else:
                by_token.setdefault(keys[i][node.depth], []).append(i)
        for group in by_token.values():
            child = PrefixTreeNode(_common_prefix_len(keys, group, node.depth + 1), parent=node)
            node.children.append(child)
            nodes.append(child)
            stack.append((child, group))
    return nodes


@dataclass
class PrefixPlan:
    """One-level sharing plan: groups as ``(prefix_len, member indices)``, its saving in tokens, and the saving of
    full multi-level sharing (an upper bound)."""

    groups: list[tuple[int, list[int]]]
    savings: int
    multi_level_savings: int


def plan_prefix_groups(keys: Sequence[Sequence[int]], block_size: int = 1) -> PrefixPlan:
    """Flatten the prefix tree of ``keys`` to one sharing level, maximising ``sum_g (|g| - 1) * len(prefix_g)`` with
    prefix lengths rounded down to multiples of ``block_size``.

    Returns the groups as ``(prefix_len, member indices)`` (members left ungrouped are not listed), the saving, and
    the multi-level saving of the whole tree (every node's tokens computed once) as an upper bound.
    """
    nodes = build_prefix_tree(keys)

    def aligned(node: PrefixTreeNode) -> int:
        return node.depth // block_size * block_size

    # value[node][x]: best saving inside node's subtree when its ungrouped keys join an ancestor group of prefix x
    value: dict[int, dict[int, int]] = {}
    chosen_value: dict[int, int] = {}
    ancestors: dict[int, list[int]] = {id(nodes[0]): [0]}
    for node in nodes[1:]:
        parent = node.parent
        assert parent is not None
        up = ancestors[id(parent)]
        d = aligned(parent)
        ancestors[id(node)] = up if d == up[-1] else [*up, d]
    for node in reversed(nodes):
        d = aligned(node)
        own = ancestors[id(node)]
        cands = own if d == own[-1] else [*own, d]
        chosen_value[id(node)] = -d + len(node.ends) * d + sum(value[id(c)][d] for c in node.children)
        value[id(node)] = {}
        for x in cands:
            not_chosen = len(node.ends) * x + sum(value[id(c)][x] for c in node.children)
            value[id(node)][x] = max(not_chosen, chosen_value[id(node)]) if d > x else not_chosen
    groups: list[tuple[int, list[int]]] = []
    members_of: dict[int, list[int]] = {}
    stack: list[tuple[PrefixTreeNode, int, int | None]] = [(nodes[0], 0, None)]
    while stack:
        node, x, owner = stack.pop()
        d = aligned(node)
        if d > x:
            not_chosen = len(node.ends) * x + sum(value[id(c)][x] for c in node.children)
            if chosen_value[id(node)] > not_chosen:
                x, owner = d, id(node)
                members_of[owner] = []
                groups.append((d, members_of[owner]))
        if owner is not None:
            members_of[owner].extend(node.ends)
        stack.extend((c, x, owner) for c in reversed(node.children))
    for _, members in groups:
        members.sort()
    multi = sum((n.num_leaves - 1) * (aligned(n) - aligned(n.parent)) for n in nodes[1:] if n.parent is not None)
    return PrefixPlan(groups, value[id(nodes[0])][0], multi)


@dataclass(eq=False)
class PrefixGroup:
    """Requests sharing one prefix of ``prefix_len`` tokens (0: no sharing), scheduled together."""

    group_id: int
    prefix_len: int
    members: list[Request]
    decode_ratio: float
    prefix_request: Request | None = None
    unfinished: int = 0
    prefix_start: float | None = None
    prefix_end: float | None = None
    prefix_start_step: int | None = None
    prefix_end_step: int | None = None

    @property
    def prefix_ready(self) -> bool:
        pre = self.prefix_request
        return pre is None or (pre.status is RequestStatus.RUNNING and pre.num_computed_tokens == pre.num_tokens)


class BatchLLMScheduler(Scheduler):
    """Offline global prefix sharing with decode-heavy-first groups and memory-centric admission. Reads
    ``max_num_batched_tokens``, ``max_num_seqs`` (a cap kept for safety) and ``kv_admission_threshold``.

    Attributes:
        groups: every planned group, in scheduling order.
        planned_saved_tokens / planned_prompt_tokens: the plan's prefill saving and total prompt tokens.
        shared_tokens / prefix_tokens_computed: tokens members took from shared blocks and tokens prefixes computed.
        peak_used_blocks: most KV blocks in use after any step's admission.
    """

    name = "batchllm"

    def __init__(self, block_manager: BlockManager, config: SchedulerConfig | None = None) -> None:
        super().__init__(block_manager, config)
        self.groups: list[PrefixGroup] = []
        self._group_of: dict[str, PrefixGroup] = {}
        self._unplanned: list[Request] = []
        self._prefixes: list[Request] = []
        self.planned_saved_tokens = 0
        self.planned_prompt_tokens = 0
        self.planned_multi_level_saved_tokens = 0
        self.shared_tokens = 0
        self.prefix_tokens_computed = 0
        self.peak_used_blocks = 0
        self._now = 0.0

    # ------------------------------------------------------------------ planning
    def add_request(self, req: Request) -> None:
        super().add_request(req)
        self._unplanned.append(req)

    def add_requests(self, batch: Iterable[Request]) -> list[PrefixGroup]:
        """Add a whole offline batch and plan it; returns its groups in scheduling order."""
        for req in batch:
            self.add_request(req)
        return self.plan()

    def plan(self) -> list[PrefixGroup]:
        """Group the requests added since the last plan by shared prefix and order the groups decode-heavy first;
        the waiting queue follows that order (preempted requests stay at its front)."""
        reqs, self._unplanned = self._unplanned, []
        if not reqs:
            return []
        bs = self.block_manager.block_size
        plan = plan_prefix_groups([r.prompt_token_ids[:-1] for r in reqs], bs)
        self.planned_saved_tokens += plan.savings
        self.planned_multi_level_saved_tokens += plan.multi_level_savings
        self.planned_prompt_tokens += sum(r.num_prompt_tokens for r in reqs)
        grouped: set[int] = set()
        new: list[PrefixGroup] = []
        for prefix_len, idx in plan.groups:
            grouped.update(idx)
            members = [reqs[i] for i in idx]
            new.append(self._make_group(prefix_len if len(members) > 1 else 0, members))
        new.extend(self._make_group(0, [r]) for i, r in enumerate(reqs) if i not in grouped)
        new.sort(key=lambda g: -g.decode_ratio)
        planned = {r.request_id for r in reqs}
        front = [r for r in self.waiting if r.request_id not in planned]
        for g in new:
            g.group_id = len(self.groups)
            self.groups.append(g)
            if g.prefix_len:
                g.prefix_request = Request(
                    f"{PREFIX_ID}{g.group_id}", g.members[0].prompt_token_ids[: g.prefix_len], 1, payload=g
                )
        self.waiting = deque(front + [m for g in new for m in g.members if m.status is RequestStatus.WAITING])
        return new

    def _make_group(self, prefix_len: int, members: list[Request]) -> PrefixGroup:
        prefill = prefix_len + sum(m.num_prompt_tokens - prefix_len for m in members)
        ratio = sum(m.max_tokens for m in members) / prefill
        group = PrefixGroup(-1, prefix_len, members, ratio, unfinished=len(members))
        for m in members:
            self._group_of[m.request_id] = group
        return group

    @property
    def token_saving_ratio(self) -> float:
        """Planned prefill tokens saved by sharing, over all prompt tokens (BatchLLM's token-saving ratio)."""
        return self.planned_saved_tokens / self.planned_prompt_tokens if self.planned_prompt_tokens else 0.0

    @property
    def realized_saved_tokens(self) -> int:
        """Prompt tokens not computed thanks to shared prefixes so far (member shares minus prefix prefills)."""
        return self.shared_tokens - self.prefix_tokens_computed

    @property
    def prefix_lifetimes(self) -> list[tuple[int, float, int]]:
        """``(group_id, time, steps)`` from each freed prefix's first schedule to the end of its last member."""
        return [
            (g.group_id, g.prefix_end - g.prefix_start, g.prefix_end_step - g.prefix_start_step)
            for g in self.groups
            if g.prefix_end is not None
            and g.prefix_start is not None
            and g.prefix_end_step is not None
            and g.prefix_start_step is not None
        ]

    # ------------------------------------------------------------------ memory projection
    def _lifetime_blocks(self, req: Request, shared_blocks: int) -> int:
        return self.block_manager.blocks_for(req.num_prompt_tokens + req.max_tokens - 1) - shared_blocks

    def _projected_blocks(self) -> int:
        total = sum(len(p.block_table) for p in self._prefixes)
        for req in self.running:
            group = self._group_of[req.request_id]
            total += self._lifetime_blocks(req, group.prefix_len // self.block_manager.block_size)
        return total

    # ------------------------------------------------------------------ stepping
    def _on_computed(self, req: Request) -> None:
        """No LRU prefix cache: sharing is planned, and a prefix's blocks die with its group."""

    def _schedule(self, now: float) -> SchedulerOutput:
        if self._unplanned:
            self.plan()
        out = SchedulerOutput()
        bm = self.block_manager
        cfg = self.config
        self._decode_running(out)
        left = cfg.max_num_batched_tokens - out.num_batched_tokens
        for pre in self._prefixes:
            if left > 0 and pre.num_computed_tokens < pre.num_tokens:
                left -= self._prefix_chunk(pre, left, out)
        for req in self.running:
            if left > 0 and req.is_prefilling:
                n = min(req.remaining_prefill, left)
                out.chunks.append(self._chunk(req, n))
                left -= n
        threshold = cfg.kv_admission_threshold * bm.num_blocks
        projected = self._projected_blocks()
        while self.waiting and left > 0:
            req = self.waiting[0]
            group = self._group_of[req.request_id]
            pre = group.prefix_request
            if pre is not None and pre.status is RequestStatus.WAITING:
                need = bm.blocks_for(pre.num_tokens)
                if (self.running and projected + need > threshold) or not bm.can_allocate(pre):
                    break
                bm.allocate(pre)
                pre.status = RequestStatus.RUNNING
                group.prefix_start, group.prefix_start_step = now, self.num_steps
                self._prefixes.append(pre)
                projected += need
                left -= self._prefix_chunk(pre, left, out)
                continue
            if not group.prefix_ready or len(self.running) >= cfg.max_num_seqs:
                break
            shared = group.prefix_len // bm.block_size
            need = self._lifetime_blocks(req, shared)
            fresh = bm.blocks_for(req.num_tokens) - shared
            if (self.running and projected + need > threshold) or fresh > bm.num_free_blocks - bm.watermark_blocks:
                break
            self.waiting.popleft()
            if pre is not None:
                bm.share(req, pre.block_table, group.prefix_len)
                bm.append_slots(req, req.num_tokens - group.prefix_len)
                self.shared_tokens += group.prefix_len
            else:
                bm.allocate(req)
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            projected += need
            n = min(req.remaining_prefill, left)
            out.chunks.append(self._chunk(req, n))
            left -= n
        self.peak_used_blocks = max(self.peak_used_blocks, bm.num_used_blocks)
        return out

    def _prefix_chunk(self, pre: Request, left: int, out: SchedulerOutput) -> int:
        """Schedule the next chunk of a shared prefix (it never samples); returns its size."""
        n = min(pre.num_tokens - pre.num_computed_tokens, left)
        out.chunks.append(ScheduledChunk(pre, n, pre.num_computed_tokens, False))
        self.prefix_tokens_computed += n
        return n

    def schedule(self, now: float = 0.0) -> SchedulerOutput:
        self._now = now
        return super().schedule(now)

    def abort(self, request_id: str, now: float | None = None) -> Request | None:
        req = self.requests.get(request_id)
        if req is not None and req in self._unplanned:
            self._unplanned.remove(req)
        return super().abort(request_id, now)

    def _finish(self, req: Request, reason: str, now: float | None) -> None:
        super()._finish(req, reason, now)
        group = self._group_of.pop(req.request_id, None)
        if group is None:  # aborted before planning
            return
        group.unfinished -= 1
        pre = group.prefix_request
        if group.unfinished == 0 and pre is not None and pre.status is not RequestStatus.FINISHED:
            if pre in self._prefixes:
                self._prefixes.remove(pre)
                self.block_manager.free(pre)
                group.prefix_end = self._now if now is None else now
                group.prefix_end_step = self.num_steps
            pre.status = RequestStatus.FINISHED
