"""The one evaluation runner (jobs per codec x sequence x rate point), results tables and plots."""
