"""run_node stops cleanly when a stop signal lands inside rclpy's C++ layer."""

import os
import signal

from active_finetune.nodes import spin
import pytest


@pytest.fixture
def restore_signals():
    saved = {sig: signal.getsignal(sig) for sig in spin.STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class FakeNode:
    def __init__(self):
        self.destroyed = False

    def destroy_node(self):
        self.destroyed = True


def spin_that_converts(exc_type):
    """Stand in for rclpy.spin: a signal arrives while pybind11 converts an argument."""
    def fake_spin(node):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0.01)  # let Python run the handler here
        except KeyboardInterrupt:
            raise exc_type("Unable to convert call argument '0' to Python object")
        raise AssertionError('the stop signal did not arrive')
    return fake_spin


def test_a_stop_signal_mangled_into_a_runtime_error_stops_cleanly(
        monkeypatch, restore_signals):
    node = FakeNode()
    monkeypatch.setattr(spin.rclpy, 'spin', spin_that_converts(RuntimeError))
    spin.run_node(lambda: node)
    assert node.destroyed and spin.stop_requested()


def test_a_runtime_error_without_a_stop_signal_is_raised(monkeypatch, restore_signals):
    node = FakeNode()

    def failing_spin(node):
        raise RuntimeError('a real failure')

    monkeypatch.setattr(spin.rclpy, 'spin', failing_spin)
    with pytest.raises(RuntimeError, match='a real failure'):
        spin.run_node(lambda: node)
    assert node.destroyed and not spin.stop_requested()


def test_the_console_and_the_nodes_share_one_stop_rule(restore_signals):
    spin.install_stop_handlers()
    with pytest.raises(RuntimeError, match='not a stop'):
        with spin.stopping_on_signal():
            raise RuntimeError('not a stop')
    with spin.stopping_on_signal():
        spin_that_converts(RuntimeError)(None)
    assert spin.stop_requested()
