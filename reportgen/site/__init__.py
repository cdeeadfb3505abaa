"""Stage 4, the site: gather the study, store and measurements into view data, render templates, write atomically."""
