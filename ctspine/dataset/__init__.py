"""Reading a CTSpine1K download: its layout, split, Path.csv and the curated anomaly lists.
Pure Python (no Django), so ingestion workers and tests can use it alone."""
