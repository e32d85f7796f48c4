"""Packed trials (trainables/pack): k LoRA configurations trained together on one base model, one
forward/backward per round, give each configuration the numbers it gets alone (peft + train_step, same
seed): per-step losses, the saved adapter's held-out loss, a member leaving or joining without disturbing
the others, a resume from a member's saved state. Real SmolLM2-135M, real data, fp32, tiny sizes."""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass, replace

import pytest
import torch

from trainables.batching import pack
from trainables.data.formats import load_examples
from trainables.data.tokenize import IGNORE, encode
from trainables.pack import MemberSpec, PackedLora, packed_mean_loss, packed_train_step
from trainables.training import mean_loss, train_step

pytestmark = pytest.mark.slow
NO_AUTOCAST = contextlib.nullcontext
SEQ, EVAL_BATCH = 64, 4


@dataclass(frozen=True)
class Plan:
    """What a member trains on besides its LoRA: optimizer, schedule, data, micro-batching."""

    spec: MemberSpec
    lr: float
    batch: int
    accum: int
    first: int  # its examples: first, first + 1, ... (disjoint subsets)
    steps: int
    schedule: str = "cosine"


# a and b train the whole run; c leaves after 3 steps and d joins in its place (k = 3 throughout).
PLANS = {
    "a": Plan(MemberSpec("a", 4, 8.0, 0.0, False, ("all-linear",), 1), 1e-3, 2, 1, 0, 6),
    "b": Plan(MemberSpec("b", 8, 32.0, 0.0, False, ("all-linear",), 2), 5e-4, 1, 2, 12, 6, "linear"),
    "c": Plan(MemberSpec("c", 16, 16.0, 0.0, True, ("q_proj", "v_proj"), 3), 2e-3, 3, 1, 24, 3),
    "d": Plan(MemberSpec("d", 8, 16.0, 0.0, False, ("q_proj", "k_proj", "down_proj"), 4), 1e-3, 2, 1, 33, 3),
}
SWAP_AT = 3  # after this many steps c is removed and d added


def micro_batches(rows: list, plan: Plan, step: int) -> list:
    first = plan.first + step * plan.accum * plan.batch
    return [pack(rows[first + k * plan.batch : first + (k + 1) * plan.batch]) for k in range(plan.accum)]


def optimizer_and_schedule(params: list, plan: Plan) -> tuple:
    from transformers import get_scheduler

    opt = torch.optim.AdamW(params, lr=plan.lr, weight_decay=0.0)
    return opt, get_scheduler(plan.schedule, opt, 1, plan.steps)


def peft_alone(base, spec: MemberSpec):
    """The single-trial path's adapter: get_peft_model on its own copy of the base, right after the seed."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(spec.seed)
    targets = "all-linear" if spec.target_modules == ("all-linear",) else list(spec.target_modules)
    return get_peft_model(copy.deepcopy(base), LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, use_rslora=spec.use_rslora,
        target_modules=targets, task_type="CAUSAL_LM"))


def train_alone(base, rows: list, evals: list, plan: Plan, pad_id: int) -> dict:
    from peft.utils import get_peft_model_state_dict

    model = peft_alone(base, plan.spec)
    init = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}  # live weights otherwise
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = optimizer_and_schedule(params, plan)
    model.train()
    losses = []
    for step in range(plan.steps):
        batches = micro_batches(rows, plan, step)
        n = sum(b.n_labels for b in batches)
        losses.append(float(train_step(model, batches, NO_AUTOCAST, opt, sched, params, 1.0, n)) / n)
    evals_loss = {packed: mean_loss(model, evals, EVAL_BATCH, pad_id, "cpu", NO_AUTOCAST, packed)
                  for packed in (True, False)}
    return {"init": init, "losses": losses, "eval": evals_loss}


def roundtrip(obj):
    """Through torch.save / torch.load, as a checkpoint's state.pt."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


