"""State shared between replicas (``--state redis://...``, the ``[redis]`` extra). Nothing here is used otherwise."""
