"""run_node stops cleanly when a stop signal lands inside rclpy's C++ layer or a finalizer."""

import os
import signal
import sys
import time

from active_finetune.nodes import spin
import pytest
import rclpy


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
    def fake_spin(node, threads=1):
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
    monkeypatch.setattr(spin, 'spin_until_stopped', spin_that_converts(RuntimeError))
    spin.run_node(lambda: node)
    assert node.destroyed and spin.stop_requested()


def test_a_runtime_error_without_a_stop_signal_is_raised(monkeypatch, restore_signals):
    node = FakeNode()

    def failing_spin(node, threads=1):
        raise RuntimeError('a real failure')

    monkeypatch.setattr(spin, 'spin_until_stopped', failing_spin)
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


def test_a_stop_signal_inside_a_finalizer_raises_nothing_there_and_is_kept(
        monkeypatch, restore_signals):
    """A KeyboardInterrupt raised in __del__ would be printed as ignored and lost."""
    unraisable = []
    monkeypatch.setattr(sys, 'unraisablehook', unraisable.append)
    spin.install_stop_handlers()

    class SignalledWhileCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0.01)  # let Python run the handler inside __del__

    SignalledWhileCollected()
    assert spin.stop_requested()
    assert not unraisable, [u.exc_value for u in unraisable]


@pytest.mark.parametrize('threads', [1, 2])
def test_the_spin_ends_on_the_stop_flag_alone(restore_signals, threads):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node('spin_flag_test', context=context)
        spin.install_stop_handlers()
        ticks = []
        # A stop whose KeyboardInterrupt never reached the spin: only the flag is set.
        node.create_timer(0.05, lambda: ticks.append(1) or (
            len(ticks) == 3 and spin._STOP_REQUESTED.set()))
        t0 = time.monotonic()
        spin.spin_until_stopped(node, threads)
        assert len(ticks) >= 3 and time.monotonic() - t0 < 10.0
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