class Pack:
    """A pack as a trial runner drives it: members with their own optimizers, schedules and step counters."""

    def __init__(self, base, members_per_pass: int | None = None):
        self.members_per_pass = members_per_pass
        self.model = copy.deepcopy(base).train()
        self.lora = PackedLora(self.model, "all-linear")
        self.opts, self.scheds, self.done, self.plans = {}, {}, {}, {}
        self.losses: dict[str, list[float]] = {}

    def add(self, plan: Plan) -> None:
        self.lora.add(plan.spec)
        m = plan.spec.member_id
        self.plans[m] = plan
        self.opts[m], self.scheds[m] = optimizer_and_schedule(self.lora.parameters_of(m), plan)
        self.done[m], self.losses[m] = 0, []

    def remove(self, m: str) -> None:
        self.lora.remove(m)
        del self.opts[m], self.scheds[m], self.done[m]

    def step(self, rows: list) -> None:
        steps = {m: micro_batches(rows, self.plans[m], self.done[m]) for m in self.opts}
        n = {m: sum(b.n_labels for b in batches) for m, batches in steps.items()}
        out = packed_train_step(self.lora, self.model, steps, NO_AUTOCAST, self.opts, self.scheds, 1.0, n,
                                self.members_per_pass)
        for m, loss in out.items():
            self.losses[m].append(float(loss) / n[m])
            self.done[m] += 1

    def snapshot(self) -> dict:
        return roundtrip({m: (self.lora.state_of(m), self.opts[m].state_dict(), self.scheds[m].state_dict(),
                              self.done[m]) for m in self.opts})


@pytest.fixture(scope="module")
def base(model_tok):
    """The real model cut to its first 4 of 30 layers (its own copy): the same modules and code paths, ~7x
    less arithmetic on 2 CPU cores."""
    model = copy.deepcopy(model_tok[0])
    model.model.layers = model.model.layers[:4]
    model.config.num_hidden_layers = 4
    return model


@pytest.fixture(scope="module")
def rows(model_tok):
    """Training rows (disjoint per member) and held-out rows; short and truncated examples alternate, so
    micro-batches and rounds have rows of different lengths (padding, several examples in a packed row)."""
    _, tok = model_tok
    encoded = [encode(tok, e.messages, SEQ) for e in load_examples("alpaca/random_9k.json")[:300]]
    usable = [e for e in encoded if any(y != IGNORE for y in e[1][1:])]  # as set_up_data keeps them
    short, full = [e for e in usable if len(e[0]) < SEQ], [e for e in usable if len(e[0]) == SEQ]
    mixed = [e for pair in zip(short, full, strict=False) for e in pair]
    assert len(mixed) >= 47 and len({len(e[0]) for e in mixed[:47]}) > 10
    return mixed[:39], mixed[39:47]


@pytest.fixture(scope="module")
def runs(base, model_tok, rows, tmp_path_factory):
    """Every member trained alone, and the pack trained once: a, b, c together; after step 3 c leaves and
    d joins (a snapshot of the pack is taken there); at the end each member's adapter is saved."""
    tok = model_tok[1]
    train, evals = rows
    alone = {m: train_alone(base, train, evals, plan, tok.pad_token_id) for m, plan in PLANS.items()}
    p = Pack(base)
    inits = {}
    for m in "abc":
        p.add(PLANS[m])
        inits[m] = p.lora.state_of(m)
    for step in range(6):
        if step == SWAP_AT:
            p.remove("c")
            p.add(PLANS["d"])
            inits["d"] = p.lora.state_of("d")
            at_swap = p.snapshot()
        p.step(train)
    out = tmp_path_factory.mktemp("packed")
    for m in p.lora.members():
        p.lora.save_peft(m, out / m)
    evals_loss = {packed: packed_mean_loss(p.lora, p.model, {m: evals for m in p.lora.members()}, EVAL_BATCH,
                                           tok.pad_token_id, "cpu", NO_AUTOCAST, packed) for packed in (True, False)}
    return {"alone": alone, "pack": p, "inits": inits, "at_swap": at_swap, "saved": out, "evals": evals_loss}


