"""Stage 1, the study: the guide's prompt syntax, reading and validating a study folder, and new topic pages."""
