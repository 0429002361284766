"""ROS 2 nodes: thin rclpy shells that convert messages, call the core and publish."""
