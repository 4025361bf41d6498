"""twotower: BERT two-tower retrieval for e-commerce. The command line lives in :mod:`twotower.cli`."""
