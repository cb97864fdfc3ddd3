"""The checker of notebook 03 passes minirl's REINFORCE loss, fails plausible wrong answers, reports a stub."""

from minirl import losses
from minirl.exercises.reinforce import check_reinforce_loss
from minirl.exercises.solutions.reinforce import reinforce_loss as solution


def stub(*args):
    raise NotImplementedError


def test_reinforce_checker_passes_the_reference():
    assert check_reinforce_loss(losses.reinforce_loss)                      # (loss, info) is accepted
    assert check_reinforce_loss(lambda log_prob, a: -(a * log_prob).mean())  # and a bare loss
    assert check_reinforce_loss(solution)                                    # the teachers' answer


def test_reinforce_checker_fails_wrong_answers(capsys):
    assert not check_reinforce_loss(lambda log_prob, a: (a * log_prob).mean())          # ascends the loss
    assert not check_reinforce_loss(lambda log_prob, a: -(a * log_prob).sum())          # sum: grad N times larger
    assert "case 1 (5 samples)" in capsys.readouterr().out                                # which case, and what
    assert not check_reinforce_loss(lambda log_prob, a: -(a * log_prob.exp()).mean())   # grad of p, not of log p
    assert not check_reinforce_loss(lambda log_prob, a: -(a * log_prob.detach()).mean())  # no gradient at all
    assert "no gradient" in capsys.readouterr().out


def test_reinforce_checker_compares_the_gradient_not_only_the_value():
    """A loss with the reference's value and another gradient fails."""
    def wrong_grad(log_prob, a):
        centred = log_prob - log_prob.mean()
        return -(a * centred).mean() - (a.mean() * log_prob.mean()).detach()
    assert not check_reinforce_loss(wrong_grad)


def test_stub_is_reported_not_attempted(capsys):
    assert not check_reinforce_loss(stub)
    assert "not attempted" in capsys.readouterr().out
