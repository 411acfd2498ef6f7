"""Reports of finished runs and experiments: HTML (report), Markdown tables and plots (experiment_report)."""
