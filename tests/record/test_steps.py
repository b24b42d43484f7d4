"""The step-boundary state machine, fed fake events in the orders training loops produce."""

from __future__ import annotations

from gradscope.record.steps import StepMachine


def kept() -> bool:
    return True


def zeroed() -> bool:
    return False


def backward(machine: StepMachine, accumulating=zeroed):
    began = machine.backward_began(accumulating)
    return began.closed, began.backward, machine.backward_ended()


def test_plain_loop_one_backward_per_optimizer_step():
    machine = StepMachine()
    for step in range(3):
        closed, began, _ = backward(machine)
        assert closed is None and began.step == step and began.micro == 0 and began.record
        machine.optimizer_pre(closure=False)
        end = machine.optimizer_post()
        assert (end.step, end.backward_calls, end.recorded_backwards, end.optimizer) == (step, 1, 1, True)


def test_accumulation_micro_batches_belong_to_the_step():
    machine = StepMachine()
    micros = [backward(machine, kept)[1].micro for _ in range(4)]  # before any optimizer step
    machine.optimizer_pre(closure=False)
    end = machine.optimizer_post()
    assert micros == [0, 1, 2, 3] and end.backward_calls == 4 and end.recorded_backwards == 4


def test_lbfgs_first_closure_evaluation_recorded_later_ones_not():
    machine = StepMachine()
    machine.optimizer_pre(closure=True)
    assert machine.capturing
    first = backward(machine)[1]
    assert not machine.capturing  # the line search's forwards are not the step's
    later = [backward(machine)[1] for _ in range(3)]
    end = machine.optimizer_post()
    assert first.record and first.closure_eval == 1
    assert [b.record for b in later] == [False] * 3 and [b.closure_eval for b in later] == [2, 3, 4]
    assert (end.backward_calls, end.recorded_backwards, end.closure_evals) == (4, 1, 4)
    assert machine.capturing


def test_lightning_accumulation_backward_before_step_and_one_inside_the_closure():
    machine = StepMachine()
    outside = backward(machine)[1]
    machine.optimizer_pre(closure=True)
    inside = backward(machine)[1]
    end = machine.optimizer_post()
    assert outside.record and inside.record and (outside.micro, inside.micro) == (0, 1)
    assert inside.closure_eval == 1 and end.recorded_backwards == 2 and end.backward_calls == 2


def test_grad_scaler_skip_ends_the_step():
    machine = StepMachine()
    backward(machine)
    end = machine.scaler_skipped()
    assert end.skipped and end.step == 0 and machine.step == 1
    backward(machine)
    machine.optimizer_pre(closure=False)
    assert not machine.optimizer_post().skipped


def test_no_optimizer_each_backward_is_a_step_unless_gradients_accumulate():
    machine = StepMachine()
    assert backward(machine)[0] is None  # nothing before the first backward
    closed, began, _ = backward(machine, zeroed)  # zero_grad + .data update in between
    assert closed is not None and closed.step == 0 and not closed.optimizer and began.step == 1
    closed, began, _ = backward(machine, kept)  # gradients left to accumulate
    assert closed is None and began.micro == 1
    end = machine.close()
    assert end is not None and end.step == 1 and end.backward_calls == 2
    assert machine.close() is None


def test_the_accumulation_question_is_asked_only_when_it_matters():
    machine = StepMachine()
    asked = []

    def accumulating() -> bool:
        asked.append(True)
        return False

    machine.backward_began(accumulating)  # nothing pending yet
    machine.backward_ended()
    machine.optimizer_pre(closure=False)
    machine.optimizer_post()
    machine.backward_began(accumulating)  # an optimizer exists: its steps decide
    assert asked == []
    assert machine.close() is None


def test_a_raised_backward_is_discarded_and_counted():
    machine = StepMachine()
    machine.backward_began(zeroed)
    machine.backward_raised()
    _, began, _ = backward(machine)
    machine.optimizer_pre(closure=False)
    end = machine.optimizer_post()
    assert began.micro == 0 and end.backward_calls == 1 and end.raised == 1
    assert machine.raised_total == 1


def test_a_raised_closure_evaluation_leaves_the_next_one_recorded():
    machine = StepMachine()
    machine.optimizer_pre(closure=True)
    machine.backward_began(zeroed)
    machine.backward_raised()
    _, began, _ = backward(machine)
    assert began.record and began.closure_eval == 1


def test_no_optimizer_raised_backward_alone_makes_no_step():
    machine = StepMachine()
    machine.backward_began(zeroed)
    machine.backward_raised()
    assert machine.close() is None and machine.step == 0


def test_forwards_after_a_hand_written_step_feed_the_next_step():
    machine = StepMachine()
    assert machine.upcoming == 0
    backward(machine)
    assert machine.upcoming == 1  # no optimizer: the pending backward closes step 0 first
    machine.optimizer_pre(closure=False)
    machine.optimizer_post()
    backward(machine)
    assert machine.upcoming == machine.step == 1  # with an optimizer its step decides
