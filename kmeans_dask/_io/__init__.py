"""Inputs and outputs: tables (CSV, Parquet, DataFrames) and fitted pipeline files."""
