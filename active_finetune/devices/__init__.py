"""Hardware behind small classes (connect, read, disconnect; context managers), with fakes."""