def test_members_start_with_the_weights_get_peft_model_gives_them(runs):
    for m, init in runs["inits"].items():
        ref = runs["alone"][m]["init"]
        assert list(init) == list(ref)  # peft's keys, in peft's order
        assert all(torch.equal(init[k], ref[k]) for k in ref), m
    assert not torch.equal(runs["inits"]["a"][next(iter(runs["inits"]["a"]))],
                           runs["inits"]["b"][next(iter(runs["inits"]["b"]))])  # each its own seed


def test_each_member_loses_per_step_what_it_loses_alone(runs):
    for m, plan in PLANS.items():
        packed, alone = runs["pack"].losses[m], runs["alone"][m]["losses"]
        assert len(packed) == len(alone) == plan.steps
        assert packed == pytest.approx(alone, abs=1e-4), m
    assert len({round(runs["alone"][m]["losses"][1], 3) for m in PLANS}) == len(PLANS)  # four different runs


def test_a_member_leaving_and_one_joining_leave_the_others_as_they_were(runs):
    pack = runs["pack"]
    assert pack.lora.members() == ["a", "b", "d"]
    assert all("c" not in layer.adapters for layer in pack.lora.layers.values())  # c's weights dropped
    with pytest.raises(KeyError, match="no member 'c'"):
        pack.lora.parameters_of("c")
    for m in "ab":  # the steps after the swap, as alone
        after = slice(SWAP_AT, None)
        assert pack.losses[m][after] == pytest.approx(runs["alone"][m]["losses"][after], abs=1e-4)


def test_saved_adapters_load_in_peft_and_score_the_held_out_set_as_alone(runs, base, model_tok, rows):
    from peft import PeftModel

    tok = model_tok[1]
    _, evals = rows
    for m in "abd":
        alone = runs["alone"][m]["eval"]
        for packed in (True, False):  # packed sequences (the default) and padded rows
            assert runs["evals"][packed][m] == pytest.approx(alone[packed], abs=1e-4), (m, packed)
        loaded = PeftModel.from_pretrained(copy.deepcopy(base), runs["saved"] / m)
        assert loaded.peft_config["default"].r == PLANS[m].spec.r
        got = mean_loss(loaded, evals, EVAL_BATCH, tok.pad_token_id, "cpu", NO_AUTOCAST, True)
        assert got == pytest.approx(alone[True], abs=1e-4), m
    assert runs["evals"][True]["a"] != pytest.approx(runs["evals"][True]["b"], abs=1e-3)  # adapters differ


def test_a_member_resumed_from_its_saved_state_continues_as_uninterrupted(runs, base, rows):
    train, _ = rows
    p = Pack(base)
    for m, (state, opt, sched, done) in runs["at_swap"].items():  # d had just joined: its first state
        p.add(PLANS[m])
        p.lora.load_state(m, state)
        p.opts[m].load_state_dict(opt)
        p.scheds[m].load_state_dict(sched)
        p.done[m] = done
    for _ in range(SWAP_AT, 6):
        p.step(train)
    for m in "abd":
        assert p.losses[m] == pytest.approx(runs["pack"].losses[m][-len(p.losses[m]) :], abs=1e-6), m
    with pytest.raises(ValueError, match="does not fit its modules"):
        p.lora.load_state("d", runs["at_swap"]["a"][0])  # another configuration's weights


def test_dropout_draws_per_member_and_equal_members_without_it_train_equally(base, rows):
    train, _ = rows
    p = Pack(base)
    twin = PLANS["a"]
    plans = {m: replace(twin, spec=replace(twin.spec, member_id=m, dropout=d))
             for m, d in (("x0", 0.0), ("y0", 0.0), ("x1", 0.1), ("y1", 0.1))}
    for plan in plans.values():
        p.add(plan)
    for _ in range(3):  # the schedule's warmup step has lr 0: B is still 0 at step 1
        p.step(train)
    loss = p.losses
    assert all(torch.isfinite(torch.tensor(v)).all() for v in loss.values())
    assert loss["x0"] == pytest.approx(loss["y0"], abs=1e-6)  # where it sits in the pack changes nothing
    assert loss["x1"][:2] == pytest.approx(loss["x0"][:2], abs=1e-6)  # B still 0: dropout cannot act yet
    assert abs(loss["x1"][2] - loss["y1"][2]) > 1e-6  # each member draws its own masks
    assert abs(loss["x1"][2] - loss["x0"][2]) > 1e-6


