"""Active multi-task fine-tuning (AMF) of camera-based robot policies, with ROS 2 nodes around it."""

__version__ = '0.1.0'
