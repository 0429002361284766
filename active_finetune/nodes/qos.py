"""
QoS profiles of the package, in one place, chosen by measurement.

Images (``IMAGE_QOS``): reliable, keep last 5, volatile.
Measured with ``bench/bench_image_transport.py`` (two processes on one host,
640x480 rgb8 at 30 Hz for 10 s, 300 frames; 2-core machine with a load
average of 3.4 from other work; results/bench_image_transport.json):

=========================================  ======  ======  ======
configuration                              lost %  p50 ms  p99 ms
=========================================  ======  ======  ======
best effort, depth 5, default transports    98.3    3.25    6.97
reliable, depth 1, default transports        0.0   13.25   20.07
reliable, depth 5, default transports        0.0   13.40   20.95
reliable, depth 10, default transports       0.0   13.40   18.55
best effort, depth 5, large SHM profile      0.0    2.83    8.35
reliable, depth 1, large SHM profile         0.0    3.04    7.33
reliable, depth 5, large SHM profile         0.0    3.02    7.00
reliable, depth 10, large SHM profile        0.0    2.80    7.30
reliable, depth 5, SHM + data sharing        0.0    2.88    6.41
reliable, depth 5, SHM with a 4 MB segment   0.0    2.90    7.03
best effort, depth 5, LARGE_DATA builtin    93.0    3.41    8.00
reliable, depth 5, LARGE_DATA builtin        0.0   13.52   35.43
=========================================  ======  ======  ======

An earlier run at a load average of 2 gave the same picture (best effort lost
84 %; reliable depth 5: 13.4 ms p50 with default transports, 2.7 ms p50 and
3.3 ms p99 with the large SHM profile; depth 10 had a 6.8 ms p99).

Best effort loses most frames with Fast DDS's default transports: a 900 kB
frame does not fit the default 512 kB shared-memory segment, so it goes over
UDP in ~15 fragments and losing any one loses the frame (the more loaded the
machine, the more are lost).  Reliable keeps every frame but pays ~13 ms for
fragment repair.  A shared-memory segment that holds whole frames
(:data:`FASTDDS_LARGE_SHM_PROFILE_XML`, given to every process of the graph
through ``FASTRTPS_DEFAULT_PROFILES_FILE``, see :func:`write_fastdds_profile`)
removes both problems: no loss at a p50 of 3 ms.  Data sharing adds nothing
measurable (Image is an unbounded type, so Fast DDS cannot loan it) and the
LARGE_DATA builtin transports behave like the default.  Depth 1 risks losing a
frame when a reliable writer overwrites an unacknowledged one; depth 5 is the
choice.  So: reliable depth 5 everywhere (lossless even without the profile),
plus the profile for the low latency.  The profile keeps UDPv4, so several
machines still talk to each other; it needs 16 MB of /dev/shm per process
(raise Docker's 64 MB default with ``--shm-size``).

Sensor subscriptions (images, joint states, poses) keep these reliable profiles by default
and take QoS overrides (:func:`sensor_subscription_options`): a lab whose driver publishes best
effort, which a reliable subscription never matches, sets in the node's parameters (e.g. in
config/robot.yaml, for policy and demo_recorder)::

    qos_overrides:
      /camera/camera/color/image_raw:      # the topic's full name after remapping
        subscription:
          reliability: best_effort         # also: history, depth

Trade-off (table above and results/bench_image_transport.json): best effort delivers every
640x480 frame only when the publisher has the large SHM profile too (one machine); over UDP
fragments it dropped 46-98 % of them in three runs here, where reliable lost none but took
~13-14 ms (p50).  An incompatible publisher is reported in the node's log with the parameter
to set.

Other profiles:

- ``COMMAND_QOS``: reliable, keep last 10, volatile (twists, gripper, estop
  publishers, anything that commands motion).
- ``LATCHED_QOS``: reliable, transient local, keep last 1 ("latest state":
  next task, newest checkpoint, statuses); a late subscriber gets the last value.
  A transient-local subscription does not match a volatile publisher: subscribe
  with ``COMMAND_QOS`` to topics anyone may publish (estop from the command line).
- ``SENSOR_QOS``: joint states and poses, reliable keep last 10 (small
  messages fit one datagram, so reliable costs little and never drops a sample;
  not benchmarked here).
- ``STATUS_QOS``: periodic status such as camera/status, reliable keep last 10.
"""

