"""Claims of the learning-rate schedule papers (``thrifty.schedules``)."""