def test_a_pack_refuses_what_it_cannot_compute(base):
    lora = PackedLora(copy.deepcopy(base), ["q_proj", "v_proj"])
    with pytest.raises(ValueError, match="outside the pack's shared target modules"):
        lora.add(MemberSpec("o", 4, 8.0, 0.0, False, ("all-linear",), 0))
    lora.add(MemberSpec("q", 4, 8.0, 0.0, False, ("q_proj",), 0))
    with pytest.raises(ValueError, match="already in the pack"):
        lora.add(MemberSpec("q", 4, 8.0, 0.0, False, ("q_proj",), 0))
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(RuntimeError, match="outside `routed"):
        lora.model(input_ids=ids)
    with lora.base_only():
        plain = lora.model(input_ids=ids).logits
    assert torch.equal(plain, base(input_ids=ids).logits)
    assert lora.unwrap() is lora.model and not any("MultiLora" in type(mod).__name__ for mod in lora.model.modules())


def test_gradient_checkpointing_recomputes_each_round_inside_its_route(base, rows):
    """train.gradient_checkpointing in a pack (trial.prepare_base, as a trial's base gets it): each layer's
    forward runs again in the backward, inside the round's route (outside it a MultiLoraLinear refuses to
    run), and the members lose what they lose without it. The step puts the model in train mode itself
    (before: a pack trained in eval mode until its first report - no dropout, no checkpointing)."""
    from trainables.schema import trial_config
    from trainables.trial import prepare_base

    train, _ = rows
    losses, calls = {}, {}
    for on in (False, True):
        p = Pack(base)
        prepare_base(trial_config({"name": "t", "train": {"gradient_checkpointing": on}}, {}), p.model)
        assert p.model.is_gradient_checkpointing == on
        for m in "ab":
            p.add(PLANS[m])
        layer = next(iter(p.lora.layers.values()))
        p.model.eval()  # as from_pretrained gives it and a member's report leaves it: the step trains anyway
        calls[on] = 0
        hook = layer.register_forward_hook(lambda *_, on=on: calls.__setitem__(on, calls[on] + 1))
        for _ in range(2):
            p.step(train)
        hook.remove()
        losses[on] = p.losses
    assert calls[True] == 2 * calls[False] > 0
    for m in "ab":
        assert losses[True][m] == pytest.approx(losses[False][m], abs=1e-5), m


def test_a_round_split_into_passes_trains_each_member_as_one_pass_does(runs, base, rows):
    """resources.pack_members_per_pass: 2 of a pack of 3 runs each round as two forward/backward passes
    (a and b, then c): no pass holds more than two members' rows, and every member loses per step what it
    loses alone (the members' losses are independent, so the split changes no gradient)."""
    train, _ = rows
    p = Pack(base, members_per_pass=2)
    for m in "abc":
        p.add(PLANS[m])
    layer = next(iter(p.lora.layers.values()))
    rows_per_pass: list[int] = []
    hook = layer.register_forward_hook(lambda _m, args, _o: rows_per_pass.append(args[0].shape[0]))
    for _ in range(SWAP_AT):
        p.step(train)
    hook.remove()
    for m in "abc":
        assert p.losses[m] == pytest.approx(runs["alone"][m]["losses"][:SWAP_AT], abs=1e-4), m
    # one micro-batch per member per step (b has 2): a+b, then c in round 0; b alone in round 1
    assert len(rows_per_pass) == 3 * SWAP_AT
    assert max(rows_per_pass) <= max(PLANS["a"].batch + PLANS["b"].batch, PLANS["c"].batch)
