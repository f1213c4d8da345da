"""MetaHeac network: fused embeddings, hybrid experts and critics, two task-aware gates.

Zhu et al., KDD 2021, "Learning to Expand Audience via Meta Hybrid Experts and
Critics". The network only: no data handling, no device code.

Parameters can be passed in explicitly (``forward(inputs, params)``) so the
meta-learning step can run the model with fast weights without mutating the
layer. Every op used here has a double gradient in Paddle 3.3.1 (gather, not
F.embedding; a hand-written softmax; matmul/bmm, not einsum; the loss in
metaheac/loss.py), so the second-order MAML gradient is exact.
"""
import math

import numpy as np
import paddle
import paddle.nn as nn

# Lookup gates: std of the random starting logits. Sharp enough that each
# category is routed to a few experts from the first step (docs/experiments.md).
GATE_INIT_STD = 2.0


def softmax(z):
    """Softmax over the last axis; F.softmax has no double grad in Paddle 3.3.1."""
    e = paddle.exp(z - z.max(axis=-1, keepdim=True).detach())
    return e / e.sum(axis=-1, keepdim=True)


def affine(x, w, b, ones):
    """x [B, I] @ w [I, O] + b [O], the bias through ones [B, 1] @ b [1, O]."""
    return paddle.matmul(x, w) + paddle.matmul(ones, b.reshape([1, -1]))


def _lookup(table, rows):
    """Rows [B, n] of table [R, D] -> [B, n, D]."""
    return paddle.gather(table, rows.reshape([-1])).reshape([-1, rows.shape[1], table.shape[1]])


