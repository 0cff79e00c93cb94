"""Demonstrations that replay real data sets against a running counter service."""
