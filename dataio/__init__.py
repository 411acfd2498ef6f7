"""Reading corpora and the run directory: the Parquet/JSON contract between stages."""