class MetaHeacNet(nn.Layer):
    """Hybrid experts mixed by a task gate, critics mixed by a second gate.

    Shapes: B batch, C id columns, E embed_dim, F user fields (static +
    sequence), Fs static, Fq sequence, W total sequence width, Fa ad fields,
    Fg ad fields the gates see, K experts, H expert output size, O critics.
    """

    def __init__(self, schema, embed_dim, mlp_dims, num_expert, num_output, gate_fields=None, wide=False,
                 gate="mlp"):
        super().__init__()
        self.schema = schema
        self.embed_dim = E = embed_dim
        self.num_expert = K = num_expert
        self.num_output = num_output
        self.gate = gate
        self.mlp_dims = list(mlp_dims)
        self.split_sizes = [len(schema.static), schema.seq_width, len(schema.ad)]
        F = schema.num_user_fields
        H = self.mlp_dims[-1]
        # The gates see the mean user embedding and the embeddings of these ad
        # fields. Ids a new campaign never shares with past ones (its own
        # campaign id) have an untrained embedding at test time: noise to the gate.
        self.gate_positions = schema.gate_positions(gate_fields)
        gate_in = (len(self.gate_positions) + 1) * E

        # Each parameter's group (embedding, wide, gate, expert, critic) is named
        # where it is created: learning-rate multipliers and what fine-tuning
        # adapts are set per group (param_group).
        self._groups = {}
        self._add("embedding", "embedding", self._embedding_table(schema, E))
        # Tables indexed by the same rows as `embedding` (the meta step and
        # fine-tuning cut all of them to the rows a task touches).
        self.row_tables = ["embedding"]
        if wide:
            # One weight per id and expert, from 0: each expert also carries a
            # logistic regression over the user's ids. On a few thousand rows per
            # kind of campaign, a linear scorer of the ids learns more per row
            # than an MLP of embeddings (docs/experiments.md).
            self._add("wide", "wide", self.create_parameter(
                [schema.num_rows, K], default_initializer=nn.initializer.Constant(0.0)))
            self.row_tables.append("wide")
        # First fused-table row each row table holds (row_base): the gate table
        # holds the ad fields' rows only.
        self.gate_base = schema.ad[0].offset if gate == "lookup" else 0
        if gate == "lookup":
            # Gate logits looked up per gate-field id ([K expert | O critic]
            # columns), summed over the gate fields. Random starting logits route
            # each category to its own few experts from the first step, so the
            # experts specialise at once (like hash routing); learnt routing from
            # a uniform start must first break the experts' symmetry, and did
            # not (docs/experiments.md). Only ad rows are read, so only they are
            # kept: the user rows would be weights, gradients and Adam moments
            # that nothing reads. Drawn for every row and cut, so the random
            # stream is that of a whole table.
            logits = paddle.normal(0.0, GATE_INIT_STD, [schema.num_rows, K + num_output])[self.gate_base:]
            table = self.create_parameter(logits.shape, default_initializer=nn.initializer.Constant(0.0))
            table.set_value(logits)
            self._add("gate_table", "gate", table)
            self.row_tables.append("gate_table")
        # Experts, computed for all K at once. Layer 0 is one fused matmul
        # [B, F*E] @ [F*E, K*h0]; later layers are batched over experts (bmm).
        dims = [F * E] + self.mlp_dims
        self._add("expert_w0", "expert", self._weight([dims[0], K * dims[1]], dims[0], dims[1]))
        self._add("expert_b0", "expert", self._bias([K * dims[1]]))
        for i in range(1, len(self.mlp_dims)):
            self._add(f"expert_w{i}", "expert", self._weight([K, dims[i], dims[i + 1]], dims[i], dims[i + 1]))
            self._add(f"expert_b{i}", "expert", self._bias([K, 1, dims[i + 1]]))
        # Two gates on the task representation: one mixes experts, one critics.
        for name, out in (("expert_gate", K), ("critic_gate", num_output)) if gate == "mlp" else ():
            self._add(f"{name}_w0", "gate", self._weight([gate_in, H], gate_in, H))
            self._add(f"{name}_b0", "gate", self._bias([H]))
            self._add(f"{name}_w1", "gate", self._weight([H, out], H, out))
            self._add(f"{name}_b1", "gate", self._bias([out]))
        # O critics, each a logistic head on the mixed expert output.
        self._add("critic_w", "critic", self._weight([H, num_output], H, 1))
        self._add("critic_b", "critic", self._bias([num_output]))

        def buffer(name, array):
            self.register_buffer(name, paddle.to_tensor(array), persistable=False)

        buffer("col_offsets", schema.col_offsets)                       # [C]
        buffer("seq_field_of_col", schema.seq_field_of_col)             # [W]
        buffer("seq_pos", schema.seq_pos)                               # [W]
        pool = np.zeros((len(schema.sequence), schema.seq_width), paddle.get_default_dtype())
        pool[schema.seq_field_of_col, np.arange(schema.seq_width)] = 1.0
        buffer("seq_pool", pool)                                        # [Fq, W]
        buffer("gate_ad_pos", np.array(self.gate_positions, np.int64))  # [Fg]
        for i, (cols, strides) in enumerate(schema.cross_parts):         # crosses of ad fields
            buffer(f"cross_cols{i}", cols)
            buffer(f"cross_strides{i}", strides)

    # ------------------------------------------------------------ init --
    def _add(self, name, group, param):
        setattr(self, name, param)
        self._groups[name] = group

    def param_group(self, name):
        """The group of parameter `name`: embedding, wide, gate, expert or critic."""
        return self._groups[name]

    def row_base(self, name):
        """The fused-table row that row 0 of row table `name` holds."""
        return self.gate_base if name == "gate_table" else 0

    def _weight(self, shape, fan_in, fan_out):
        init = nn.initializer.XavierUniform(fan_in=fan_in, fan_out=fan_out)
        return self.create_parameter(shape, default_initializer=init)

    def _bias(self, shape):
        return self.create_parameter(shape, is_bias=True, default_initializer=nn.initializer.Constant(0.0))

    def _embedding_table(self, schema, E):
        # One table for all fields, each field's block initialised as its own
        # Xavier-uniform table would be (PaddleRec).
        table = self.create_parameter([schema.num_rows, E])
        blocks = [paddle.uniform([f.vocab_size, E], min=-math.sqrt(6.0 / (f.vocab_size + E)),
                                 max=math.sqrt(6.0 / (f.vocab_size + E))) for f in schema.fields]
        table.set_value(paddle.concat(blocks, axis=0))
        return table

    # --------------------------------------------------------- forward --
    def table_rows(self, static_ids, seq_ids, ad_ids):
        """Per-field ids of the data -> rows of the fused table [B, C], with one
        column per cross of ad fields appended (as schema.table_rows)."""
        ids = paddle.concat([static_ids, seq_ids, ad_ids], axis=1).astype("int64")
        rows = ids + self.col_offsets
        crossed = [f.offset + (paddle.gather(ids, getattr(self, f"cross_cols{i}"), axis=1)
                               * getattr(self, f"cross_strides{i}")).sum(axis=1, keepdim=True)
                   for i, f in enumerate(self.schema.crosses)]                           # [B, 1] each
        return paddle.concat([rows, *crossed], axis=1) if crossed else rows

    def forward(self, inputs, params=None):
        """inputs: [static_ids [B, Fs], seq_ids [B, W], seq_lengths [B, Fq], ad_ids [B, Fa]]
        (PaddleRec's order). Returns the click probability [B]."""
        static_ids, seq_ids, seq_lengths, ad_ids = inputs
        return self.forward_rows(self.table_rows(static_ids, seq_ids, ad_ids), seq_lengths, params)

    def _represent(self, rows, seq_lengths, p):
        """User-field embeddings [B, F, E], the gate-field rows [B, Fg] and the
        wide scores [B, K] (None without the wide part)."""
        table = p["embedding"]
        # One gather per group rather than one gather then a split: the split's
        # backward (a concat into a zero tensor) costs more than the gathers.
        # Shapes use -1 for the batch so the layer also exports with a dynamic batch.
        sizes = [n for n in self.split_sizes if n]
        groups = paddle.split(rows, sizes, axis=1) if len(sizes) > 1 else [rows]
        n_static, width, n_ad = self.split_sizes
        static_rows = groups.pop(0) if n_static else None                                # [B, Fs]
        seq_rows = groups.pop(0) if width else None                                      # [B, W]
        ad_rows = groups.pop(0)                                                          # [B, Fa]
        if len(self.gate_positions) < n_ad:
            ad_rows = paddle.gather(ad_rows, self.gate_ad_pos, axis=1)                   # [B, Fg]

        pool = None
        if width:
            # Masked mean of each sequence field over its first `length` ids, as one
            # bmm with a per-row pooling matrix (cheaper than weighting [B, W, E]).
            length = paddle.gather(seq_lengths.astype("int64"), self.seq_field_of_col, axis=1)  # [B, W]
            weight = ((self.seq_pos < length).astype(table.dtype)
                      / paddle.clip(length, min=1).astype(table.dtype))                  # [B, W]
            pool = self.seq_pool.unsqueeze(0) * weight.unsqueeze(1)                      # [B, Fq, W]

        def user_fields(t):  # the user's static ids and pooled lists in table t -> [B, F, D]
            parts = [_lookup(t, static_rows)] if n_static else []                        # [B, Fs, D]
            if width:
                parts.append(paddle.bmm(pool, _lookup(t, seq_rows)))                     # [B, Fq, D]
            return paddle.concat(parts, axis=1) if len(parts) > 1 else parts[0]

        user = user_fields(table)                                                        # [B, F, E]
        wide = user_fields(p["wide"]).sum(axis=1) if "wide" in p else None               # [B, K]
        return user, ad_rows, wide

    def _gates(self, user, gate_rows, p, ones):
        """The expert gate [B, K] and critic gate [B, O] of the gate-field rows [B, Fg]."""
        if self.gate == "lookup":  # per-id logits, summed over the gate fields
            K = self.num_expert
            logits = _lookup(p["gate_table"], gate_rows).sum(axis=1)                     # [B, K+O]
            return softmax(logits[:, :K]), softmax(logits[:, K:])
        # task representation: mean user-field embedding + gate-field embeddings
        ad = _lookup(p["embedding"], gate_rows)                                          # [B, Fg, E]
        task = paddle.concat([user.mean(axis=1, keepdim=True), ad], axis=1)
        task = task.reshape([-1, (len(self.gate_positions) + 1) * self.embed_dim])       # [B, (Fg+1)E]
        return self._mlp_gate(task, p, "expert_gate", ones), self._mlp_gate(task, p, "critic_gate", ones)

    def _experts(self, user, p, ones):
        """Expert outputs [B, K, H] of the user-field embeddings [B, F, E]."""
        K = self.num_expert
        user = user.reshape([-1, self.schema.num_user_fields * self.embed_dim])          # [B, F*E]
        relu = paddle.nn.functional.relu
        h = relu(affine(user, p["expert_w0"], p["expert_b0"], ones)).reshape([-1, K, self.mlp_dims[0]])
        if len(self.mlp_dims) == 1:
            return h                                                                       # [B, K, h0]
        h = h.transpose([1, 0, 2])                                                         # [K, B, h0]
        ones_k = ones.unsqueeze(0).expand([K, -1, 1])                                      # [K, B, 1]
        for i in range(1, len(self.mlp_dims)):
            h = relu(paddle.bmm(h, p[f"expert_w{i}"]) + paddle.bmm(ones_k, p[f"expert_b{i}"]))  # [K, B, hi]
        return h.transpose([1, 0, 2])                                                      # [B, K, H]

    @staticmethod
    def _mix(h, wide, expert_gate, critic_gate, p):
        """Click probabilities [B, R] under R routings: the critics read the
        experts' outputs h [B, K, H] mixed by each routing's expert gate
        [B, R, K], and are mixed by its critic gate [B, R, O]. One bmm mixes
        the experts for every routing (cheaper than the element-wise product
        summed over K)."""
        n_routes, hidden = expert_gate.shape[1], h.shape[2]
        mixed = paddle.bmm(expert_gate, h).reshape([-1, hidden])                          # [B R, H]
        ones = paddle.ones_like(mixed[:, :1])                                             # [B R, 1]
        n_critics = p["critic_w"].shape[1]
        logits = affine(mixed, p["critic_w"], p["critic_b"], ones).reshape([-1, n_routes, n_critics])  # [B, R, O]
        if wide is not None:  # the experts' regressions, mixed by the same gate
            logits = logits + (expert_gate * wide.unsqueeze(1)).sum(axis=2, keepdim=True)  # [B, R, O]
        critics = paddle.nn.functional.sigmoid(logits)
        return (critics * critic_gate).sum(axis=2)                                        # [B, R]

    def _inputs(self, rows, seq_lengths, params):
        """The parameter dict, _represent's outputs, ones [B, 1] and the row
        base of gate_rows: the network's own gate table holds only the ad rows
        (row_base); given parameters hold what `rows` index (rows.cut)."""
        p = params if params is not None else dict(self.named_parameters())
        user, gate_rows, wide = self._represent(rows, seq_lengths, p)                     # [B, F, E]
        shift = self.gate_base if params is None else 0
        if shift:
            gate_rows = gate_rows - shift
        # Biases are added as ones[B, 1] @ b[1, H]: Paddle's backward of a
        # broadcast add (a reduction over the batch) costs more than the matmul.
        ones = paddle.ones_like(rows[:, :1], dtype=p["embedding"].dtype)                  # [B, 1]
        return p, user, gate_rows, wide, ones, shift

    def forward_rows(self, rows, seq_lengths, params=None):
        """rows [B, C] index the row tables (params['embedding'] and, when
        present, 'wide' and 'gate_table'): the network's own (params None),
        whole tables as rows.cut gives them, or slices of the rows a task
        touches (rows.cut with rows) with rows remapped into them."""
        p, user, gate_rows, wide, ones, _ = self._inputs(rows, seq_lengths, params)
        h = self._experts(user, p, ones)                                                   # [B, K, H]
        expert_gate, critic_gate = self._gates(user, gate_rows, p, ones)                   # [B, K], [B, O]
        return self._mix(h, wide, expert_gate.unsqueeze(1), critic_gate.unsqueeze(1), p).squeeze(1)  # [B]

    def forward_routes(self, rows, seq_lengths, routes, params=None):
        """Click probabilities [R, B] of rows [B, C] under R routings: route r
        is None (the rows as they are) or (j, row): gate field j reads table
        row `row` instead. Only the gates differ, so the experts run once and
        _mix mixes them for all R routings in one bmm."""
        p, user, gate_rows, wide, ones, shift = self._inputs(rows, seq_lengths, params)
        h = self._experts(user, p, ones)                                                   # [B, K, H]
        gates = []
        for route in routes:
            trial = gate_rows
            if route is not None:
                j, row = route
                column = paddle.full_like(gate_rows[:, :1], row - shift)                  # [B, 1]
                trial = paddle.concat([gate_rows[:, :j], column, gate_rows[:, j + 1:]], axis=1)
            gates.append(self._gates(user, trial, p, ones))
        expert_gate = paddle.stack([e for e, _ in gates], axis=1)                          # [B, R, K]
        critic_gate = paddle.stack([c for _, c in gates], axis=1)                          # [B, R, O]
        return self._mix(h, wide, expert_gate, critic_gate, p).transpose([1, 0])           # [R, B]

    def gates(self, rows, seq_lengths, params=None):
        """The expert gate [B, K] and critic gate [B, O]: how each row's campaign is routed."""
        p, user, gate_rows, _, ones, _ = self._inputs(rows, seq_lengths, params)
        return self._gates(user, gate_rows, p, ones)

    @staticmethod
    def _mlp_gate(task, p, name, ones):
        hidden = paddle.nn.functional.relu(affine(task, p[f"{name}_w0"], p[f"{name}_b0"], ones))
        return softmax(affine(hidden, p[f"{name}_w1"], p[f"{name}_b1"], ones))
