"""Stage 2, render: plan cells and their cache keys, execute them (per cell or batched), store them, draw grids."""
