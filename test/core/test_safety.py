"""Safety decisions: staleness, NaN, clamping, estop latch, command gate and mux rules."""

import json
import subprocess
import sys

from active_finetune.safety import check_fresh, check_proprio, check_proprio_rows, CommandGate
from active_finetune.safety import CommandMux, CommandMuxConfig, EstopLatch, is_stale
from active_finetune.safety import ProprioLimits, sanitize_action
import numpy as np
import pytest


def test_check_fresh_reports_age_in_the_reason():
    check = check_fresh('image', 10.0, 10.31, 0.15)
    assert not check.ok
    assert check.code == 'stale'
    assert check.reason == 'stale image: 0.31 s old > 0.15 s'


def test_check_fresh_missing_future_and_fresh():
    assert check_fresh('joint state', None, 5.0, 0.1).reason == 'no joint state received yet'
    future = check_fresh('image', 12.0, 10.0, 0.5)
    assert (future.ok, future.code) == (False, 'future')
    assert '2.00 s in the future' in future.reason
    fresh = check_fresh('image', 9.95, 10.0, 0.1)
    assert fresh.ok and fresh.reason == ''


@pytest.mark.parametrize('stamp_s, now_s, max_age_s, stale', [
    (1.0, 1.05, 0.1, False),
    (1.0, 1.1000001, 0.1, True),
    (None, 1.0, 0.1, True),
    (2.0, 1.0, 0.5, True),
    (1.2, 1.0, 0.5, False),
])
def test_is_stale(stamp_s, now_s, max_age_s, stale):
    assert is_stale(stamp_s, now_s, max_age_s) is stale


@pytest.mark.parametrize('max_age_s', [0.0, -1.0, float('nan'), float('inf')])
def test_check_fresh_refuses_bad_max_age(max_age_s):
    with pytest.raises(ValueError, match='max_age_s'):
        check_fresh('image', 1.0, 1.0, max_age_s)


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_sanitize_zeroes_non_finite(bad):
    result = sanitize_action([0.1, bad, 0.2], 1.0)
    assert result.zeroed and result.code == 'non_finite'
    np.testing.assert_array_equal(result.values, np.zeros(3))
    assert 'non-finite' in result.reason


def test_sanitize_clamps_per_axis():
    result = sanitize_action([0.5, -0.5, 0.05], [0.25, 0.1, 1.0])
    np.testing.assert_allclose(result.values, [0.25, -0.1, 0.05])
    assert result.code == 'clamped' and not result.zeroed
    assert 'clamped' in result.reason


def test_sanitize_passes_valid_command_unchanged():
    result = sanitize_action(np.array([0.1, -0.2, 0.0]), 0.25)
    np.testing.assert_array_equal(result.values, [0.1, -0.2, 0.0])
    assert (result.code, result.reason) == ('ok', '')


@pytest.mark.parametrize('limits', [0.0, -1.0, float('nan'), [1.0, 1.0]])
def test_sanitize_refuses_bad_limits(limits):
    with pytest.raises(ValueError, match='limits'):
        sanitize_action([0.0, 0.0, 0.0], limits)


def test_sanitize_refuses_2d_command():
    with pytest.raises(ValueError, match='1-D'):
        sanitize_action(np.zeros((2, 3)), 1.0)


def test_estop_latch_stays_engaged_until_released():
    latch = EstopLatch()
    assert not latch.engaged and latch.reason == ''
    assert latch.update(True) is True
    assert latch.update(True) is False
    assert latch.engaged and 'estop engaged' in latch.reason
    assert latch.update(False) is True
    assert not latch.engaged


def test_command_gate_order_estop_then_checks_then_sanitize():
    gate = CommandGate([0.25, 0.25, 0.25, 1.0])
    stale = check_fresh('image', 0.0, 1.0, 0.1)
    blocked = gate.decide([0.1, 0.1, 0.1, 0.5], [stale])
    assert blocked.blocked and blocked.code == 'stale'
    np.testing.assert_array_equal(blocked.command, np.zeros(4))
    gate.set_estop(True)
    estopped = gate.decide([0.1, 0.1, 0.1, 0.5], [stale])
    assert estopped.code == 'estop' and estopped.blocked
    gate.set_estop(False)
    clamped = gate.decide([0.5, 0.1, 0.1, 0.5], [check_fresh('image', 1.0, 1.0, 0.1)])
    assert clamped.code == 'clamped' and not clamped.blocked
    np.testing.assert_allclose(clamped.command, [0.25, 0.1, 0.1, 0.5])
    assert gate.decide([np.nan, 0, 0, 0]).code == 'non_finite'


