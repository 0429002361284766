"""Active multi-task fine-tuning (AMF) of camera-based robot policies, with ROS 2 nodes."""

__version__ = '0.1.0'
