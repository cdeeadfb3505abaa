"""Stage 3, measure: distances between stored cells, derived step counts, power-law fits, findings and plots."""