def make_mux(**overrides):
    settings = {'max_linear_velocity_mps': 0.25, 'teleop_motion_threshold_mps': 0.01,
                'teleop_hold_s': 1.0, 'command_timeout_s': 0.2}
    settings.update(overrides)
    return CommandMux(CommandMuxConfig(**settings))


def test_mux_uses_fresh_policy_and_zero_without_source():
    mux = make_mux()
    nothing = mux.decide(0.0)
    assert (nothing.source, nothing.code) == ('none', 'no_source')
    assert 'no policy command received yet' in nothing.reason
    mux.on_twist('policy', [0.1, 0.0, -0.1], 1.0)
    decision = mux.decide(1.05)
    assert (decision.source, decision.code) == ('policy', 'ok')
    np.testing.assert_allclose(decision.twist_mps, [0.1, 0.0, -0.1])
    stale = mux.decide(1.3)
    assert (stale.source, stale.code) == ('none', 'no_source')
    assert 'stale policy command: 0.30 s old > 0.20 s' in stale.reason
    np.testing.assert_array_equal(stale.twist_mps, np.zeros(3))


def test_mux_hands_on_the_stamp_of_the_command_it_forwards():
    mux = make_mux()
    mux.on_twist('policy', [0.1, 0.0, 0.0], 1.0, stamp_s=0.98)
    assert mux.decide(1.01).stamp_s == 0.98, 'the issue time of the forwarded command'
    mux.on_twist('teleop', [0.0, 0.5, 0.0], 1.02, stamp_s=1.015)
    clamped = mux.decide(1.03)
    assert (clamped.source, clamped.code, clamped.stamp_s) == ('teleop', 'clamped', 1.015)
    mux.on_twist('teleop', [0.0, 0.05, 0.0], 1.04)
    assert mux.decide(1.05).stamp_s is None, 'an unstamped command: stamped by the mux'
    assert mux.decide(1.5).stamp_s is None, 'a zero the mux makes itself (stale teleop)'
    mux.on_twist('policy', [0.1, 0.0, 0.0], 3.0, stamp_s=2.99)
    mux.on_estop(True)
    assert mux.decide(3.01).stamp_s is None, 'estop zero'


def test_mux_teleop_motion_takes_over_and_holds():
    mux = make_mux()
    mux.on_twist('policy', [0.1, 0.0, 0.0], 0.0)
    mux.on_twist('teleop', [0.0, 0.005, 0.0], 0.0)
    assert mux.decide(0.01).source == 'policy', 'motion below the threshold must not take over'
    mux.on_twist('teleop', [0.0, 0.05, 0.0], 0.1)
    decision = mux.decide(0.11)
    assert decision.source == 'teleop'
    np.testing.assert_allclose(decision.twist_mps, [0.0, 0.05, 0.0])
    for t in np.arange(0.15, 1.05, 0.05):
        mux.on_twist('teleop', [0.0, 0.0, 0.0], t)
        mux.on_twist('policy', [0.1, 0.0, 0.0], t)
    held = mux.decide(1.05)
    assert held.source == 'teleop', 'the operator keeps control for teleop_hold_s after motion'
    np.testing.assert_array_equal(held.twist_mps, np.zeros(3))
    mux.on_twist('policy', [0.1, 0.0, 0.0], 1.15)
    assert mux.decide(1.15).source == 'policy'


def test_mux_teleop_has_priority_while_recording_and_stale_teleop_gives_zero():
    mux = make_mux()
    mux.on_recorder_state('recording')
    mux.on_twist('policy', [0.1, 0.0, 0.0], 0.0)
    mux.on_twist('teleop', [0.0, 0.0, 0.0], 0.0)
    assert mux.decide(0.05).source == 'teleop'
    mux.on_twist('policy', [0.1, 0.0, 0.0], 0.5)
    lost = mux.decide(0.5)
    assert (lost.source, lost.code) == ('teleop', 'stale')
    assert 'recording' in lost.reason
    np.testing.assert_array_equal(lost.twist_mps, np.zeros(3))
    mux.on_recorder_state('idle')
    assert mux.decide(0.5).source == 'policy'


