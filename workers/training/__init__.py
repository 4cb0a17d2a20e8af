"""Training on Ray Train: the driver and loop, a recipe per task, checkpoints, DP-SGD, and the
small architectures trained from scratch (the demo models themselves are built in ops/)."""
