"""Behaviour cloning: pretraining and fine-tuning with forgetting control."""
