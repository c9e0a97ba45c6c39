"""Claims of the optimizer papers (``thrifty.optim``)."""
