"""Claims of the distributed-training papers (``thrifty.distributed``)."""
