"""Studies: work made of several runs (the large-batch question, the annealing recipe, sweeps)."""
