"""One module per protocol on the wire (tasks and results, control requests, events), both ends."""