def test_mux_estop_latches_zero_and_holds_gripper():
    mux = make_mux()
    mux.on_twist('policy', [0.1, 0.0, 0.0], 0.0)
    mux.on_gripper('policy', 0.7, 0.0)
    assert mux.decide(0.0).gripper == pytest.approx(0.7)
    assert mux.on_estop(True)
    for t in (0.05, 0.1, 0.15):
        mux.on_twist('policy', [0.1, 0.0, 0.0], t)
        mux.on_gripper('policy', -1.0, t)
        decision = mux.decide(t)
        assert decision.estop and decision.code == 'estop'
        np.testing.assert_array_equal(decision.twist_mps, np.zeros(3))
        assert decision.gripper == pytest.approx(0.7), 'the gripper is frozen, not moved'
    mux.on_estop(False)
    released = mux.decide(0.15)
    assert not released.estop and released.source == 'policy'
    assert released.gripper == pytest.approx(-1.0)


def test_mux_nan_gives_zero_and_clamps_to_limit():
    mux = make_mux()
    mux.on_twist('policy', [np.nan, 0.0, 0.0], 0.0)
    decision = mux.decide(0.0)
    assert decision.code == 'non_finite'
    np.testing.assert_array_equal(decision.twist_mps, np.zeros(3))
    mux.on_twist('policy', [1.0, -1.0, 0.1], 0.0)
    clamped = mux.decide(0.0)
    assert clamped.code == 'clamped'
    np.testing.assert_allclose(clamped.twist_mps, [0.25, -0.25, 0.1])
    mux.set_config(CommandMuxConfig(max_linear_velocity_mps=0.05))
    np.testing.assert_allclose(mux.decide(0.0).twist_mps, [0.05, -0.05, 0.05])


def test_mux_teleop_takeover_keeps_policy_gripper_until_operator_toggles():
    mux = make_mux()
    mux.on_twist('policy', [0.0, 0.0, 0.0], 0.0)
    mux.on_gripper('policy', 1.0, 0.0)
    assert mux.decide(0.0).gripper == 1.0
    mux.on_twist('teleop', [0.05, 0.0, 0.0], 0.05)
    mux.on_gripper('teleop', -1.0, 0.05)
    takeover = mux.decide(0.05)
    assert takeover.source == 'teleop'
    assert takeover.gripper == 1.0, 'a nudge must not open the gripper the policy closed'
    mux.on_twist('teleop', [0.05, 0.0, 0.0], 0.1)
    mux.on_gripper('teleop', 1.0, 0.1)
    assert mux.decide(0.1).gripper == 1.0
    mux.on_gripper('teleop', -1.0, 0.15)
    mux.on_twist('teleop', [0.05, 0.0, 0.0], 0.15)
    assert mux.decide(0.15).gripper == -1.0


def test_mux_gripper_unknown_until_a_source_gives_one_and_nan_is_ignored():
    mux = make_mux()
    mux.on_twist('policy', [0.0, 0.0, 0.0], 0.0)
    assert mux.decide(0.0).gripper is None
    mux.on_gripper('policy', -0.5, 0.0)
    assert mux.decide(0.0).gripper == -0.5
    mux.on_gripper('policy', float('nan'), 0.01)
    assert mux.decide(0.01).gripper == -0.5
    mux.on_gripper('policy', 3.0, 0.02)
    assert mux.decide(0.02).gripper == 1.0


def test_mux_status_json_and_key():
    mux = make_mux()
    decision = mux.decide(0.0)
    status = json.loads(decision.status())
    assert status == {'source': 'none', 'estop': False, 'code': 'no_source',
                      'reason': decision.reason}
    assert decision.status_key() == ('none', False, 'no_source')


def test_mux_refuses_unknown_source_and_bad_shapes():
    mux = make_mux()
    with pytest.raises(ValueError, match="'joystick'"):
        mux.on_twist('joystick', [0, 0, 0], 0.0)
    with pytest.raises(ValueError, match='3 elements'):
        mux.on_twist('policy', [0, 0], 0.0)


