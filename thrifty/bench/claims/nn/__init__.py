"""Claims of the layer and block papers (``thrifty.nn``)."""
