"""
Operator dashboard in the browser, ROS-free part: settings, state, image streaming, web app.

The ROS node :mod:`active_finetune.nodes.dashboard_node` subscribes to the loop's topics and
feeds this package; nothing here imports rclpy:

- :mod:`active_finetune.dashboard.config`: :class:`~active_finetune.dashboard.config.
  DashboardConfig`, the node's parameters (host, port, token, camera rate, ...).
- :mod:`active_finetune.dashboard.state`: :class:`~active_finetune.dashboard.state.
  DashboardState`, the newest payload of every loop topic (decoded through
  :mod:`active_finetune.payloads`), histories (loss, per-task success per version), and the
  truthful warnings (missing nodes, stale camera, recorder error, disk low).
- :mod:`active_finetune.dashboard.frames`: :class:`~active_finetune.dashboard.frames.FrameHub`,
  the newest camera frame, encoded as JPEG on its own thread (policy-input and full streams).
- :mod:`active_finetune.dashboard.app`: the FastAPI application (page, state, websocket) and
  the uvicorn server thread.
- ``static/``: the page (HTML, CSS, plain JavaScript; no asset from the internet).
"""
