"""What the bitstream leaks: label-recovery probes at every point of a split model, and side
channels of the packet itself (CapRecover's question, asked of entropy-coded split models)."""