@pytest.mark.parametrize('field, value', [
    ('rate_hz', 0.0), ('rate_hz', -5.0), ('max_linear_velocity_mps', float('nan')),
    ('command_timeout_s', 0.0), ('teleop_hold_s', -1.0), ('frame_id', ''),
])
def test_mux_config_refuses_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        CommandMuxConfig(**{field: value})


# Training statistics like the shipped checkpoint's (Meta-World frame, metres).
TRAINED = ProprioLimits(mean=(0.03, 0.67, 0.16, 0.74), std=(0.08, 0.08, 0.07, 0.3))


@pytest.mark.parametrize('position, words', [
    ((0.0, 600.0, 200.0), ['outside the workspace box', '600', 'millimetres']),
    ((1e6, 1e6, 1e6), ['outside the workspace box', '1e+06']),
    ((0.03, 1.3, 0.16), ['y is', 'std from the training mean 0.67', 'limit 6 std']),
])
def test_implausible_but_finite_positions_are_refused_with_a_reason(position, words):
    check = check_proprio([*position, 0.5], TRAINED)
    assert not check.ok and check.code == 'implausible'
    for word in words:
        assert word in check.reason, check.reason


def test_plausible_positions_pass_and_each_check_can_be_set():
    assert check_proprio([0.0, 0.6, 0.2, 1.0], TRAINED).ok
    assert check_proprio([0.0, 0.6, 0.2], ProprioLimits()).ok, 'no statistics: the box only'
    far = [0.03, 1.3, 0.16, 0.5]
    assert check_proprio(far, ProprioLimits(mean=TRAINED.mean, std=TRAINED.std, max_std=0.0)).ok
    assert check_proprio(far, ProprioLimits(mean=TRAINED.mean, std=TRAINED.std, max_std=9.0)).ok
    box = ProprioLimits(workspace_min_m=(-0.5, 0.4, 0.0), workspace_max_m=(0.5, 0.9, 0.3))
    assert check_proprio([0.0, 0.6, 0.2], box).ok
    assert 'y [0.4, 0.9]' in check_proprio([0.0, 0.95, 0.2], box).reason
    # A coordinate constant in training (std floored) is not refused for millimetres of motion.
    flat = ProprioLimits(mean=(0.0, 0.6, 0.2, 0.5), std=(1e-3, 1e-3, 1e-3, 1e-3))
    assert check_proprio([0.01, 0.61, 0.19], flat).ok
    nan = check_proprio([0.0, float('nan'), 0.2], TRAINED)
    assert not nan.ok and nan.code == 'non_finite'


def test_training_rows_report_the_first_bad_row_and_how_many():
    rows = np.array([[0.0, 0.6, 0.2, 1.0]] * 5)
    assert check_proprio_rows(rows, TRAINED).ok
    rows[3:, 1] = 650.0
    check = check_proprio_rows(rows, TRAINED)
    assert not check.ok and 'row 3 (2 of 5 rows)' in check.reason, check.reason
    with pytest.raises(ValueError, match='3 columns'):
        check_proprio_rows(np.zeros((4, 2)), TRAINED)


@pytest.mark.parametrize('kwargs, match', [
    ({'workspace_min_m': (0.0, 0.0)}, 'workspace_min_m'),
    ({'workspace_max_m': (1.0, float('inf'), 1.0)}, 'workspace_max_m'),
    ({'workspace_min_m': (0.0, 2.0, 0.0), 'workspace_max_m': (1.0, 1.0, 1.0)}, 'below'),
    ({'max_std': -1.0}, 'max_std'),
    ({'mean': (0.0, 0.0, 0.0)}, 'together'),
])
def test_proprio_limits_refuse_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProprioLimits(**kwargs)


def test_core_modules_import_no_ros():
    code = ('import sys\n'
            'import active_finetune.safety, active_finetune.devices.camera\n'
            'import active_finetune.devices.spacemouse\n'
            "ros = sorted(m for m in sys.modules if m.startswith('rclpy') or m.endswith('_msgs')"
            " or '_msgs.' in m)\n"
            'print(ros)\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == '[]'