import copy
from pathlib import Path

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, \
    ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

IMAGE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE)
"""Images and camera info: lossless; p50 3 ms with the large-SHM profile, 13 ms without."""

COMMAND_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE)
"""Motion commands and events: reliable, keep last 10, volatile."""

LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""Latest state: reliable, transient local, keep last 1."""

SENSOR_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE)
"""Joint states and poses: reliable, keep last 10."""

STATUS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE)
"""Periodic status messages: reliable, keep last 10."""


def sensor_subscription_options(node, topic, qos):
    """
    Make a sensor subscription's QoS overridable by parameters, and explain a mismatch.

    Pass the result as keyword arguments to ``create_subscription`` (instead of the QoS
    argument): the node declares the read-only parameters
    ``qos_overrides.<topic>.subscription.{history,depth,reliability}`` (``<topic>``: the full
    name after remapping), and an incompatible publisher (e.g. best effort against this
    reliable subscription) is logged with the parameter that fixes it.  rclpy writes the
    overrides into the profile it is given, so it gets a copy: the shared profiles of this
    module stay as they are for every other subscription of the process.

    :param node: rclpy Node that creates the subscription
    :param topic: topic name as given to ``create_subscription``
    :param qos: the default QoSProfile (e.g. :data:`IMAGE_QOS`)
    :return: dict with ``qos_profile``, ``qos_overriding_options`` and ``event_callbacks``
    """
    def on_incompatible_qos(event):
        name = node.resolve_topic_name(topic)
        try:
            policy = QoSPolicyKind(event.last_policy_kind).name
        except ValueError:
            policy = str(event.last_policy_kind)
        node.get_logger().warning(
            f'a publisher on {name} offers a QoS this subscription cannot match (policy '
            f'{policy}, {event.total_count} so far); no data arrives from it.  For a best-effort '
            f'driver set qos_overrides.{name}.subscription.reliability: best_effort in the '
            "node's parameters (lossless only with the large shared-memory Fast DDS profile)")

    return {'qos_profile': copy.copy(qos),
            'qos_overriding_options': QoSOverridingOptions.with_default_policies(),
            'event_callbacks': SubscriptionEventCallbacks(incompatible_qos=on_incompatible_qos)}


def latched_qos(depth=1):
    """
    Reliable + transient-local QoS keeping the last ``depth`` messages for late subscribers.

    :param depth: number of messages kept (e.g. 10 for recorder/episode)
    :return: QoSProfile
    :raises ValueError: for depth < 1
    """
    if depth < 1:
        raise ValueError(f'depth must be >= 1, got {depth!r}')
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL)


FASTDDS_PROFILES_ENV = 'FASTRTPS_DEFAULT_PROFILES_FILE'
"""Environment variable through which Fast DDS reads an XML profile at participant creation."""

FASTDDS_SHM_SEGMENT_BYTES = 16 * 1024 * 1024
"""Shared-memory segment per participant: room for several 640x480 rgb8 frames in flight."""

FASTDDS_LARGE_SHM_PROFILE_XML = f"""<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>large_shm</transport_id>
      <type>SHM</type>
      <segment_size>{FASTDDS_SHM_SEGMENT_BYTES}</segment_size>
      <maxMessageSize>{FASTDDS_SHM_SEGMENT_BYTES // 4}</maxMessageSize>
    </transport_descriptor>
    <transport_descriptor>
      <transport_id>udp</transport_id>
      <type>UDPv4</type>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="active_finetune_large_shm" is_default_profile="true">
    <rtps>
      <userTransports>
        <transport_id>large_shm</transport_id>
        <transport_id>udp</transport_id>
      </userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""
"""Fast DDS profile: shared memory with a segment that holds whole images, plus UDPv4."""


def write_fastdds_profile(path):
    """
    Write the large-SHM Fast DDS profile and return the environment that selects it.

    Set the returned variables in the environment of every process of the graph
    before ``rclpy.init`` (e.g. for the runner's child processes); a user's own
    ``FASTRTPS_DEFAULT_PROFILES_FILE`` should win over it.

    :param path: where to write the XML file
    :return: dict of environment variables
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FASTDDS_LARGE_SHM_PROFILE_XML)
    return {FASTDDS_PROFILES_ENV: str(path)}
