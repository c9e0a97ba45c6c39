"""Claims of the batch-size papers (``thrifty.batching``)."""
