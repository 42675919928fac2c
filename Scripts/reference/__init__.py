"""Our own PyTorch re-implementation of the HASTE reference, written from ../shared/spec. Oracle for fixtures."""
