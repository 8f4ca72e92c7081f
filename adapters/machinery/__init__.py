"""What every adapter shares: the run options (config), the record schema (records), installing
replacements and running a script (install), and the per-run probe (probe)."""
