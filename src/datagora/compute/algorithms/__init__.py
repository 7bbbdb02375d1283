"""Algorithms shipped with datagora (their files are what consumers submit)."""
