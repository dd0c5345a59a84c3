"""Backends run the four graphs of a model behind one small interface (``base.Backend``)."""
